"""refimpl.tools.subtitles: SentencePiece pieces -> words -> cues -> SRT / WebVTT, on hand-made token timings."""

import re

import pytest

from refimpl.tools.subtitles import Cue, Word, cues, srt, timestamp, vtt, words

FRAME = 0.08  # seconds per encoder frame of the fixtures' models (8 x 10 ms)


def test_pieces_starting_with_the_word_mark_start_words():
    ws = words(["▁the", "▁qu", "ick", "▁fox"], [0.0, 0.4, 0.48, 0.96], FRAME)
    assert [w.text for w in ws] == ["the", "quick", "fox"]
    assert [(w.start, w.end) for w in ws] == [(0.0, 0.4), (0.4, 0.96), (0.96, pytest.approx(1.04))]
    assert [w.spoken_end for w in ws] == [pytest.approx(0.08), pytest.approx(0.56), pytest.approx(1.04)]


def test_a_first_piece_without_the_mark_and_a_lone_mark():
    """The first piece starts a word whatever it is; a lone '▁' piece starts one that the next pieces spell."""
    ws = words(["he", "llo", "▁", "4", "2", "▁"], [0.0, 0.08, 0.5, 0.5, 0.58, 0.9], FRAME)
    assert [w.text for w in ws] == ["hello", "42"]
    assert ws[0].end == 0.5 and ws[1].end == pytest.approx(0.58 + FRAME)  # the trailing '▁' spells nothing


def test_no_tokens_no_words_and_mismatched_lengths():
    assert words([], [], FRAME) == [] and cues([]) == []
    with pytest.raises(ValueError, match="one timestamp per token"):
        words(["▁a"], [], FRAME)


def _ws(starts, gap=FRAME):
    """One-token words ``w0, w1, ...`` at ``starts`` (each word's end is the next one's start)."""
    return words([f"▁w{i}" for i in range(len(starts))], starts, gap)


def test_cues_hold_at_most_seven_words():
    c = cues(_ws([0.1 * i for i in range(16)]))
    assert [len(x.text.split()) for x in c] == [7, 7, 2]
    assert c[0].text == "w0 w1 w2 w3 w4 w5 w6" and c[1].text.startswith("w7 ")
    assert c[0].end == pytest.approx(0.7) and c[1].start == pytest.approx(0.7)  # contiguous: no pause between


def test_cues_span_about_three_seconds():
    c = cues(_ws([0.5 * i for i in range(9)], gap=0.4))  # 0.1 s between words: no pause
    assert [x.text for x in c] == ["w0 w1 w2 w3 w4 w5", "w6 w7 w8"]  # w5 ends at 2.9 s, w6 would at 3.4 s
    assert c[0].start == 0.0 and c[0].end == pytest.approx(3.0) and c[1].start == pytest.approx(3.0)


def test_a_pause_starts_a_new_cue_and_ends_the_cue_before_it():
    c = cues(_ws([0.0, 0.2, 0.4, 1.2, 1.4]))  # 1.2 - (0.4 + 0.08) = 0.72 s of silence before w3
    assert [x.text for x in c] == ["w0 w1 w2", "w3 w4"]
    assert c[0].end == pytest.approx(0.48)  # the last token's frame, not the next word's start
    assert c[1] == Cue(1.2, pytest.approx(1.48), "w3 w4")
    short = cues(_ws([0.0, 0.2, 0.4, 0.85]))  # 0.37 s: not a pause
    assert [x.text for x in short] == ["w0 w1 w2 w3"]


def test_timestamps_round_to_the_millisecond_in_both_notations():
    assert timestamp(0) == "00:00:00,000"
    assert timestamp(1.2344) == "00:00:01,234" and timestamp(1.2346) == "00:00:01,235"
    assert timestamp(3723.0006) == "01:02:03,001"
    assert timestamp(59.9996, ".") == "00:01:00.000"
    assert timestamp(-0.01) == "00:00:00,000"


def test_srt_and_vtt_documents():
    c = [Cue(0.0, 1.5, "hello world"), Cue(2.0, 61.25, "again")]
    assert srt(c) == "1\n00:00:00,000 --> 00:00:01,500\nhello world\n\n2\n00:00:02,000 --> 00:01:01,250\nagain\n"
    assert vtt(c) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nhello world\n\n00:00:02.000 --> 00:01:01.250\nagain\n"
    assert srt([]) == "" and vtt([]) == "WEBVTT\n"


def test_a_cue_never_ends_before_it_starts():
    """Several tokens on one frame (RNNT emits them) give words of zero length; their cue still runs forward."""
    ws = [Word("a", 1.0, 1.0, 1.08), Word("b", 1.0, 1.08, 1.08)]
    (c,) = cues(ws)
    assert c.start == 1.0 and c.end == 1.08 and c.text == "a b"
    line = srt([c]).splitlines()[1]
    assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", line)
