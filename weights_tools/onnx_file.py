"""Read an ONNX file without holding its tensor payloads in memory twice.

``onnx.load`` keeps the whole file as bytes and then as a parsed protobuf (two full copies of a 456 MB encoder).
Here the protobuf wire format is walked directly: everything except the initializers' ``raw_data`` is parsed
with ``onnx`` (nodes, inputs, outputs, small headers), and each initializer's bytes are located in the file and
read on demand straight into a NumPy array. Config detection therefore reads no weights at all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from .errors import CorruptFileError, one_line

# protobuf field numbers (onnx.proto)
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


class _Truncated(Exception):
    """A field runs past the end of the data that holds it."""


class _Malformed(Exception):
    """Bytes that cannot be protobuf wire format."""


@dataclass(frozen=True)
class TensorRef:
    """One initializer: its header, and where its bytes are (``offset`` None: the values live in ``proto``)."""

    name: str
    dims: tuple
    data_type: int
    path: Path
    offset: int | None
    nbytes: int
    proto: onnx.TensorProto  # header only when offset is not None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.data_type))

    @property
    def size(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    def read(self) -> np.ndarray:
        """The tensor as a NumPy array in native byte order (one copy, read straight from the file)."""
        if self.offset is None:
            return numpy_helper.to_array(self.proto)
        arr = np.empty(self.size, self.dtype)
        if arr.nbytes != self.nbytes:
            raise CorruptFileError(
                f"{self.path}: initializer {self.name!r} holds {self.nbytes} bytes, but dims {list(self.dims)} of "
                f"{self.dtype} need {arr.nbytes}; the file is corrupted: re-download or re-export it"
            )
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            got = f.readinto(memoryview(arr).cast("B"))
        if got != self.nbytes:
            raise CorruptFileError(
                f"{self.path}: initializer {self.name!r} ends after {got} of {self.nbytes} bytes (file size "
                f"{self.path.stat().st_size}): the file is truncated: re-download or re-export it"
            )
        if sys.byteorder == "big":  # ONNX raw_data is little-endian
            arr = arr.byteswap()
        return arr.reshape(self.dims)


@dataclass(frozen=True)
class OnnxFile:
    """A parsed ONNX file: the model proto with an initializer-free graph, and the initializers by name."""

    path: Path
    model: onnx.ModelProto
    initializers: dict  # name -> TensorRef, in file order

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph


def read_onnx(path) -> OnnxFile:
    """Parse ``path``; CorruptFileError if it is truncated or not an ONNX model."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            model, inits = _read_model(f, size, path)
    except _Truncated as e:
        raise CorruptFileError(
            f"{path} ({size} bytes) is truncated or corrupted: {one_line(e)} (protobuf: unexpected end of data). "
            f"Re-download it, or re-export it with NeMo's model.export()"
        ) from None
    except (_Malformed, DecodeError) as e:
        raise CorruptFileError(
            f"{path} ({size} bytes, starting {_head(path)}) is not a readable ONNX model: {one_line(e)}. Expected an "
            f"ONNX protobuf as written by NeMo's model.export(); re-download or re-export it"
        ) from None
    if not model.HasField("graph") or not model.graph.node or model.ir_version == 0:
        raise CorruptFileError(
            f"{path} ({size} bytes, starting {_head(path)}) is not an ONNX model: no graph nodes / IR version "
            f"found. Expected an ONNX file written by NeMo's model.export(); re-download or re-export it"
        )
    bad = _first_bad_name(model.graph, inits)
    if bad is not None:
        raise CorruptFileError(
            f"{path} ({size} bytes) is corrupted: it holds a name that is not valid UTF-8 ({bad!r}); "
            f"re-download it, or re-export it with NeMo's model.export()"
        )
    return OnnxFile(path, model, inits)


def _first_bad_name(g: onnx.GraphProto, inits: dict):
    """A name the protobuf parser had to leave as bytes (invalid UTF-8: damaged bytes), else None."""
    names = [n for n in inits]
    for node in g.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        names += [a.name for a in node.attribute]
    names += [v.name for v in (*g.input, *g.output)]
    return next((n for n in names if not isinstance(n, str)), None)


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return repr(f.read(16))


def _read_model(f, size: int, path: Path):
    """ModelProto without initializer payloads, plus a TensorRef per initializer."""
    rest, graph_bytes, inits = [], b"", {}
    for field, wire, start, pstart, pend in _fields(f, 0, size):
        if field == _MODEL_GRAPH and wire == _WIRE_LEN:
            graph_bytes, inits = _read_graph(f, pstart, pend, path)
        else:
            rest.append(_bytes(f, start, pend))
    model = onnx.ModelProto.FromString(b"".join(rest))
    model.graph.CopyFrom(onnx.GraphProto.FromString(graph_bytes))
    return model, inits


def _read_graph(f, start: int, end: int, path: Path):
    kept, inits = [], {}
    for field, wire, fstart, pstart, pend in _fields(f, start, end):
        if field == _GRAPH_INITIALIZER and wire == _WIRE_LEN:
            ref = _read_tensor(f, pstart, pend, path)
            inits[ref.name] = ref
        else:
            kept.append(_bytes(f, fstart, pend))
    return b"".join(kept), inits


def _read_tensor(f, start: int, end: int, path: Path) -> TensorRef:
    header, raw = [], None
    for field, wire, fstart, pstart, pend in _fields(f, start, end):
        if field == _TENSOR_RAW_DATA and wire == _WIRE_LEN:
            raw = (pstart, pend - pstart)
        else:
            header.append(_bytes(f, fstart, pend))
    proto = onnx.TensorProto.FromString(b"".join(header))
    dims = tuple(int(d) for d in proto.dims)
    try:
        onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)
    except (KeyError, ValueError):
        raise _Malformed(
            f"initializer {proto.name!r} has data type {proto.data_type}, which ONNX does not define"
        ) from None
    if any(d < 0 for d in dims):
        raise _Malformed(f"initializer {proto.name!r} has negative dims {list(dims)}")
    if raw is not None:
        return TensorRef(proto.name, dims, proto.data_type, path, raw[0], raw[1], proto)
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        ext = {e.key: e.value for e in proto.external_data}
        where = path.parent / ext.get("location", "")
        if "location" not in ext or not where.is_file():
            raise CorruptFileError(
                f"{path}: initializer {proto.name!r} keeps its data in an external file {ext.get('location')!r}, "
                f"which is missing next to the model; copy it there or re-export without external data"
            )
        n = (
            int(ext.get("length", 0))
            or int(np.prod(dims, dtype=np.int64))
            * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
        )
        return TensorRef(proto.name, dims, proto.data_type, where, int(ext.get("offset", 0)), n, proto)
    return TensorRef(proto.name, dims, proto.data_type, path, None, 0, proto)


def _bytes(f, start: int, end: int) -> bytes:
    f.seek(start)
    data = f.read(end - start)
    if len(data) != end - start:
        raise _Truncated(f"expected {end - start} bytes at offset {start}, found {len(data)}")
    return data


def _varint(f, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it)."""
    f.seek(pos)
    chunk = f.read(min(10, end - pos))
    value = shift = 0
    for i, b in enumerate(chunk):
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + i + 1
        shift += 7
    if len(chunk) < 10:
        raise _Truncated(f"a varint at offset {pos} runs past offset {end}")
    raise _Malformed(f"a varint longer than 10 bytes at offset {pos}")


def _fields(f, start: int, end: int):
    """Yield (field number, wire type, field start, payload start, payload end) for each field in [start, end)."""
    pos = start
    while pos < end:
        key, p = _varint(f, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed(f"field number 0 at offset {pos}")
        if wire == _WIRE_VARINT:
            _, pend = _varint(f, p, end)
        elif wire == _WIRE_I64:
            pend = p + 8
        elif wire == _WIRE_I32:
            pend = p + 4
        elif wire == _WIRE_LEN:
            n, p = _varint(f, p, end)
            pend = p + n
        else:
            raise _Malformed(f"wire type {wire} (field {field}) at offset {pos}")
        if pend > end:
            raise _Truncated(
                f"field {field} at offset {pos} needs bytes up to offset {pend}, but its container ends at {end}"
            )
        yield field, wire, pos, p, pend
        pos = pend
