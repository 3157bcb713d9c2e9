"""RNNT: the LSTM prediction network (``RNNTDecoder``), the joint (``RNNTJoint``) and NeMo's greedy search.

The prediction state is carried across chunks: (h, c) of every LSTM layer *before* consuming ``last_token``,
and ``last_token`` itself (blank at the start: its embedding row is zero, so the first step is NeMo's SOS step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nn import linear, relu, sigmoid


@dataclass(frozen=True)
class RNNTState:
    h: np.ndarray  # [n_layers, B, pred_hidden]
    c: np.ndarray  # [n_layers, B, pred_hidden]
    last_token: np.ndarray  # [B] int64, blank at the start
    # What consuming last_token from (h, c) gives, when an engine kept it (refimpl's fast path does, so a blank
    # frame costs no LSTM step): {"joint_pred" [B, joint_hidden] joint.pred(g), "h" and "c" [n_layers, B, H]}.
    # A pure function of the three fields above; None means "compute it".
    pred_out: dict | None = None

    def select(self, keep: np.ndarray, other: RNNTState) -> RNNTState:
        """Per stream: self where keep[b], else other (streams that did not take part keep their state)."""
        k = np.asarray(keep, bool)
        pred = None
        if self.pred_out is not None and other.pred_out is not None:
            pred = {
                n: np.where(k.reshape((1,) * (v.ndim - 2) + (-1, 1)), v, other.pred_out[n])
                for n, v in self.pred_out.items()
            }
        return RNNTState(
            np.where(k[None, :, None], self.h, other.h),
            np.where(k[None, :, None], self.c, other.c),
            np.where(k, self.last_token, other.last_token),
            pred,
        )


def initial_rnnt_state(cfg, batch: int, dtype=np.float32) -> RNNTState:
    """Zero LSTM state and blank as the last token (cfg: RNNTConfig)."""
    shape = (cfg.pred_rnn_layers, batch, cfg.pred_hidden)
    return RNNTState(np.zeros(shape, dtype), np.zeros(shape, dtype), np.full(batch, cfg.blank_id, np.int64))


def lstm_cell(x: np.ndarray, h: np.ndarray, c: np.ndarray, w_ih, w_hh, b_ih, b_hh):
    """One torch.nn.LSTM step, gate order i, f, g, o: x [B, in], h/c [B, H] -> (h', c')."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # [B, 4H]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_next = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c_next), c_next


def prediction_step(tokens: np.ndarray, h: np.ndarray, c: np.ndarray, params: dict, *, cell=lstm_cell):
    """``RNNTDecoder`` on one token per stream: tokens [B], h/c [L, B, H] -> (g [B, H], h' [L,B,H], c').

    params = weights["decoder"]["prediction"]; the embedding's blank row is zero (blank_as_pad). ``cell`` is
    ``lstm_cell`` (refimpl.fast passes its kernel twin)."""
    x = params["embed"]["weight"][tokens]  # [B, H]
    lstm = params["dec_rnn"]["lstm"]
    hs, cs = [], []
    for layer in range(h.shape[0]):
        x, c_l = cell(
            x,
            h[layer],
            c[layer],
            lstm[f"weight_ih_l{layer}"],
            lstm[f"weight_hh_l{layer}"],
            lstm[f"bias_ih_l{layer}"],
            lstm[f"bias_hh_l{layer}"],
        )
        hs.append(x)
        cs.append(c_l)
    return x, np.stack(hs), np.stack(cs)


def joint_output_layer(params: dict) -> dict:
    """The Linear of ``joint_net`` ([ReLU, Dropout, Linear] -> index 2; index 1 without dropout)."""
    linears = [v for v in params["joint_net"].values() if "weight" in v]
    if len(linears) != 1:
        raise ValueError(f"joint.joint_net should hold one Linear, found {len(linears)}")
    return linears[0]


def joint(enc: np.ndarray, g: np.ndarray, params: dict) -> np.ndarray:
    """``RNNTJoint`` without log_softmax (as exported): enc [B, d_model], g [B, H] -> logits [B, V+1]."""
    z = relu(linear(enc, params["enc"]) + linear(g, params["pred"]))
    return linear(z, joint_output_layer(params))


def greedy_rnnt(
    enc: np.ndarray, enc_len: np.ndarray, state: RNNTState, decoder_joint, *, blank_id: int, max_symbols: int
):
    """NeMo's greedy transducer search over one chunk, for a batch of streams.

    enc [B, d_model, T], enc_len [B]; ``decoder_joint(frames [B, d], tokens [B], h, c) -> (logits [B, V+1], h', c')``
    is either engine's decoder+joint. For each frame t < enc_len[b]: up to ``max_symbols`` times, k = argmax;
    blank ends the frame and the state (h, c, last_token) is kept; otherwise k is emitted and the state advances.
    Returns (tokens: list of B lists, frames: the frame index t of every token, new state).
    """
    b = enc.shape[0]
    h, c, last = state.h, state.c, state.last_token
    tokens: list = [[] for _ in range(b)]
    frames: list = [[] for _ in range(b)]
    for t in range(enc.shape[2]):
        active = t < np.asarray(enc_len)  # [B]
        for _ in range(max_symbols):
            if not active.any():
                break
            logits, h_new, c_new = decoder_joint(enc[:, :, t], last, h, c)
            k = np.argmax(logits, axis=-1)
            emit = active & (k != blank_id)
            for i in np.flatnonzero(emit):
                tokens[i].append(int(k[i]))
                frames[i].append(t)
            h = np.where(emit[None, :, None], h_new, h)
            c = np.where(emit[None, :, None], c_new, c)
            last = np.where(emit, k, last)
            active = emit
    return tokens, frames, RNNTState(h, c, last)
