"""Where Numba caches refimpl's compiled kernels, when the usual places cannot be written.

The kernels are compiled with ``cache=True``. Numba then needs one writable folder, tried in this order:
``NUMBA_CACHE_DIR``, the ``__pycache__`` next to ``refimpl/fast/kernels.py``, the user cache (``~/.cache/numba``
or ``$XDG_CACHE_HOME/numba``). A read-only install (a system package, a container image) run by a user without a
writable home has none of them, and importing the kernels fails with Numba's "cannot cache function ...: no
locator available for file ...". ``ensure_numba_cache()``, called before the kernels module is imported, checks
those places the way Numba does and, when none is writable, points ``NUMBA_CACHE_DIR`` at a private folder in the
temporary directory and hands over a one-line notice that says so (appended to ``notices`` when the caller passes
a list, else issued as a ``NumbaCacheWarning``), which it also returns.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path

KERNELS = Path(__file__).with_name("kernels.py")  # the module whose @numba.jit(cache=True) functions are cached


class NumbaCacheWarning(UserWarning):
    """Numba's kernel cache had to move to a private temporary folder (issued when no ``notices`` list is given)."""


def ensure_numba_cache(notices: list | None = None) -> str | None:
    """Make sure Numba has a writable cache folder for refimpl's kernels; run before ``refimpl.fast.kernels`` is
    imported. Returns None when one of Numba's own places works, else the notice naming the places tried and the
    fallback folder now in ``NUMBA_CACHE_DIR`` (also set on ``numba.config`` if Numba is already imported); the
    notice is also appended to ``notices``, or issued as a NumbaCacheWarning when no list is given."""
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if _writable(user_dir):
            return None
        tried = [f"NUMBA_CACHE_DIR={user_dir}"]
    else:
        in_tree = KERNELS.parent / "__pycache__"
        user_wide = _user_cache_dir()
        if _writable(in_tree) or (user_wide is not None and _writable(user_wide)):
            return None
        tried = [str(in_tree)] + ([user_wide] if user_wide is not None else [])
    fallback = _private_dir()
    os.environ["NUMBA_CACHE_DIR"] = fallback
    config = sys.modules.get("numba.core.config")
    if config is not None:  # Numba read the environment when it was imported: tell it directly
        config.CACHE_DIR = fallback  # type: ignore[attr-defined]
    notice = (
        f"Numba cannot write its kernel cache in {' or '.join(tried)} (read-only install, or no writable home): "
        f"caching compiled kernels in {fallback} instead; set NUMBA_CACHE_DIR to a writable folder to choose "
        f"where they are kept"
    )
    if notices is not None:
        notices.append(notice)
    else:
        warnings.warn(notice, NumbaCacheWarning, stacklevel=2)
    return notice


def _writable(folder) -> bool:
    """What Numba's locators check: the folder can be created and a file written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _user_cache_dir() -> str | None:
    """Numba's user-wide cache folder (``AppDirs("numba").user_cache_dir``), None if it cannot be computed."""
    try:
        from numba.misc.appdirs import AppDirs  # the same rule Numba applies (XDG_CACHE_HOME, ~/.cache, ...)

        return str(AppDirs(appname="numba", appauthor=False).user_cache_dir)
    except Exception:  # no usable home directory: Numba's own locator fails the same way
        return None


def _private_dir() -> str:
    """A folder in the temporary directory that only this user can write (reused between runs when it is ours and
    private; Numba's cache files are pickles, so never one that someone else could have prepared)."""
    uid = getattr(os, "getuid", lambda: "user")()
    base = os.path.join(tempfile.gettempdir(), f"refimpl-numba-cache-{uid}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return tempfile.mkdtemp(prefix="refimpl-numba-cache-")
    st = os.lstat(base)
    owner_ok = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    if stat.S_ISDIR(st.st_mode) and owner_ok and not st.st_mode & 0o077 and _writable(base):
        return base
    return tempfile.mkdtemp(prefix="refimpl-numba-cache-")
