"""SentencePiece detokenization as NeMo's ``SentencePieceTokenizer.ids_to_text`` does for ASR output.

Token id i is SentencePiece piece i; the blank (id = vocab size) is not a piece and never reaches here.
"""

from __future__ import annotations

import sentencepiece as spm


class Tokenizer:
    def __init__(self, model_proto: bytes):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def decode(self, ids) -> str:
        """Concatenate the pieces, '▁' -> space, strip the leading space (``decode_ids``)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the tokenizer's {self.vocab_size} pieces")
        return self.sp.decode_ids(ids)

    def pieces(self, ids) -> list:
        return [self.sp.id_to_piece(int(i)) for i in ids]
