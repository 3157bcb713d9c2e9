"""Subtitles from a transcript's token timestamps: SentencePiece pieces grouped into words, words into cues, cues
written as SRT or WebVTT (``refimpl transcribe -o DIR -f srt|vtt``).

- Words: a piece that starts with '▁' (SentencePiece's word boundary) starts a word, and so does the first piece.
  A word's start is its first token's time; its end is the next word's start, or, for the last word, its last
  token's time plus one encoder frame (``frame_seconds``: the frame the token was emitted on lasts that long).
- Cues: at most ``MAX_WORDS`` words spanning at most about ``MAX_SECONDS`` (a word whose last token frame would
  end past it starts the next cue); a pause of ``PAUSE_SECONDS`` or more before a word (from the end of the
  previous word's last token frame to the word's first token) starts a new cue too. A cue ends at its last
  word's end, except before such a pause, where it ends with the last word's last token frame: a subtitle is
  not left on screen through the silence.
- Formats: SRT (numbered cues, ``HH:MM:SS,mmm``) and WebVTT (a ``WEBVTT`` header, ``HH:MM:SS.mmm``).
"""

from __future__ import annotations

from dataclasses import dataclass

WORD_START = "\u2581"  # '▁': SentencePiece's mark of a piece that begins a word
MAX_WORDS = 7
MAX_SECONDS = 3.0
PAUSE_SECONDS = 0.5


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # its first token's time
    end: float  # the next word's start; for the last word, spoken_end
    spoken_end: float  # its last token's time + one encoder frame


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def words(pieces, timestamps, frame_seconds: float) -> list[Word]:
    """Words of the token ``pieces`` (SentencePiece pieces, one per token) emitted at ``timestamps`` (seconds)."""
    if len(pieces) != len(timestamps):
        raise ValueError(f"{len(pieces)} pieces but {len(timestamps)} timestamps: one timestamp per token")
    groups: list = []  # [text, first token time, last token time]
    for piece, t in zip(pieces, timestamps):
        if not groups or piece.startswith(WORD_START):
            groups.append([piece.replace(WORD_START, ""), float(t), float(t)])
        else:
            groups[-1][0] += piece.replace(WORD_START, "")
            groups[-1][2] = float(t)
    groups = [g for g in groups if g[0]]  # a lone '▁' piece with nothing after it spells no word
    out = []
    for i, (text, first, last) in enumerate(groups):
        spoken_end = last + frame_seconds
        end = groups[i + 1][1] if i + 1 < len(groups) else spoken_end
        out.append(Word(text, first, end, spoken_end))
    return out


def cues(
    words: list[Word],
    *,
    max_words: int = MAX_WORDS,
    max_seconds: float = MAX_SECONDS,
    pause_seconds: float = PAUSE_SECONDS,
) -> list[Cue]:
    """``words`` grouped into cues (see the module docstring)."""
    out: list[Cue] = []
    current: list[Word] = []
    for w in words:
        if current:
            pause = w.start - current[-1].spoken_end >= pause_seconds
            if pause or len(current) >= max_words or w.spoken_end - current[0].start > max_seconds:
                out.append(_cue(current, at_pause=pause))
                current = []
        current.append(w)
    if current:
        out.append(_cue(current, at_pause=False))
    return out


def _cue(ws: list[Word], *, at_pause: bool) -> Cue:
    end = ws[-1].spoken_end if at_pause else ws[-1].end
    return Cue(ws[0].start, max(end, ws[0].start), " ".join(w.text for w in ws))


def timestamp(seconds: float, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT; ``decimal="."``: WebVTT's ``HH:MM:SS.mmm``), rounded to the millisecond."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def srt(cues: list[Cue]) -> str:
    """SubRip: numbered cues from 1, each ``start --> end`` and its text, a blank line between cues."""
    return "\n".join(f"{i}\n{timestamp(c.start)} --> {timestamp(c.end)}\n{c.text}\n" for i, c in enumerate(cues, 1))


def vtt(cues: list[Cue]) -> str:
    """WebVTT: the ``WEBVTT`` header, a blank line, then each cue's ``start --> end`` and its text."""
    body = "\n".join(f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{c.text}\n" for c in cues)
    return "WEBVTT\n\n" + body if cues else "WEBVTT\n"
