"""The match threshold a fit calibrates: chosen on the validation split for a false-match rate,
kept in every checkpoint, and measured on other pairs (``test``, ``evaluate``, ``compare``).

A checkpoint holds it under :data:`KEY` as plain numbers (loadable with ``weights_only``): the
``threshold`` (a pair whose cosine similarity is above it is a look-alike), the ``fmr_target``
it was chosen for, the ``fmr`` and ``tmr`` it had on the validation split, that split's
``pairs``, and the ``epoch`` and ``step`` of the validation (the weights it was chosen for).
"""

from __future__ import annotations

import math
from typing import Any

from lightning_siamese.errors import ConfigError
from lightning_siamese.retrieval.verification import Verification

KEY = "match_threshold"


def check_fmr(fmr: float) -> None:
    """Raise :class:`ConfigError` unless ``fmr`` is a false-match rate a threshold can be
    calibrated for: above 0 and below 1."""
    if not (isinstance(fmr, int | float) and 0 < fmr < 1):
        raise ConfigError(f"match_fmr must be a false-match rate above 0 and below 1, got {fmr!r}")


def calibrate(counts: Verification, fmr: float, epoch: int, step: int) -> dict[str, Any] | None:
    """The calibration for false-match rate ``fmr`` from a validation's counts (None with
    fewer than 2 pairs: no non-matching pair to calibrate on)."""
    if not counts.impostors:
        return None
    threshold = counts.threshold(fmr)
    return {
        "threshold": threshold,
        "fmr_target": fmr,
        "fmr": counts.kept_fmr(threshold),
        "tmr": float((counts.genuine > threshold).double().mean()),
        "pairs": counts.pairs,
        "epoch": epoch,
        "step": step,
    }


def describe(calibration: dict[str, Any]) -> str:
    """One line: the threshold and what it did on validation."""
    threshold = calibration["threshold"]
    shown = f"{threshold:.4f}" if math.isfinite(threshold) else str(threshold)
    return (
        f"match threshold {shown}, chosen on the validation split ({calibration['pairs']} pairs, "
        f"epoch {calibration['epoch']}) for a false-match rate of at most "
        f"{calibration['fmr_target']:g}: there FMR {calibration['fmr']:.4f}, "
        f"TMR {calibration['tmr']:.4f}"
    )


def measured(calibration: dict[str, Any], pairs: str, tmr: float, fmr: float) -> str:
    """One line: the validation's threshold measured on ``pairs`` (what they are, in words)."""
    return f"{describe(calibration)}; measured on {pairs}: TMR {tmr:.4f}, FMR {fmr:.4f}"
