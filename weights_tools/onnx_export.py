"""Which ONNX files of a folder play which role: NeMo's ``model.export`` writes ``encoder-<name>.onnx`` +
``decoder_joint-<name>.onnx`` for an RNNT head, one ``<name>.onnx`` (encoder + CTC head, first output
``logprobs``) for a CTC head, and the model's ``tokenizer.model`` may sit next to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError
from .onnx_file import read_onnx

TOKENIZER = "tokenizer.model"


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
    """Which file is the encoder, the decoder_joint, the CTC graph, the tokenizer."""
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(
            f"{path}: no such file or folder (expected a folder with NeMo's ONNX export, or an .onnx file)"
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
    tok = path / TOKENIZER
    return Export(
        enc[0] if enc else None, dj[0] if dj else None, ctc[0] if ctc else None, tok if tok.is_file() else None
    )


def _name(path: Path | None) -> str:
    return path.name if path is not None else "(none)"


def _export_of_file(path: Path) -> Export:
    tok: Path | None = path.parent / TOKENIZER
    tok = tok if tok is not None and tok.is_file() else None
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
