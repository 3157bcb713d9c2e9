"""The fast path's greedy RNNT search: NeMo's search (``refimpl.model.rnnt.greedy_rnnt``) with its work arranged
so that a blank costs one small product.

NeMo's search calls the prediction network and the joint for every symbol it tries. Here:

- the joint's encoder projection ``joint.enc`` of every frame is one product per call ([T, d] x [d, J]);
- the prediction network runs only when a token is emitted; its joint projection ``joint.pred(g)`` and the LSTM
  state after the token are kept in ``RNNTState.pred_out`` (a pure function of the state, carried across
  chunks like the state itself), so a blank frame is relu(enc + pred) x W_out: J x (V+1) multiply-adds;
- the LSTM cell is the backend's (``kernel_set(...).lstm_cell``).

The tokens are NeMo's: the same argmax over the same logits, to float rounding (tested against the plain
search and NeMo's goldens).
"""

from __future__ import annotations

import numpy as np

from weights_tools import RNNTConfig

from ..model.rnnt import RNNTState, joint_output_layer, lstm_cell, prediction_step


class FastGreedyRNNT:
    """decoder = weights["decoder"]["prediction"], joint = weights["joint"] (NeMo layouts)."""

    def __init__(self, decoder: dict, joint: dict, cfg: RNNTConfig, *, cell=lstm_cell):
        self.decoder, self.cfg, self.cell = decoder, cfg, cell
        out = joint_output_layer(joint)
        self.w_enc, self.b_enc = np.ascontiguousarray(joint["enc"]["weight"].T), joint["enc"]["bias"]  # [d, J]
        self.w_pred, self.b_pred = np.ascontiguousarray(joint["pred"]["weight"].T), joint["pred"]["bias"]  # [H, J]
        self.w_out, self.b_out = np.ascontiguousarray(out["weight"].T), out["bias"]  # [J, V+1]

    def predict(self, token: int, h: np.ndarray, c: np.ndarray) -> tuple:
        """Consume one token from LSTM state h/c [L, 1, H] -> (joint.pred(g) [J], h', c')."""
        g, h2, c2 = prediction_step(np.array([token]), h, c, self.decoder, cell=self.cell)
        return g[0] @ self.w_pred + self.b_pred, h2, c2

    def greedy(self, enc: np.ndarray, enc_len, state: RNNTState) -> tuple:
        """enc [B, d, T], enc_len [B] -> (tokens per stream, their frames, RNNTState with pred_out)."""
        blank, max_symbols = self.cfg.blank_id, self.cfg.max_symbols
        b_n = enc.shape[0]
        enc_proj = enc.transpose(0, 2, 1) @ self.w_enc + self.b_enc  # [B, T, J]
        h, c, last = np.array(state.h), np.array(state.c), np.array(state.last_token)
        pred = state.pred_out
        pred_next = {
            "joint_pred": np.empty((b_n, self.w_pred.shape[1]), enc_proj.dtype),
            "h": np.empty_like(h),
            "c": np.empty_like(c),
        }
        tokens: list = [[] for _ in range(b_n)]
        frames: list = [[] for _ in range(b_n)]
        if b_n > 1:
            return self._greedy_batch(enc_proj, enc_len, h, c, last, pred, tokens, frames)
        for b in range(b_n):
            hb, cb = h[:, b : b + 1], c[:, b : b + 1]
            if pred is not None:
                p, hn, cn = pred["joint_pred"][b], pred["h"][:, b : b + 1], pred["c"][:, b : b + 1]
            else:
                p, hn, cn = self.predict(int(last[b]), hb, cb)
            for t in range(int(enc_len[b])):
                for _ in range(max_symbols):
                    z = enc_proj[b, t] + p
                    np.maximum(z, 0, out=z)
                    k = int(np.argmax(z @ self.w_out + self.b_out))
                    if k == blank:
                        break
                    tokens[b].append(k)
                    frames[b].append(t)
                    hb, cb, last[b] = hn, cn, k
                    p, hn, cn = self.predict(k, hb, cb)
            h[:, b : b + 1], c[:, b : b + 1] = hb, cb
            pred_next["joint_pred"][b], pred_next["h"][:, b : b + 1], pred_next["c"][:, b : b + 1] = p, hn, cn
        return tokens, frames, RNNTState(h, c, last, pred_next)

    def _greedy_batch(self, enc_proj, enc_len, h, c, last, pred, tokens, frames) -> tuple:
        """The same search for B > 1 streams in lockstep: per frame and symbol, one joint product over the
        streams still emitting, one LSTM step over those that emitted (the rule per stream is unchanged: a frame
        ends on blank or after max_symbols tokens)."""
        blank, max_symbols = self.cfg.blank_id, self.cfg.max_symbols
        enc_len = np.asarray(enc_len)
        if pred is not None:
            p, hn, cn = np.array(pred["joint_pred"]), np.array(pred["h"]), np.array(pred["c"])
        else:
            g, hn, cn = prediction_step(last, h, c, self.decoder, cell=self.cell)
            p = g @ self.w_pred + self.b_pred  # [B, J]
        for t in range(enc_proj.shape[1]):
            active = np.flatnonzero(t < enc_len)
            for _ in range(max_symbols):
                if not active.size:
                    break
                z = enc_proj[active, t] + p[active]
                np.maximum(z, 0, out=z)
                k = np.argmax(z @ self.w_out + self.b_out, axis=-1)
                active, k = active[k != blank], k[k != blank]  # the streams that emit
                for i, kk in zip(active.tolist(), k.tolist()):
                    tokens[i].append(kk)
                    frames[i].append(t)
                if not active.size:
                    break
                h[:, active], c[:, active], last[active] = hn[:, active], cn[:, active], k
                g, h2, c2 = prediction_step(k, h[:, active], c[:, active], self.decoder, cell=self.cell)
                p[active], hn[:, active], cn[:, active] = g @ self.w_pred + self.b_pred, h2, c2
        return tokens, frames, RNNTState(h, c, last, {"joint_pred": p, "h": hn, "c": cn})
