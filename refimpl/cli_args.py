"""Option values the command lines check when they parse them, so that a bad one is argparse's usage line and
exit 2 before any model is opened: ``type=`` functions for ``argparse.add_argument``."""

from __future__ import annotations

import argparse
import os

from .model.audio import MEAN
from .runtime.lookahead import parse_att_context_size

ALL = "all"  # --att-context-size all: every look-ahead the model serves


def max_threads() -> int:
    """The CPUs this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def positive(kind):
    """A ``type=`` for numbers > 0 of ``kind`` (int or float)."""

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def threads(text):
    """``--threads``: 1 .. the CPUs this process may use."""
    n = positive(int)(text)
    if n > max_threads():
        raise argparse.ArgumentTypeError(f"at most {max_threads()} (the CPUs this process may use), got {n}")
    return n


def att_context_size(text):
    """``--att-context-size L,R`` -> (L, R), or ``all``."""
    if text.strip().lower() == ALL:
        return ALL
    try:
        return parse_att_context_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}, or {ALL}") from None


def channel(text):
    """``--channel N`` (0-based) -> N, or ``mean``."""
    if text.strip().lower() == MEAN:
        return MEAN
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a channel number (0-based) or {MEAN}, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"channels are numbered from 0, got {n}")
    return n
