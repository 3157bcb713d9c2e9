"""Emulations of the peer runtimes people run NeMo's streaming exports with, as pure functions next to NeMo's own
pipeline, so that every difference between a peer and NeMo can be named stage by stage.

- ``kaldi_fbank``: kaldi-native-fbank's online filterbank (sherpa-onnx's front end), in NumPy.
- ``sherpa_onnx``: sherpa-onnx's online NeMo recognizer: features, the window walk (first chunk, ``length``,
  the last-chunk rule and tail padding), the cache loop, greedy RNNT (with its decoder-output cache) and CTC.
- ``onnx_asr``: onnx-asr's NeMo models: the ``nemo80`` preprocessor (per_feature normalisation), whole-utterance
  encoding, its greedy RNNT and CTC, and how it reads a model folder.

Each is tested against the real package on the same ONNX files (``tests/test_peers.py``).
"""
