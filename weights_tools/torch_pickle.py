"""Read a ``torch.save`` checkpoint (zip format: ``<archive>/data.pkl`` + ``<archive>/data/<key>`` storages)
with NumPy only.

The pickle is read by a restricted unpickler that resolves nothing but the globals a tensor state_dict needs
(``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the typed
storage classes); any other global is refused, so a malicious checkpoint cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import CorruptFileError, UnsafeCheckpointError, one_line

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.<Name>Storage`` in the pickle."""

    name: str


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """NumPy version of torch._utils._rebuild_tensor_v2: a (possibly strided) view into a flat storage."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise CorruptFileError(f"checkpoint tensor with size {size} but stride {stride}")
    n = storage.size
    if all(s > 0 for s in size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if storage_offset < 0 or last >= n or any(st < 0 for st in stride):
            raise CorruptFileError(
                f"checkpoint tensor (offset {storage_offset}, size {size}, stride {stride}) "
                f"reaches past its storage of {n} elements"
            )
    contiguous = stride == _contiguous_strides(size)
    if contiguous and storage_offset == 0 and int(np.prod(size, dtype=np.int64)) == n:
        return storage.reshape(size)
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    out = np.ascontiguousarray(view)
    return out if out.base is None else out.copy()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _contiguous_strides(size: tuple) -> tuple:
    strides, acc = [], 1
    for s in reversed(size):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage, where: str):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._where = where

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._where}: the checkpoint pickle asks for the global {module}.{name}, which is not one of the "
            f"tensor-rebuild globals a state_dict needs (collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
            f"torch.*Storage); refusing to load it. Only load checkpoints from sources you trust"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(
                f"{self._where}: unexpected persistent id {pid!r} in the checkpoint pickle "
                f"(expected ('storage', torch.<Type>Storage, key, location, numel))"
            )
        _, stype, key, _location, numel = pid
        return self._load_storage(stype.name, str(key), int(numel))


def load_state_dict(fileobj, where: str) -> dict:
    """name -> NumPy array from a torch zip checkpoint opened as a seekable binary file object."""
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError):
        raise CorruptFileError(
            f"{where} is not a torch zip checkpoint (torch.save since PyTorch 1.6): it is truncated, corrupted, or "
            f"in the legacy torch.save format, which is not supported. Re-download the model, or re-save it with "
            f"a current NeMo (model.save_to)"
        ) from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CorruptFileError(
                f"{where}: expected one '<archive>/data.pkl' in the checkpoint zip, found {pkl or names[:8]}"
            )
        root = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        try:
            if root + "byteorder" in names:
                byteorder = zf.read(root + "byteorder").decode().strip()
            pickled = zf.read(pkl[0])
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError, NotImplementedError) as e:
            raise CorruptFileError(
                f"{where}: the checkpoint zip is corrupted ({one_line(e)}); re-download the model, or re-save it with "
                f"model.save_to"
            ) from None
        if byteorder not in ("little", "big"):
            raise CorruptFileError(f"{where}: the checkpoint's byteorder is {byteorder!r}, expected little or big")
        storages: dict = {}

        def load_storage(type_name: str, key: str, numel: int):
            if key not in storages:
                storages[key] = _read_storage(zf, f"{root}data/{key}", type_name, numel, byteorder, where)
            return storages[key]

        try:
            obj = _RestrictedUnpickler(pickled, load_storage, where).load()
        except Exception as e:  # any failure to unpickle damaged bytes (UnpicklingError, KeyError, OverflowError, ...)
            if isinstance(e, (UnsafeCheckpointError, CorruptFileError)):
                raise
            raise CorruptFileError(f"{where}: the checkpoint pickle is corrupted ({one_line(e)})") from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{where}: the checkpoint holds a {type(obj).__name__}, expected a state_dict")
    return dict(obj)


def _read_storage(zf: zipfile.ZipFile, name: str, type_name: str, numel: int, byteorder: str, where: str):
    dtype = np.dtype(np.uint16 if type_name == "BFloat16Storage" else _STORAGE_DTYPES[type_name])
    try:
        stored = zf.getinfo(name).file_size
    except KeyError:
        raise CorruptFileError(f"{where}: storage {name!r} is missing from the checkpoint zip") from None
    if not 0 <= numel <= stored // dtype.itemsize:
        raise CorruptFileError(
            f"{where}: storage {name!r} claims {numel} x {type_name} but holds {stored} bytes: the checkpoint is "
            f"corrupted; re-download it"
        )
    arr = np.empty(numel, dtype.newbyteorder("<" if byteorder == "little" else ">"))
    try:
        with zf.open(name) as f:
            got = f.readinto(memoryview(arr).cast("B")) if arr.nbytes else 0
    except KeyError:
        raise CorruptFileError(f"{where}: storage {name!r} is missing from the checkpoint zip") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise CorruptFileError(
            f"{where}: storage {name!r} cannot be read ({one_line(e)}): the file is truncated or corrupted; "
            f"re-download it"
        ) from None
    if got != arr.nbytes:
        raise CorruptFileError(
            f"{where}: storage {name!r} has {got} bytes, expected {arr.nbytes} "
            f"({numel} x {type_name}): unexpected end of data, the file is truncated"
        )
    if not arr.dtype.isnative:
        arr = arr.byteswap().view(arr.dtype.newbyteorder("="))
    if type_name == "BFloat16Storage":  # bfloat16 = the high half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr
