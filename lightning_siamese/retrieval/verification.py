"""Verification: is a left/right pair a look-alike? Exact figures over a split. Pure torch.

The split's matching pairs are (left ``i``, right ``i``); its non-matching pairs are every
(left ``i``, right ``j``) with ``j != i``: N (N - 1) of them, all counted, none sampled. A pair
is called a look-alike when its cosine similarity is above a threshold ``t``; then

- the true-match rate TMR(t) is the share of matching pairs above ``t``,
- the false-match rate FMR(t) the share of non-matching pairs above ``t``,
- ROC AUC the chance that a matching pair scores above a non-matching one (a tie counts half),
- the equal error rate (EER) the lowest rate that FMR and 1 - TMR can both be held to by one
  threshold: min over t of max(FMR(t), 1 - TMR(t)),
- TMR@FMR f the highest TMR of a threshold whose FMR is at most f; that threshold is the
  (floor(f M) + 1)-th highest non-matching score (M non-matching pairs), and it is the one a
  calibration for FMR f stores.

The N x N scores are computed in row blocks: a split of 10,000 pairs needs no 10^8-score matrix,
only a block and the highest f M non-matching scores for the largest calibrated FMR f (10^6
at f = 0.01). Scores are computed in float64 and rounded to a multiple of 2^-24 (float32's
spacing just below 1; exact in float32), so one pair of vectors gets the same score wherever it
stands (an orthogonal pair's float64 product is 1e-17 in one place and 0 in another; only a
product within 1e-16 of a rounding midpoint could still round two ways), and ties are equal
scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: The false-match rates whose true-match rate every split reports.
FMR_TARGETS = (1e-2, 1e-3)
#: The similarity histograms' bins over [-1, 1].
HISTOGRAM_BINS = 100


def fmr_name(fmr: float) -> str:
    """A metric's suffix for a false-match rate: ``0.01`` -> ``fmr0.01``."""
    return f"fmr{fmr:g}"


#: Scores are multiples of 1 / SCALE.
SCALE = float(1 << 24)


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.double(), dim=1)


def _rounded(scores: torch.Tensor) -> torch.Tensor:
    """float64 scores on the grid of 2^-24, as float32 (every grid point in [-1, 1] is one)."""
    return (torch.round(scores * SCALE) / SCALE).float()


def _allowed(fmr: float, impostors: int) -> int:
    """floor(fmr x impostors), the false matches an FMR allows, with the product's rounding
    (0.29 x 100 is 28.999999999999996 in floating point) taken back."""
    return math.floor(fmr * impostors * (1 + 1e-12))


def _histogram(scores: torch.Tensor) -> torch.Tensor:
    """Counts in :data:`HISTOGRAM_BINS` equal bins over [-1, 1] (1 in the last): a bincount,
    which, unlike ``torch.histc``, CUDA runs under deterministic algorithms."""
    bins = ((scores.double() + 1) / 2 * HISTOGRAM_BINS).long().clamp(0, HISTOGRAM_BINS - 1)
    return torch.bincount(bins, minlength=HISTOGRAM_BINS)


def pair_scores(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of each row pair ``(left[i], right[i])``, as :func:`verification`
    scores them (float64, rounded to a multiple of 2^-24)."""
    return _rounded((_unit(left) * _unit(right)).sum(dim=1))


@dataclass(frozen=True)
class Verification:
    """The counts every verification figure of a split comes from (see the module docstring).

    ``genuine``: the matching pairs' scores, ascending. ``impostors_from[j]``: how many
    non-matching pairs score ``genuine[j]`` or more (``impostors_from[N]`` = 0). ``greater`` and
    ``equal``: over all (matching, non-matching) combinations, how many have the matching pair
    above, and level. ``top_impostors``: the highest non-matching scores, descending, as many as
    the largest calibrated FMR needs. ``above``: for each threshold asked, how many
    non-matching pairs score above it. ``genuine_histogram``, ``impostor_histogram``: counts in
    :data:`HISTOGRAM_BINS` bins over [-1, 1].
    """

    genuine: torch.Tensor
    impostors: int
    impostors_from: torch.Tensor
    greater: int
    equal: int
    top_impostors: torch.Tensor
    above: dict[float, int]
    genuine_histogram: torch.Tensor
    impostor_histogram: torch.Tensor

    @property
    def pairs(self) -> int:
        return len(self.genuine)

    def roc_auc(self) -> float:
        total = self.pairs * self.impostors
        return (self.greater + 0.5 * self.equal) / total if total else math.nan

    def roc(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ROC curve's corners ``(fmr, tmr)``, from (1, 1) down to (0, 0): one per matching
        score (the threshold just below it), exact."""
        count = self.pairs
        below = torch.searchsorted(self.genuine, self.genuine)  # matching pairs below each
        tmr = torch.cat([torch.ones(1), (count - below).double() / count, torch.zeros(1)])
        fmr = self.impostors_from.double() / max(1, self.impostors)
        return torch.cat([torch.ones(1), fmr]), tmr.double()

    def equal_error_rate(self) -> float:
        """min over t of max(FMR(t), 1 - TMR(t)). TMR changes at matching scores only, and for
        a given TMR the lowest FMR is the threshold just below the next matching score: so the
        thresholds just below each matching score (and one above all) are every candidate."""
        if not self.impostors:
            return math.nan
        count = self.pairs
        below = torch.searchsorted(self.genuine, self.genuine).double() / count
        fnmr = torch.cat([below, torch.ones(1, dtype=torch.float64)])
        fmr = self.impostors_from.double() / self.impostors
        return torch.maximum(fnmr, fmr).min().item()

    def threshold(self, fmr: float) -> float:
        """The threshold whose FMR on this split is at most ``fmr`` and whose TMR is highest:
        the (floor(fmr M) + 1)-th highest non-matching score (a pair above it is a look-alike);
        -inf when every non-matching pair may match."""
        allowed = _allowed(fmr, self.impostors)
        if allowed >= self.impostors:
            return -math.inf
        if allowed >= len(self.top_impostors):
            raise ValueError(f"FMR {fmr:g} needs more kept non-matching scores")
        return float(self.top_impostors[allowed])

    def kept_fmr(self, threshold: float) -> float:
        """The FMR on this split of a threshold from :meth:`threshold` (counted among the kept
        top non-matching scores)."""
        return int((self.top_impostors > threshold).sum()) / self.impostors

    def rates(self, threshold: float) -> tuple[float, float]:
        """``(TMR, FMR)`` of ``threshold`` on this split (it must be among those counted)."""
        tmr = (self.genuine > threshold).double().mean().item() if self.pairs else math.nan
        above = self.above.get(threshold)
        if above is None:
            raise KeyError(f"threshold {threshold} was not counted")
        return tmr, above / self.impostors if self.impostors else math.nan

    def metrics(self, fmr_targets: Sequence[float] = FMR_TARGETS) -> dict[str, float]:
        """``roc_auc``, ``eer``, and for each target f ``tmr@fmr<f>`` and ``threshold@fmr<f>``."""
        metrics = {"roc_auc": self.roc_auc(), "eer": self.equal_error_rate()}
        for fmr in fmr_targets:
            threshold = self.threshold(fmr) if self.impostors else math.nan
            tmr = (self.genuine > threshold).double().mean().item()
            metrics[f"tmr@{fmr_name(fmr)}"] = tmr if self.impostors else math.nan
            metrics[f"threshold@{fmr_name(fmr)}"] = threshold
        return metrics


def verification(
    left: torch.Tensor,
    right: torch.Tensor,
    fmr_targets: Sequence[float] = FMR_TARGETS,
    thresholds: Sequence[float] = (),
    block_elements: int = 1 << 22,
) -> Verification:
    """The :class:`Verification` counts of the pairs ``(left[i], right[i])`` against every
    ``(left[i], right[j])``, ``j != i``, with the top non-matching scores the largest of
    ``fmr_targets`` needs and the non-matching pairs above each of ``thresholds``."""
    count = len(left)
    left, right = _unit(left), _unit(right)
    genuine = torch.sort(_rounded((left * right).sum(dim=1))).values
    impostors = count * (count - 1)
    keep = min(impostors, _allowed(max(fmr_targets, default=0), impostors) + 1)
    top = genuine.new_empty(0)
    counts = torch.zeros(count + 1, dtype=torch.long, device=genuine.device)
    greater = equal = 0
    above = dict.fromkeys(thresholds, 0)
    histograms = [_histogram(genuine), torch.zeros_like(_histogram(genuine))]
    block = max(1, block_elements // max(1, count))
    for start in range(0, count, block):
        rows = left[start : start + block]
        scores = _rounded(rows @ right.T)
        off_diagonal = torch.ones_like(scores, dtype=torch.bool)
        off_diagonal[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = False
        scores = scores[off_diagonal]
        # How many matching scores are at most / below each non-matching one.
        at_most = torch.searchsorted(genuine, scores, right=True)
        below = torch.searchsorted(genuine, scores)
        greater += int((count - at_most).sum())
        equal += int((at_most - below).sum())
        counts += torch.bincount(at_most, minlength=count + 1)
        for threshold in above:
            above[threshold] += int((scores > threshold).sum())
        histograms[1] += _histogram(scores)
        if keep:  # the block's own highest first: the merge then sorts at most 2 keep
            scores = torch.topk(scores, min(keep, len(scores))).values
            top = torch.topk(torch.cat([top, scores]), min(keep, len(top) + len(scores))).values
    # impostors_from[j] = #{non-matching s : at_most(s) > j}, i.e. s >= genuine[j].
    impostors_from = counts.flip(0).cumsum(0).flip(0) - counts
    return Verification(
        genuine=genuine.cpu(),
        impostors=impostors,
        impostors_from=impostors_from.cpu(),
        greater=greater,
        equal=equal,
        top_impostors=top.cpu(),
        above=above,
        genuine_histogram=histograms[0].cpu(),
        impostor_histogram=histograms[1].cpu(),
    )
