"""refimpl.model.audio: reading the fixture clips, and refusing what the model cannot take with a useful message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from refimpl.model.audio import AudioError, as_audio, as_audio_batch, load_audio

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("clip", ["hello", "fox", "north_wind"])
def test_fixture_clips_load_as_float32_mono(clip):
    path = FIXTURES / "audio" / f"{clip}.wav"
    x = load_audio(path)
    meta = json.loads((FIXTURES / "hybrid" / "goldens" / "goldens.json").read_text())
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert len(x) == meta["clips"][clip]["samples"]
    pcm, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(x, pcm.astype(np.float32) / 32768)  # exact: PCM16 / 2^15
    assert x.min() >= -1.0 and x.max() < 1.0


def test_other_sample_rate_when_asked(tmp_path):
    path = tmp_path / "eight_k.wav"
    sf.write(path, np.full(800, 0.25), 8000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path, sample_rate=8000), np.full(800, 0.25, np.float32))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match=r"nope\.wav.*does not exist"):
        load_audio(path)


def test_wrong_sample_rate_is_refused_not_resampled(tmp_path):
    path = tmp_path / "cd.wav"
    sf.write(path, np.zeros(4410), 44100, subtype="PCM_16")
    with pytest.raises(AudioError) as e:
        load_audio(path)
    msg = str(e.value)
    assert "cd.wav" in msg and "found 44100 Hz" in msg and "expects 16000 Hz" in msg
    assert "sox" in msg and "-r 16000" in msg


def test_stereo_is_refused_not_averaged(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.zeros((1600, 2)), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as e:
        load_audio(path)
    msg = str(e.value)
    assert "stereo.wav" in msg and "found 2 channels" in msg and "mono" in msg and "downmix" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        load_audio(path)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not a RIFF header\n")
    with pytest.raises(AudioError, match=r"notes\.wav.*could not be read as audio.*16000 Hz mono"):
        load_audio(path)
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_as_audio_accepts_float_and_refuses_the_rest():
    x = as_audio([0.0, 0.5, -0.5])
    assert x.dtype == np.float32 and x.tolist() == [0.0, 0.5, -0.5]
    f32 = np.zeros(10, np.float32)
    assert as_audio(f32) is f32  # no copy when nothing changes
    with pytest.raises(AudioError, match=r"dtype int16, expected floating point.*astype\(np.float32\) / 32768"):
        as_audio(np.zeros(10, np.int16))
    with pytest.raises(AudioError, match=r"shape \(1600, 2\), expected 1-D.*2 channels of 1600 samples"):
        as_audio(np.zeros((1600, 2), np.float32))
    with pytest.raises(AudioError, match=r"shape \(1600, 1\).*x.reshape\(-1\)"):
        as_audio(np.zeros((1600, 1), np.float32))
    with pytest.raises(AudioError, match="empty"):
        as_audio(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="2 non-finite samples"):
        as_audio(np.array([0.0, np.nan, np.inf], np.float32))
    with pytest.raises(AudioError, match="dtype complex64"):
        as_audio(np.zeros(4, np.complex64))


def test_as_audio_batch_lengths():
    x, length = as_audio_batch(np.zeros(100, np.float32))
    assert x.shape == (1, 100) and length.tolist() == [100] and length.dtype == np.int64
    x, length = as_audio_batch(np.zeros((3, 100)), [100, 0, 7], dtype=np.float64)
    assert x.dtype == np.float64 and length.tolist() == [100, 0, 7]
    with pytest.raises(AudioError, match=r"length must be integers .* got dtype float64"):
        as_audio_batch(np.zeros((1, 100), np.float32), [99.0])
    with pytest.raises(AudioError, match=r"length \[-1\] must lie in 0..100"):
        as_audio_batch(np.zeros(100, np.float32), -1)
