"""The model, in NumPy, along the signal path: audio -> log-mel -> pre_encode -> conformer layers -> CTC / RNNT.

The readable truth: one pure function per layer, NeMo's names and layouts, no backend switch."""
