"""The command-line conventions every refimpl and weights-tools command keeps: exit codes (0, 1, 2, 3, 130) and no
traceback unless --debug, --version, --threads checked when parsed, transcribe of many files (-o/-f, --json, a
progress bar, -q) or of a NeMo manifest (WER/CER per look-ahead), and the opt-in --resample / --channel."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata

import numpy as np
import pytest
import soundfile as sf
import soxr
from fixture_data import AUDIO, FIXTURES, stream_golden

import refimpl
import weights_tools.cli as wt_cli
from refimpl import api, cli
from refimpl.cli_args import max_threads
from refimpl.model.audio import audio_blocks, load_audio
from refimpl.runtime import live
from refimpl.runtime.features import features

M13 = FIXTURES / "hybrid" / "att-70-13"
NEMO = FIXTURES / "hybrid" / "model.nemo"
HELLO, FOX = AUDIO / "hello.wav", AUDIO / "fox.wav"
PEERS = FIXTURES / "peers" / "hybrid"


def _error_line(capsys, argv, rc=2, main=cli.main):
    """The command exits ``rc`` with one line on stderr and no traceback; -> that line."""
    assert main(argv) == rc
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    (line,) = err.splitlines()
    return line


def _usage_error(capsys, argv, main=cli.main):
    """argparse refuses ``argv`` (exit 2, its usage line); -> its error line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


# --- exit codes, internal errors, Ctrl-C ------------------------------------------------------------------------
def _boom(exc):
    def run(*args, **kwargs):
        raise exc

    return run


def test_an_unexpected_exception_is_one_line_and_exit_3(capsys, monkeypatch):
    monkeypatch.setattr(cli.api, "transcribe", _boom(KeyError("chunk")))
    line = _error_line(capsys, ["transcribe", str(HELLO), "--model", str(M13)], rc=3)
    assert line == ("refimpl transcribe: internal error: KeyError: 'chunk' (rerun with --debug for the traceback)")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(capsys, monkeypatch, where):
    monkeypatch.setattr(cli.api, "transcribe", _boom(RuntimeError("multi\nline")))
    argv = ["transcribe", str(HELLO), "--model", str(M13)]
    assert cli.main(["--debug", *argv] if where == "before" else [*argv, "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "raise exc" in err
    assert err.splitlines()[-1] == "refimpl transcribe: internal error: RuntimeError: multi line"


def test_bad_input_with_debug_keeps_its_exit_code(capsys):
    assert cli.main(["--debug", "transcribe", str(AUDIO / "nope.wav"), "--model", str(M13)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("refimpl transcribe: error: audio file")


def test_ctrl_c_is_exit_130_without_a_traceback(capsys, monkeypatch):
    monkeypatch.setattr(cli, "crosscheck", _boom(KeyboardInterrupt()))
    line = _error_line(capsys, ["crosscheck", str(HELLO), "--model", str(M13), "--quiet"], rc=130)
    assert line == "refimpl crosscheck: interrupted"
    monkeypatch.setattr(cli.golden, "verify", _boom(KeyboardInterrupt()))
    assert _error_line(capsys, ["golden", "verify", "g.npz", "--model", str(M13)], rc=130) == (
        "refimpl golden verify: interrupted"
    )


def test_weights_tools_exit_codes(capsys, monkeypatch):
    monkeypatch.setattr(wt_cli, "_inspect", _boom(TypeError("bad")))
    argv = ["inspect", "--model", str(M13)]
    line = _error_line(capsys, argv, rc=3, main=wt_cli.main)
    assert line == "weights-tools: internal error: TypeError: bad (rerun with --debug for the traceback)"
    assert wt_cli.main([*argv, "--debug"]) == 3 and "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(wt_cli, "_inspect", _boom(KeyboardInterrupt()))
    assert _error_line(capsys, argv, rc=130, main=wt_cli.main) == "weights-tools: interrupted"


def test_exit_codes_are_in_the_help(capsys):
    for main in (cli.main, wt_cli.main):
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out and "130  interrupted" in out and "3    internal error" in out
    assert "1    a check failed" in cli.build_parser().format_help()


# --- --version ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("main,prog", [(cli.main, "refimpl"), (wt_cli.main, "weights-tools")])
def test_version(capsys, main, prog):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {metadata.version('refimpl')}"


def test_version_without_installed_metadata(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli.version() == refimpl.__version__


# --- --threads ---------------------------------------------------------------------------------------------------
THREADED = {
    "transcribe": ["transcribe", str(HELLO), "--model", str(M13)],
    "crosscheck": ["crosscheck", str(HELLO), "--model", str(M13)],
    "conform": ["conform", str(HELLO), "--model", str(M13), "--runtime", "nemo"],
    "golden record": ["golden", "record", "--model", str(M13), "--audio", str(HELLO), "-o", "g.npz"],
    "golden verify": ["golden", "verify", "g.npz", "--model", str(M13)],
    "bench": ["bench", "--model", str(M13), "--audio", str(HELLO)],
}


@pytest.mark.parametrize("command", THREADED)
def test_threads_are_checked_when_parsed(capsys, command):
    argv = THREADED[command]
    assert "must be > 0, got 0" in _usage_error(capsys, [*argv, "--threads", "0"])
    too_many = max_threads() + 1
    assert f"at most {max_threads()} (the CPUs this process may use), got {too_many}" in _usage_error(
        capsys, [*argv, "--threads", str(too_many)]
    )
    assert "expected a number, got 'two'" in _usage_error(capsys, [*argv, "--threads", "two"])


# --- transcribe: several files, -o/-f, --json, progress ------------------------------------------------------
def _texts():
    return {c: str(stream_golden("hybrid", (70, 13), c)["rnnt/text"]) for c in ("hello", "fox")}


def test_transcribe_several_files_opens_the_model_once(capsys, monkeypatch):
    opened = []
    real = live.open_engine
    monkeypatch.setattr(live, "open_engine", lambda *a, **k: opened.append(a) or real(*a, **k))
    assert cli.main(["transcribe", str(HELLO), str(FOX), "--model", str(NEMO), "--backend", "numpy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{HELLO}: {_texts()['hello']}", f"{FOX}: {_texts()['fox']}"]
    assert len(opened) == 1


def test_transcribe_json_is_one_object_per_file(capsys):
    assert cli.main(["transcribe", str(HELLO), str(FOX), "--model", str(M13), "--json"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["audio_filepath"] for d in docs] == [str(HELLO), str(FOX)]
    assert [d["text"] for d in docs] == list(_texts().values())
    for d in docs:
        assert {"text", "tokens", "timestamps", "att_context_size", "decoder", "dropped_tail_frames", "notes"} <= set(d)
        assert len(d["timestamps"]) == len(d["tokens"]) and d["att_context_size"] == [70, 13]


def test_output_dir_writes_every_format_atomically(tmp_path, capsys):
    assert cli.main(["transcribe", str(HELLO), str(FOX), "--model", str(M13), "-o", str(tmp_path), "-f", "all"]) == 0
    captured = capsys.readouterr()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{c}.{f}" for c in ("hello", "fox") for f in ("txt", "json", "srt", "vtt"))
    assert [line.split()[-1] for line in captured.err.splitlines() if line.startswith("wrote ")] == [
        str(tmp_path / f"{c}.{f}") for c in ("hello", "fox") for f in ("txt", "json", "srt", "vtt")
    ]
    assert (tmp_path / "fox.txt").read_text() == _texts()["fox"] + "\n"
    assert json.loads((tmp_path / "fox.json").read_text())["text"] == _texts()["fox"]
    srt = (tmp_path / "fox.srt").read_text()
    vtt = (tmp_path / "fox.vtt").read_text()
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt)
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"^00:00:\d\d\.\d{3} --> 00:00:\d\d\.\d{3}$", vtt, re.M)
    assert " ".join(re.findall(r"^[^\d\n].*$", srt, re.M)) == _texts()["fox"]  # every word in a cue, in order


def test_output_dir_default_format_is_txt(tmp_path, capsys):
    assert cli.main(["transcribe", str(HELLO), "--model", str(M13), "-o", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["hello.txt"]
    assert capsys.readouterr().out.strip() == _texts()["hello"]


def test_output_dir_problems_are_refused_before_any_work(tmp_path, capsys):
    base = ["transcribe", str(HELLO), "--model", str(M13)]
    line = _error_line(capsys, [*base, "-o", str(tmp_path / "missing")])
    assert "does not exist; create it first (mkdir -p" in line
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "hello.wav").write_bytes(HELLO.read_bytes())
    twins = ["transcribe", str(HELLO), str(tmp_path / "a" / "hello.wav"), "--model", str(M13)]
    line = _error_line(capsys, [*twins, "-o", str(tmp_path)])
    assert "would both be written as hello.<ext>" in line
    (tmp_path / "file").write_text("")
    assert "is a file; pass a folder" in _error_line(capsys, [*base, "-o", str(tmp_path / "file")])
    assert "give -o DIR too" in _error_line(capsys, [*base, "-f", "srt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "file"]


def test_a_bad_file_among_many_is_refused_before_any_is_transcribed(tmp_path, capsys):
    cd = tmp_path / "cd.wav"
    sf.write(cd, np.zeros(4410, np.float32), 44100)
    assert cli.main(["transcribe", str(HELLO), str(cd), "--model", str(M13)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "found 44100 Hz" in captured.err
    line = _error_line(capsys, ["transcribe", str(HELLO), str(tmp_path / "gone.wav"), "--model", str(M13)])
    assert "gone.wav' does not exist" in line


def test_transcribe_needs_files_or_a_manifest_and_one_lookahead_for_files(capsys, tmp_path):
    assert "found neither" in _error_line(capsys, ["transcribe", "--model", str(M13)])
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"audio_filepath": str(HELLO), "text": "x"}) + "\n")
    assert "not both" in _error_line(capsys, ["transcribe", str(HELLO), "--manifest", str(m), "--model", str(M13)])
    argv = ["transcribe", str(HELLO), "--model", str(NEMO)]
    assert "scored over a --manifest" in _error_line(capsys, [*argv, "--att-context-size", "all"])
    assert "scored over a --manifest" in _error_line(
        capsys, [*argv, "--att-context-size", "70,13", "--att-context-size", "70,0"]
    )
    assert "'LEFT,RIGHT' (e.g. 70,13), got '70'" in _usage_error(capsys, [*argv, "--att-context-size", "70"])


def test_progress_bar_over_files_on_a_terminal_and_quiet(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["transcribe", str(HELLO), str(FOX), "--model", str(M13)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "1/2" in captured.err and "file/s" in captured.err  # the bar (cleared at the end: leave=False)
    assert captured.out.splitlines() == [f"{HELLO}: {_texts()['hello']}", f"{FOX}: {_texts()['fox']}"]
    assert cli.main([*argv, "-q"]) == 0
    assert capsys.readouterr().err == ""


# --- transcribe --manifest ---------------------------------------------------------------------------------------
def _manifest(tmp_path, lines):
    path = tmp_path / "sets" / "manifest.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def test_manifest_scores_wer_and_cer_per_lookahead(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "hello.wav").write_bytes(HELLO.read_bytes())
    hello = _texts()["hello"].split()
    wrong = ["x", *hello[1:-1], hello[-1], "extra", "more"][:]  # 1 substitution, 0 deletions, 2 insertions
    del wrong[2]  # and 1 deletion
    path = _manifest(
        tmp_path,
        [
            {"audio_filepath": "../audio/hello.wav", "duration": 1.26, "text": " ".join(hello)},  # relative
            "",  # blank lines are skipped, as NeMo does
            {"audio_filepath": str(HELLO), "duration": 1.26, "text": " ".join(wrong)},
        ],
    )
    argv = ["transcribe", "--manifest", str(path), "--model", str(NEMO), "--backend", "numpy"]
    assert cli.main([*argv, "--json", "--att-context-size", "70,13", "--att-context-size", "70,0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["manifest"] == str(path) and doc["entries"] == 2
    r13, r0 = doc["results"]
    assert r13["att_context_size"] == [70, 13] and r0["att_context_size"] == [70, 0] and r13["decoder"] == "rnnt"
    assert set(r13) == {"att_context_size", "decoder", "wer", "cer", "words", "errors", "per_entry"}
    first, second = r13["per_entry"]
    assert first["wer"] == 0 and first["cer"] == 0 and first["pred_text"] == " ".join(hello)
    assert first["line"] == 1 and second["line"] == 3 and first["audio_filepath"].endswith("hello.wav")
    # the hypothesis is the reference here and the reference the hypothesis: deletions and insertions swap
    assert second["errors"] == {"substitutions": 1, "deletions": 2, "insertions": 1}
    assert second["words"] == len(wrong) and second["wer"] == pytest.approx(4 / len(wrong))
    assert r13["words"] == len(hello) + len(wrong) and r13["wer"] == pytest.approx(4 / (len(hello) + len(wrong)))
    assert r0["per_entry"][0]["pred_text"] == str(stream_golden("hybrid", (70, 0), "hello")["rnnt/text"])
    assert cli.main([*argv, "--att-context-size", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 entries" and len(lines) == 5
    assert lines[1].startswith("att_context_size [70, 13] rnnt: WER ") and "CER " in lines[1]
    assert "(4 errors in " in lines[1] and "1 substitutions, 2 deletions, 1 insertions" in lines[1]


def test_manifest_all_on_an_export_is_its_one_lookahead(tmp_path, capsys):
    path = _manifest(tmp_path, [{"audio_filepath": str(HELLO), "text": _texts()["hello"]}])
    argv = ["transcribe", "--manifest", str(path), "--model", str(M13), "--att-context-size", "all", "--json"]
    assert cli.main(argv) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["att_context_size"] == [70, 13] and r["wer"] == 0
    m = api.open_model(NEMO, backend="numpy")
    assert api.lookaheads(m, "all") == [(70, 13), (70, 6), (70, 1), (70, 0)]
    assert api.lookaheads(m, ["70,0", "70,0"]) == [(70, 0)] and api.lookaheads(m) == [(70, 13)]


@pytest.mark.parametrize(
    "line,needle",
    [
        ('{"audio_filepath": "hello.wav", "text": "a"', "line 2 is not JSON (Expecting ',' delimiter"),
        ('["hello.wav"]', "line 2 is a JSON list, expected an object"),
        ('{"audio_filepath": "gone.wav", "text": "a"}', "line 2: audio_filepath 'gone.wav' -> "),
        ('{"audio_filepath": "HELLO", "duration": 1.0}', "line 2 has no 'text' (the reference transcript"),
        ('{"text": "a"}', "line 2 has no 'audio_filepath'"),
        ('{"audio_filepath": "HELLO", "text": 3}', "line 2: 'text' is a JSON int, expected a string"),
        ('{"audio_filepath": "CD", "text": "a"}', "line 2: 'CD': found 44100 Hz"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "missing-audio",
        "no-text",
        "no-audio-filepath",
        "text-not-a-string",
        "wrong-rate",
    ],
)
def test_a_bad_manifest_line_is_exit_2_naming_the_line(tmp_path, capsys, line, needle):
    cd = tmp_path / "cd.wav"
    sf.write(cd, np.zeros(4410, np.float32), 44100)
    line = line.replace("HELLO", str(HELLO)).replace("CD", str(cd))
    needle = needle.replace("CD", str(cd))
    path = _manifest(tmp_path, [{"audio_filepath": str(HELLO), "text": "a"}, line])
    err = _error_line(capsys, ["transcribe", "--manifest", str(path), "--model", str(M13)])
    assert err.startswith(f"refimpl transcribe: error: manifest '{path}' line 2") and needle in err, err


def test_manifest_file_problems(tmp_path, capsys):
    argv = ["transcribe", "--model", str(M13), "--manifest"]
    assert "does not exist" in _error_line(capsys, [*argv, str(tmp_path / "none.json")])
    assert "holds no entries" in _error_line(capsys, [*argv, str(_manifest(tmp_path, [""]))])
    path = _manifest(tmp_path, [{"audio_filepath": str(HELLO), "text": "a"}])
    assert "-o/--output-dir and -f write transcripts of AUDIO files" in _error_line(
        capsys, [*argv, str(path), "-o", str(tmp_path)]
    )
    assert "is not one of the model's look-aheads" in _error_line(
        capsys, [*argv, str(path), "--model", str(NEMO), "--att-context-size", "70,2"]
    )


# --- --resample and --channel --------------------------------------------------------------------------------
def _tones(rate: int, seconds: float = 2.0) -> np.ndarray:
    """The same audio at any rate: 48 tones from 100 Hz to 7 kHz (below every rate's Nyquist) under a smooth
    envelope, sampled at ``rate``."""
    t = np.arange(int(rate * seconds)) / rate
    freqs = np.linspace(100, 7000, 48)
    phases = np.random.default_rng(1).uniform(0, 2 * np.pi, freqs.size)
    envelope = np.sin(np.pi * t / seconds) ** 2 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0) * envelope / 48).astype(np.float32)


@pytest.fixture
def cd_stereo(tmp_path):
    """A 44.1 kHz stereo file: the tones on channel 0, noise on channel 1; and the tones made at 16 kHz."""
    x = _tones(44100)
    noise = np.random.default_rng(2).uniform(-0.5, 0.5, x.size).astype(np.float32)
    sf.write(tmp_path / "cd.wav", np.stack([x, noise], 1), 44100, subtype="FLOAT")
    sf.write(tmp_path / "sixteen.wav", _tones(16000), 16000, subtype="FLOAT")
    return tmp_path / "cd.wav", tmp_path / "sixteen.wav"


def test_a_44k_stereo_file_is_refused_by_default_with_the_fixes(cd_stereo, capsys):
    cd, _ = cd_stereo
    line = _error_line(capsys, ["transcribe", str(cd), "--model", str(M13)])
    assert "found 44100 Hz, the model expects 16000 Hz" in line and "sox" in line and "--resample" in line
    line = _error_line(capsys, ["transcribe", str(cd), "--model", str(M13), "--resample"])
    assert "found 2 channels" in line and "--channel 0" in line and "--channel mean" in line
    line = _error_line(capsys, ["transcribe", str(cd), "--model", str(M13), "--resample", "--channel", "2"])
    assert "channel 2 was asked, the file has 2 (channels 0..1)" in line
    argv = ["transcribe", str(cd), "--model", str(M13), "--channel"]
    assert "channels are numbered from 0, got -1" in _usage_error(capsys, [*argv, "-1"])
    assert "expected a channel number (0-based) or mean, got 'x'" in _usage_error(capsys, [*argv, "x"])


def test_resample_and_channel_transcribe_with_one_notice_each(cd_stereo, capsys):
    cd, sixteen = cd_stereo
    assert cli.main(["transcribe", str(cd), "--model", str(M13), "--resample", "--channel", "0", "--json"]) == 0
    captured = capsys.readouterr()
    d = json.loads(captured.out)
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: '{cd}': took channel 0 of its 2 (channels 0..1)",
        f"note: '{cd}': resampled 44100 Hz -> 16000 Hz (soxr VHQ)",
    ]
    assert d["notes"] == [n[len("note: ") :] for n in notes]
    assert cli.main(["transcribe", str(sixteen), "--model", str(M13), "--json"]) == 0
    assert d["tokens"] == json.loads(capsys.readouterr().out)["tokens"] and d["tokens"]
    assert cli.main(["transcribe", str(cd), "--model", str(M13), "--resample", "--channel", "mean"]) == 0
    assert f"note: '{cd}': averaged its 2 channels into one (channel mean)" in capsys.readouterr().err


def test_resampled_features_match_the_same_audio_made_at_16k(cd_stereo):
    """soxr VHQ 44.1 -> 16 kHz against the tones sampled at 16 kHz: measured 3.5e-5 max abs in the samples and
    1.2e-3 in log-mel (in the near-empty bands above 7 kHz); each bounded here with ~3x margin."""
    cd, sixteen = cd_stereo
    notices: list = []
    y = load_audio(cd, resample=True, channel=0, notices=notices)
    x = load_audio(sixteen)
    assert len(notices) == 2 and y.dtype == np.float32 and len(y) == len(x)
    assert np.abs(y - x).max() < 1e-4
    config = api.open_model(M13).config
    mel_y, _ = features(y, config)
    mel_x, _ = features(x, config)
    assert np.abs(mel_y - mel_x).max() < 4e-3


def test_resampling_is_block_by_block_and_equals_the_whole_file_resampled(cd_stereo):
    cd, _ = cd_stereo
    blocks = list(audio_blocks(cd, block=1000, resample=True, channel=1, notices=[]))
    assert len(blocks) > 10  # read (and resampled) 1000 samples of the file at a time (soxr hands out bigger runs)
    whole = soxr.resample(sf.read(cd, dtype="float32")[0][:, 1], 44100, 16000, quality="VHQ")
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_crosscheck_and_conform_take_the_audio_options(cd_stereo, tmp_path, capsys):
    cd, _ = cd_stereo
    opts = ["--resample", "--channel", "0"]
    assert "found 44100 Hz" in _error_line(capsys, ["crosscheck", str(cd), "--model", str(M13), "--quiet"])
    assert cli.main(["crosscheck", str(cd), "--model", str(M13), "--quiet", *opts]) == 0
    captured = capsys.readouterr()
    assert "result: OK" in captured.out and "resampled 44100 Hz -> 16000 Hz (soxr VHQ)" in captured.err
    argv = ["conform", str(cd), "--model", str(M13), "--runtime", "nemo"]
    assert "found 44100 Hz" in _error_line(capsys, argv)
    assert cli.main([*argv, *opts, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is True
    assert "note: " in captured.err and "took channel 0 of its 2" in captured.err


def test_arrays_take_no_audio_options():
    m = api.open_model(M13)
    with pytest.raises(ValueError, match="resample and channel apply to audio files"):
        m.transcribe(np.zeros(1600, np.float32), resample=True)


# --- --plot -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["crosscheck", str(HELLO), "--model", str(M13), "--layers", "-q"],
        ["conform", str(HELLO), "--model", str(PEERS / "sherpa-att-70-13"), "--runtime", "sherpa-onnx"],
    ],
    ids=["crosscheck", "conform"],
)
def test_plot_writes_a_png(argv, tmp_path, capsys):
    out = tmp_path / "pic.png"
    cli.main([*argv, "--plot", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in capsys.readouterr().err
    line = _error_line(capsys, [*argv, "--plot", str(tmp_path)])  # a folder: refused before any work
    assert "--plot" in line and "is a folder" in line
