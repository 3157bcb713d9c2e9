"""Which look-ahead to run: parsing ``70,13``, and checking that the model (or the ONNX file) serves it."""

from __future__ import annotations

import numpy as np


class LookAheadError(ValueError):
    """A look-ahead the model (or the ONNX file) does not serve."""


def parse_att_context_size(text):
    """'70,13', [70, 13] or (70, 13) -> (70, 13); None -> None."""
    if text is None or isinstance(text, tuple):
        return text
    if isinstance(text, (list, np.ndarray)):
        return tuple(int(a) for a in text)
    try:
        left, right = (int(a) for a in str(text).replace("[", "").replace("]", "").split(","))
    except ValueError:
        raise ValueError(f"att_context_size must be 'LEFT,RIGHT' (e.g. 70,13), got {text!r}") from None
    return left, right


def resolve_att_context_size(encoder_cfg, requested, *, fixed_by_file: bool, what: str):
    """The look-ahead to run: the requested one if the model serves it, else a clear error."""
    served = tuple(encoder_cfg.att_context_size)
    if requested is None:
        return served
    req = tuple(int(a) for a in requested)
    if fixed_by_file:
        if req != served:
            raise LookAheadError(
                f"{what} was exported for att_context_size {list(served)}, not {list(req)}: one ONNX encoder "
                f"serves exactly one look-ahead (its mask and output slice are baked in). Use the file exported for "
                f"{list(req)}, or run refimpl with weights from the .nemo (--weights), which serves every trained "
                f"look-ahead."
            )
        return req
    known = encoder_cfg.att_context_sizes
    if known is None:
        if req != served:
            raise LookAheadError(
                f"the trained look-aheads of {what} are unknown (an ONNX export records only the one it was exported "
                f"for, {list(served)}); to run {list(req)}, load the weights from the model's .nemo, which lists them"
            )
        return req
    if req not in [tuple(a) for a in known]:
        raise LookAheadError(
            f"att_context_size {list(req)} is not one of the model's look-aheads {[list(a) for a in known]}"
        )
    return req
