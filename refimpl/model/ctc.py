"""CTC head of the hybrid model (``ConvASRDecoder``) and greedy CTC across chunks."""

from __future__ import annotations

import numpy as np

from .nn import log_softmax


def ctc_logprobs(outputs: np.ndarray, params: dict) -> np.ndarray:
    """1x1 Conv1d + log_softmax: outputs [B, d_model, T] -> logprobs [B, T, V+1].

    params = weights["ctc_decoder"] (``decoder_layers.0.weight`` [V+1, d_model, 1], ``.bias`` [V+1])."""
    conv = params["decoder_layers"]["0"]
    logits = outputs.transpose(0, 2, 1) @ conv["weight"][:, :, 0].T + conv["bias"]
    return log_softmax(logits, axis=-1)


def greedy_ctc(logprobs: np.ndarray, lengths: np.ndarray, last_label: np.ndarray, *, blank_id: int):
    """Argmax per frame over the first lengths[b] frames, collapse repeats, drop blanks.

    ``last_label`` [B] is the previous chunk's last frame label (blank at the start): carrying it is the
    same as collapsing the concatenated sequence, as NeMo's streaming step does.
    Returns (tokens: list of B lists, the frame index of every token, frame_labels: list of B arrays,
    new last_label [B]).
    """
    labels = np.argmax(logprobs, axis=-1)  # [B, T]
    tokens, token_frames, frames, new_last = [], [], [], np.array(last_label, np.int64, copy=True)
    for b in range(labels.shape[0]):
        seq = labels[b, : int(lengths[b])]
        prev = np.concatenate([[new_last[b]], seq[:-1]]) if len(seq) else seq
        keep = (seq != blank_id) & (seq != prev)
        tokens.append([int(k) for k in seq[keep]])
        token_frames.append([int(t) for t in np.flatnonzero(keep)])
        frames.append(seq)
        if len(seq):
            new_last[b] = seq[-1]
    return tokens, token_frames, frames, new_last
