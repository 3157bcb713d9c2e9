"""Which ONNX files of a folder play which role: NeMo's ``model.export`` writes ``encoder-<name>.onnx`` +
``decoder_joint-<name>.onnx`` for an RNNT head, one ``<name>.onnx`` (encoder + CTC head, first output
``logprobs``) for a CTC head, and the model's ``tokenizer.model`` may sit next to them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError
from .onnx_file import read_onnx

TOKENIZER = "tokenizer.model"
NAME_MAX = 255  # bytes in one file name on Linux/macOS file systems


@dataclass(frozen=True)
class Export:
    """The ONNX files of one model: which graph plays which role."""

    encoder: Path | None  # encoder-*.onnx
    decoder_joint: Path | None  # decoder_joint-*.onnx
    ctc: Path | None  # single-graph encoder + CTC head
    tokenizer: Path | None

    @property
    def encoder_graph(self) -> Path:
        """The graph holding the encoder: encoder-*.onnx, or the CTC single graph."""
        path = self.encoder or self.ctc
        if path is None:
            raise ModelLoadError("the export has no encoder graph (encoder-*.onnx or a CTC export)")
        return path

    @property
    def graphs(self) -> list[tuple[str, Path]]:
        return [
            (role, p)
            for role, p in (("encoder", self.encoder), ("decoder_joint", self.decoder_joint), ("encoder+ctc", self.ctc))
            if p is not None
        ]


def find_export(model) -> Export:
    """Which file is the encoder, the decoder_joint, the CTC graph, the tokenizer. A .nemo, a path no file system
    can hold, or a ``tokenizer.model`` symlink whose target is gone is a ModelLoadError saying what to do."""
    path = Path(model)
    if not _exists(path):
        raise ModelLoadError(
            f"{path}: no such file or folder (expected a folder with NeMo's ONNX export, or an .onnx file)"
        )
    if path.is_file() and (path.suffix == ".nemo" or _is_tar(path)):
        raise ModelLoadError(
            f"{path} is a .nemo checkpoint (a tar archive); this command needs NeMo's ONNX export folder "
            f"(encoder-*.onnx + decoder_joint-*.onnx, or a CTC export's one .onnx): export it with "
            f"model.set_export_config({{'cache_support': 'True'}}); model.export('model.onnx'), or use a command "
            f"that reads .nemo files (transcribe, inspect, crosscheck --weights)"
        )
    if path.is_file():
        return _export_of_file(path)
    onnx_files = sorted(path.glob("*.onnx"))
    enc = [p for p in onnx_files if p.name.startswith("encoder-")]
    dj = [p for p in onnx_files if p.name.startswith("decoder_joint-")]
    others = [p for p in onnx_files if p not in enc and p not in dj]
    ctc = [p for p in others if _first_output(p) == "logprobs"]
    for what, hits in (
        ("encoder-*.onnx", enc),
        ("decoder_joint-*.onnx", dj),
        ("CTC (*.onnx with output 'logprobs')", ctc),
    ):
        if len(hits) > 1:
            raise ModelLoadError(
                f"{path}: expected at most one {what}, found {[p.name for p in hits]}; keep one "
                f"model's export per folder"
            )
    if not enc and not ctc:
        found = sorted(p.name for p in path.iterdir())
        raise ModelLoadError(
            f"{path}: no encoder found. Expected encoder-<name>.onnx + decoder_joint-<name>.onnx (NeMo's RNNT "
            f"export) or one <name>.onnx whose first output is 'logprobs' (CTC export); found {found}"
        )
    if dj and not enc:
        raise ModelLoadError(f"{path}: {dj[0].name} without its encoder-*.onnx; found {[p.name for p in onnx_files]}")
    return Export(enc[0] if enc else None, dj[0] if dj else None, ctc[0] if ctc else None, _tokenizer(path))


def _name(path: Path | None) -> str:
    return path.name if path is not None else "(none)"


def _exists(path: Path) -> bool:
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        shown = long[0] if len(long[0]) <= 60 else f"{long[0][:40]}...{long[0][-15:]}"
        raise ModelLoadError(
            f"model path component {shown!r} is {len(os.fsencode(long[0]))} bytes long; file systems allow at most "
            f"{NAME_MAX} bytes per name, so no such file or folder can exist: check the path"
        )
    try:
        return path.exists()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot be accessed ({e.strerror or e})") from None


def _is_tar(path: Path) -> bool:
    """A tar archive (a .nemo under another name): 'ustar' at offset 257, or a gzip stream."""
    try:
        with open(path, "rb") as f:
            head = f.read(262)
    except OSError:
        return False  # reading it fails later with the reason
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def _tokenizer(folder: Path) -> Path | None:
    """The folder's tokenizer.model, None if there is none; a dangling symlink (``cp -r`` of an export folder whose
    tokenizer.model links to a file outside it) is reported now, before any audio is processed."""
    tok = folder / TOKENIZER
    if tok.is_symlink() and not tok.exists():
        target = os.readlink(tok)
        raise ModelLoadError(
            f"{tok} is a symbolic link to {target!r}, which does not exist (resolved: {folder / target}); the folder "
            f"was probably copied without the file the link points to (cp -r keeps links as links): copy the real "
            f"file over the link (cp --remove-destination SOURCE/tokenizer.model {tok}, or copy folders with cp -rL), "
            f"or delete the link"
        )
    return tok if tok.is_file() else None


def _export_of_file(path: Path) -> Export:
    tok = _tokenizer(path.parent)
    if path.name.startswith("decoder_joint-"):
        enc = path.parent / ("encoder-" + path.name[len("decoder_joint-") :])
        if not enc.is_file():
            raise ModelLoadError(f"{path}: a decoder_joint needs its encoder; expected {enc.name} next to it")
        return Export(enc, path, None, tok)
    if path.name.startswith("encoder-"):
        dj = path.parent / ("decoder_joint-" + path.name[len("encoder-") :])
        return Export(path, dj if dj.is_file() else None, None, tok)
    first = _first_output(path)
    if first == "logprobs":
        return Export(None, None, path, tok)
    if first == "outputs":  # an encoder saved under another name
        return Export(path, None, None, tok)
    raise ModelLoadError(
        f"{path}: neither an encoder (first output 'outputs') nor a CTC export (first output "
        f"'logprobs'); its first output is {first!r}"
    )


def _first_output(path: Path) -> str | None:
    g = read_onnx(path).graph
    return g.output[0].name if g.output else None
