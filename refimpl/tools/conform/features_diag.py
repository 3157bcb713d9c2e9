"""What a front end's log-mel is, measured against NeMo's on the same audio.

``diagnose(feats, audio, nemo_features)`` aligns a front end's features ``[T, F]`` with NeMo's log-mel and says
how they differ, each as a number:

- **offset**: the frame shift (in half hops, 5 ms at 16 kHz) that best aligns them. kaldi-native-fbank with
  ``snip_edges=false`` centres frame m on sample 160 m + 80, NeMo on 160 m: +0.5 frames ("half a hop late").
- **normalisation**: per-bin mean 0 and std 1 over time (``per_feature``), or one mean and std over all
  (``all_features``), or none.
- **scaling**: the least-squares fit feats = a * nemo + b at that alignment. a = 1/ln 10 is a log10 front end,
  10/ln 10 decibels, 1/2 a log magnitude (not power); b = 2 ln 32768 = 20.8 is audio scaled to the int16 range.
- **floor**: the value on digital silence. NeMo adds 2^-24 before the log (ln = -16.64); Kaldi takes max(x,
  FLT_EPSILON = 2^-23) (ln = -15.94): exactly ln 2 higher.
- **window**: what is left after alignment and scaling, and whether sherpa-onnx's kaldi-native-fbank (periodic
  Hann 2 pi n / 400, per-frame pre-emphasis, reflected edges) explains the features better than NeMo's
  (symmetric Hann 2 pi n / 399, pre-emphasis over the signal, zero-padded edges).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...peers import sherpa_onnx

HALF_HOP = 80  # samples
NEMO_FLOOR = float(np.log(2.0**-24))
KALDI_FLOOR = float(np.log(2.0**-23))
SILENCE_BELOW = NEMO_FLOOR + 0.5  # NeMo log-mel values this low are (near) digital silence
EDGE = 2  # frames at each end left out of the alignment (edge handling differs by design)
OFFSETS = range(-4, 5)  # whole frames tried, at each half-hop phase


@dataclass(frozen=True)
class FeatureDiagnosis:
    frames: int  # of the front end
    nemo_frames: int  # NeMo's valid frames
    offset_frames: float  # the front end's frame m is NeMo's (m + offset): 0.5 = half a hop late
    median_abs: float  # |feats - nemo| at the same frame index, before any alignment
    max_abs: float
    aligned_median_abs: float  # after the best offset (and the same normalisation)
    normalisation: str  # "none" | "per_feature" | "all_features"
    scale: float  # fit feats = scale * nemo + bias (aligned)
    bias: float
    scaling: str  # what the fit says, or ""
    floor: float | None  # median value where NeMo's log-mel is digital silence (None: no such frames)
    floor_kind: str  # "nemo" | "kaldi" | "other" | ""
    kaldi_median_abs: float  # against sherpa-onnx's kaldi-native-fbank features at their alignment
    looks_like: str  # "nemo" | "kaldi-native-fbank" | "other"
    feature_std: float  # of NeMo's log-mel (for scale)

    def as_dict(self) -> dict:
        return asdict(self)

    def findings(self) -> list:
        """One sentence per difference, most telling first."""
        out = []
        if self.frames != self.nemo_frames:
            out.append(f"{self.frames} frames where NeMo has {self.nemo_frames}")
        if self.offset_frames:
            half = abs(self.offset_frames) == 0.5
            out.append(
                f"frames are {abs(self.offset_frames):g} frame{'s' if abs(self.offset_frames) != 1 else ''} "
                f"({abs(self.offset_frames) * 10:g} ms{', half a hop' if half else ''}) "
                f"{'late' if self.offset_frames > 0 else 'early'}: its frame m is centred where NeMo's frame "
                f"m{'+' if self.offset_frames > 0 else '-'}{abs(self.offset_frames):g} is"
            )
        if self.normalisation != "none":
            unit = "mel bin" if self.normalisation == "per_feature" else "utterance"
            out.append(f"{self.normalisation} normalised (each {unit} to mean 0, std 1)")
        if self.scaling:
            out.append(self.scaling)
        if self.floor_kind == "kaldi":
            out.append(
                f"digital silence sits at {self.floor:.2f} = ln 2^-23 (a max(x, FLT_EPSILON) floor), ln 2 above "
                f"NeMo's ln(x + 2^-24) = {NEMO_FLOOR:.2f}"
            )
        elif self.floor_kind == "other" and self.floor is not None:
            out.append(f"digital silence sits at {self.floor:.2f} (NeMo: ln(0 + 2^-24) = {NEMO_FLOOR:.2f})")
        if self.looks_like == "kaldi-native-fbank":
            out.append(
                f"matches kaldi-native-fbank as sherpa-onnx configures it (median |diff| {self.kaldi_median_abs:.2g}):"
                f" periodic Hann window (2 pi n / 400; NeMo's is symmetric, 2 pi n / 399), pre-emphasis per frame, "
                f"reflected edges"
            )
        return out

    def fix(self) -> str:
        parts = []
        if self.offset_frames:
            parts.append(
                "centre frame t on sample 160 t (torch.stft center=True with zero padding; kaldi's snip_edges=false "
                "centres it on 160 t + 80)"
            )
        if self.normalisation != "none":
            parts.append("do not normalise (streaming FastConformers are trained with normalize NA)")
        if self.scaling:
            parts.append("use ln of the power spectrum of samples in [-1, 1]")
        if self.floor_kind in ("kaldi", "other"):
            parts.append("take ln(x + 2^-24), not a clamp")
        if self.looks_like == "kaldi-native-fbank" or self.aligned_median_abs > 1e-3:
            parts.append("use a symmetric Hann window of 400 (torch.hann_window(400, periodic=False)) centred in 512")
        return "compute NeMo's log-mel (refimpl.model.preprocessing.log_mel): " + "; ".join(parts) if parts else ""


def _normalisation(f: np.ndarray) -> str:
    mean_bins, std_bins = f.mean(axis=0), f.std(axis=0)
    if np.abs(mean_bins).max() < 0.05 and np.abs(std_bins - 1).max() < 0.05:
        return "per_feature"
    if abs(f.mean()) < 0.05 and abs(f.std() - 1) < 0.05:
        return "all_features"
    return "none"


def _normalise(f: np.ndarray, how: str) -> np.ndarray:
    if how == "per_feature":
        return (f - f.mean(axis=0)) / (f.std(axis=0, ddof=1) + 1e-5)
    if how == "all_features":
        return (f - f.mean()) / (f.std(ddof=1) + 1e-5)
    return f


def _aligned(a: np.ndarray, b: np.ndarray, d: int):
    """a[t] against b[t + d] over the frames both have, EDGE frames in from each end."""
    lo, hi = max(0, -d) + EDGE, min(a.shape[0], b.shape[0] - d) - EDGE
    if hi - lo < 4:
        return None
    return a[lo:hi], b[lo + d : hi + d]


def diagnose(feats: np.ndarray, audio: np.ndarray, nemo_features, *, head: str = "rnnt") -> FeatureDiagnosis:
    """feats [T, F] a front end's valid features of ``audio`` [N]; ``nemo_features(samples) -> (mel [T, F],
    valid)`` NeMo's unnormalised log-mel (``pipeline.Model.features``)."""
    feats = np.asarray(feats, np.float64)
    mel, valid = nemo_features(audio)
    mel = np.asarray(mel[:valid], np.float64)
    n = min(feats.shape[0], mel.shape[0])
    same = np.abs(feats[:n] - mel[:n])
    norm = _normalisation(feats[:n])
    # NeMo's log-mel on the audio shifted by half a hop: its frame m is centred on 160 m + 80
    late, late_valid = nemo_features(audio[HALF_HOP:])
    phases = {0.0: mel, 0.5: np.asarray(late[:late_valid], np.float64)}
    best = (-np.inf, 0.0, None)  # alignment by correlation: blind to any scaling of the values
    for phase, ref in phases.items():
        ref_n = _normalise(ref, norm)
        for d in OFFSETS:
            pair = _aligned(feats, ref_n, d)
            if pair is None:
                continue
            corr = float(np.corrcoef(pair[0].ravel(), pair[1].ravel())[0, 1])
            if corr > best[0] + 1e-12:
                best = (corr, d + phase, pair)
    _, offset, pair = best
    aligned_med = float(np.median(np.abs(pair[0] - pair[1]))) if pair is not None else float("inf")
    scale = bias = 1.0
    scaling = ""
    if pair is not None:
        x, y = pair[1].ravel(), pair[0].ravel()
        loud = x > NEMO_FLOOR + 6  # fit where the log floor plays no part (silence maps to a floor either way)
        if norm == "none" and loud.sum() > 100:
            x, y = x[loud], y[loud]
        scale, bias = (float(v) for v in np.polyfit(x, y, 1))
        scaling = _scaling(scale, bias) if norm == "none" else ""
    else:
        bias = 0.0
    silent = mel[:n] < SILENCE_BELOW
    floor, floor_kind = None, ""
    if silent.any() and norm == "none":
        floor = float(np.median(feats[:n][silent]))
        floor_kind = (
            "nemo" if abs(floor - NEMO_FLOOR) < 0.05 else "kaldi" if abs(floor - KALDI_FLOOR) < 0.05 else "other"
        )
    kaldi = _normalise(np.asarray(sherpa_onnx.features(audio, head=head), np.float64), norm)
    kp = _aligned(feats, kaldi, 0)
    kaldi_med = float(np.median(np.abs(kp[0] - kp[1]))) if kp is not None else np.inf
    nemo_like = aligned_med < 1e-3 and offset == 0
    looks = "nemo" if nemo_like else "kaldi-native-fbank" if kaldi_med < 1e-3 else "other"
    return FeatureDiagnosis(
        frames=int(feats.shape[0]),
        nemo_frames=int(valid),
        offset_frames=float(offset),
        median_abs=float(np.median(same)) if n else float("nan"),
        max_abs=float(same.max()) if n else float("nan"),
        aligned_median_abs=float(aligned_med),
        normalisation=norm,
        scale=scale,
        bias=bias,
        scaling=scaling,
        floor=floor,
        floor_kind=floor_kind,
        kaldi_median_abs=kaldi_med,
        looks_like=looks,
        feature_std=float(mel.std()),
    )


def _scaling(a: float, b: float) -> str:
    known = [
        (1 / np.log(10), 0.0, "log10 instead of ln (feats = nemo / ln 10)"),
        (10 / np.log(10), 0.0, "decibels (10 log10) instead of ln"),
        (0.5, 0.0, "the log of the magnitude, not the power (half NeMo's values)"),
        (1.0, 2 * np.log(32768), "audio scaled to the int16 range (x 32768: +2 ln 32768 = +20.8)"),
    ]
    if abs(a - 1) < 0.1 and abs(b) < 1.0:  # window, edge and floor differences move the fit this much
        return ""
    for ka, kb, what in known:
        if abs(a - ka) < 0.02 * ka and abs(b - kb * a) < 0.5:
            return f"{what}: fit feats = {a:.3f} * nemo + {b:.2f}"
    return f"values scaled: fit feats = {a:.3f} * nemo + {b:.2f}"
