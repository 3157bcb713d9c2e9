"""Read a ``.nemo`` (a tar, plain or gzipped, holding ``model_config.yaml``, ``model_weights.ckpt`` and the
tokenizer artifacts) without torch."""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .errors import CorruptFileError, ModelLoadError, clean_errors, one_line
from .nemo_config import model_config, parse_yaml
from .schema import check_against, ctc_shapes, encoder_shapes, preprocessor_shapes, rnnt_shapes
from .torch_pickle import load_state_dict
from .tree import unflatten

_CONFIG, _WEIGHTS = "model_config.yaml", "model_weights.ckpt"
NOT_PARAMETERS = ("num_batches_tracked",)  # BatchNorm's training step counter (int64)


@clean_errors("a NeMo .nemo checkpoint")
def load_nemo(path) -> tuple[ModelConfig, dict]:
    """(config, nested dict of read-only float32 arrays keyed by NeMo's state_dict names). ``att_context_size``
    is the model's default (first) look-ahead, ``att_context_sizes`` all of them. BatchNorm running statistics
    are kept (``fold_batch_norm`` needs them); ``num_batches_tracked`` is dropped."""
    path = Path(path)
    with _open_tar(path) as tar:
        config = _read_config(tar, path)
        member = _member(tar, _WEIGHTS, path)
        with _seekable(tar, member, path) as f:
            state = load_state_dict(f, f"{path}:{_WEIGHTS}")
    weights = {}
    for name, arr in state.items():
        if name.rsplit(".", 1)[-1] in NOT_PARAMETERS:
            continue
        if arr.dtype.kind != "f":
            raise ModelLoadError(f"{path}: state_dict entry {name} is {arr.dtype}, expected floating point")
        arr = arr.astype(np.float32, copy=False)
        arr.flags.writeable = False
        weights[name] = arr
    check_against(nemo_shapes(config, weights), weights, str(path))
    return config, unflatten(weights)


@clean_errors("a NeMo .nemo checkpoint")
def read_nemo_config(path) -> ModelConfig:
    """The config and tokenizer of a .nemo, without reading its weights."""
    path = Path(path)
    with _open_tar(path) as tar:
        return _read_config(tar, path)


def nemo_shapes(config: ModelConfig, weights: dict) -> dict:
    """Every state_dict name (and shape) of this model; the joint's output Linear index is taken from the
    weights (``joint_net.2`` with dropout, ``joint_net.1`` without)."""
    shapes = {**preprocessor_shapes(config.preprocessor), **encoder_shapes(config.encoder)}
    if config.rnnt is not None:
        idx = [n.split(".")[2] for n in weights if n.startswith("joint.joint_net.") and n.endswith(".weight")]
        shapes.update(rnnt_shapes(config.rnnt, config.encoder.d_model, int(idx[0]) if len(idx) == 1 else 2))
    if config.ctc is not None:
        shapes.update(ctc_shapes(config.ctc.vocab_size, config.encoder.d_model, config.ctc.module))
    return shapes


@contextlib.contextmanager
def _open_tar(path: Path):
    """The .nemo as a TarFile with every header read (a truncated archive fails here, not half-way)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such .nemo file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    tar = None
    try:
        tar = tarfile.open(path, "r:gz" if gzipped else "r:")
        tar.getmembers()
    except (tarfile.ReadError, EOFError, OSError) as e:
        if tar is not None:
            tar.close()
        detail = one_line(e)
        truncated = isinstance(e, EOFError) or any(w in detail for w in ("unexpected end", "truncated"))
        raise CorruptFileError(
            f"{path} ({size} bytes) is {'a truncated' if truncated else 'not a readable'} .nemo archive "
            f"({'gzipped tar' if gzipped else 'tar'}: {detail}). A .nemo is a tar (plain or gzipped) holding "
            f"{_CONFIG} and {_WEIGHTS}; re-download it, or re-save the model with NeMo's model.save_to()"
        ) from None
    try:
        yield tar
    finally:
        tar.close()


def _member(tar: tarfile.TarFile, name: str, path: Path) -> tarfile.TarInfo:
    hits = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == name]
    if len(hits) != 1:
        found = sorted(Path(m.name).name for m in tar.getmembers() if m.isfile())
        raise CorruptFileError(
            f"{path}: expected one {name} in the .nemo archive, found {len(hits)} "
            f"(members: {found}); the download is incomplete or this is not a NeMo model file"
        )
    return hits[0]


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo):
    f = tar.extractfile(member)
    if f is None:
        raise CorruptFileError(f"{member.name} in the archive is not a regular file")
    return f


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    try:
        data = _member_file(tar, member).read()
    except (tarfile.ReadError, EOFError, OSError) as e:
        raise CorruptFileError(
            f"{path}: cannot read {member.name} ({one_line(e)}): the archive is truncated or corrupted; re-download it"
        ) from None
    if len(data) != member.size:
        raise CorruptFileError(
            f"{path}: {member.name} has {len(data)} of {member.size} bytes (unexpected end "
            f"of data): the archive is truncated; re-download it"
        )
    return data


@contextlib.contextmanager
def _seekable(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path):
    """A seekable file object over the member: the tar itself when uncompressed, a spooled copy when gzipped
    (seeking backwards in a gzip stream re-decompresses from the start)."""
    end = member.offset_data + member.size
    if path.stat().st_size < end and tar.fileobj.__class__.__name__ != "GzipFile":
        raise CorruptFileError(
            f"{path}: {member.name} needs bytes up to offset {end} but the file has "
            f"{path.stat().st_size} (unexpected end of data): the archive is truncated; re-download it"
        )
    f = _member_file(tar, member)
    if tar.fileobj.__class__.__name__ == "GzipFile":
        with tempfile.TemporaryFile() as tmp:
            shutil.copyfileobj(f, tmp, 16 << 20)
            tmp.seek(0)
            yield tmp
    else:
        yield f


def _read_config(tar: tarfile.TarFile, path: Path) -> ModelConfig:
    raw = _read_member(tar, _member(tar, _CONFIG, path), path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(
            f"{path}: {_CONFIG} is not UTF-8 text ({e.reason} at byte {e.start}): the archive is corrupted; "
            f"re-download it"
        ) from None
    cfg = parse_yaml(text, str(path))
    tok = None
    model_path = str((cfg.get("tokenizer") or {}).get("model_path") or "")
    if model_path:
        name = model_path.split("nemo:", 1)[-1]
        tok = _read_member(tar, _member(tar, Path(name).name, path), path)
    return model_config(cfg, str(path), tok)
