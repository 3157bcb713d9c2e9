"""Files the tools write (refimpl's golden files and reports, weights-tools' weight archives): whole or not at all.
It lives in weights_tools, the package everything else builds on, so that both command lines use this one module.

``atomic_write(path, write_fn)`` has ``write_fn`` fill a temporary file in the destination's own folder, flushes
it to disk, then renames it over ``path`` (``os.replace``, atomic on one file system). A reader, or a second
writer racing the first, only ever sees the old file or a complete new one, never a half-written one; an error or
Ctrl-C half-way leaves the old file as it was and no temporary behind. The file written is exactly ``path``:
nothing appends a suffix behind the caller's back (``np.savez`` on a file object adds no ``.npz``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

NAME_MAX = 255  # bytes in one file name on Linux/macOS file systems


class OutputError(ValueError):
    """An output path that cannot be written: a folder, a missing folder, a name too long, no permission."""


def output_path(path, *, what: str = "output", example: str = "out.npz") -> Path:
    """``path`` as it will be written, or an OutputError saying why it cannot be and what to pass instead."""
    p = Path(os.fspath(path))
    if str(p) in ("", "-"):
        raise OutputError(f"{what}: writing to stdout is not supported: pass a file path such as {example}")
    if len(os.fsencode(p.name)) > NAME_MAX:
        shown = p.name if len(p.name) <= 60 else f"{p.name[:40]}...{p.name[-15:]}"
        raise OutputError(
            f"{what} file name {shown!r} is {len(os.fsencode(p.name))} bytes long; file systems allow at most "
            f"{NAME_MAX} bytes per name: choose a shorter name"
        )
    try:
        if p.is_dir():
            raise OutputError(
                f"{what} {str(p)!r} is a folder; pass a file path, e.g. {str(p / example)!r} (the file written is "
                f"exactly the path you give)"
            )
        parent = p.parent
        if not parent.is_dir():
            raise OutputError(
                f"{what} {str(p)!r}: the folder {str(parent)!r} does not exist; create it first (mkdir -p {parent})"
            )
    except OSError as e:  # ENAMETOOLONG on the whole path, ELOOP, EACCES on a parent, ...
        raise OutputError(f"{what} {str(p)!r} cannot be written: {e.strerror or e}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {str(p)!r} cannot be written: the folder {str(parent)!r} is not writable")
    return p


def atomic_write(path, write_fn: Callable[[IO[bytes]], Any], *, what: str = "output") -> Path:
    """Write ``path`` atomically: ``write_fn(f)`` writes into a binary file object; returns the Path written.
    OutputError (a ValueError) when the path cannot be written; whatever ``write_fn`` raises propagates, and in
    every failure the temporary file is removed and an existing ``path`` is left untouched."""
    p = output_path(path, what=what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".refimpl-", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise OutputError(f"{what} {str(p)!r} cannot be written: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode a plain open() would
        os.replace(tmp, p)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"{what} {str(p)!r} could not be written: {e.strerror or e}") from None
        raise
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
