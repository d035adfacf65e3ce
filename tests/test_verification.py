"""Verification figures (ROC AUC, EER, TMR@FMR, the calibrated threshold) against a brute-force
reference written from their definitions, with ties, for any block size."""

from __future__ import annotations

import csv
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_args, tiny_model
from lightning_siamese.cli.main import main
from lightning_siamese.data.splits import read_split
from lightning_siamese.errors import ConfigError
from lightning_siamese.retrieval.metrics import split_metrics
from lightning_siamese.retrieval.verification import pair_scores, verification

FMRS = (0.1, 1e-2, 1e-3)


def reference(left: torch.Tensor, right: torch.Tensor) -> dict[str, object]:
    """Every score one by one (cosine on the grid of 2^-24); every threshold tried (a pair
    above it is a match)."""
    count = len(left)

    def score(i: int, j: int) -> float:
        cosine = float(F.cosine_similarity(left[i].double(), right[j].double(), dim=0))
        return round(cosine * 2**24) / 2**24

    genuine = [score(i, i) for i in range(count)]
    impostor = [score(i, j) for i in range(count) for j in range(count) if i != j]
    auc = sum((g > s) + 0.5 * (g == s) for g in genuine for s in impostor)
    auc /= len(genuine) * len(impostor)
    thresholds = [-math.inf, *sorted(set(genuine) | set(impostor))]

    def rates(t: float) -> tuple[float, float]:
        tmr = sum(g > t for g in genuine) / len(genuine)
        return tmr, sum(s > t for s in impostor) / len(impostor)

    table = {t: rates(t) for t in thresholds}
    eer = min(max(fmr, 1 - tmr) for tmr, fmr in table.values())
    result: dict[str, object] = {"roc_auc": auc, "eer": eer, "rates": rates}
    for f in FMRS:
        allowed = [t for t, (_, fmr) in table.items() if fmr <= f]
        result[f"tmr@fmr{f:g}"] = max(table[t][0] for t in allowed)
        result[f"threshold@fmr{f:g}"] = min(allowed)
    return result


def expected_score(left: torch.Tensor, right: torch.Tensor, i: int, j: int) -> float:
    cosine = float(F.cosine_similarity(left[i].double(), right[j].double(), dim=0))
    return round(cosine * 2**24) / 2**24


def embeddings(kind: str, seed: int, count: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        left = torch.randn(count, 6, generator=generator)
        return left, left + torch.randn(count, 6, generator=generator)
    # Small integer vectors: many scores tie exactly, within and across matching and
    # non-matching pairs, and some right images are copies of others.
    left = torch.randint(-1, 2, (count, 3), generator=generator).float()
    right = left + torch.randint(0, 2, (count, 3), generator=generator).float()
    left[left.abs().sum(1) == 0] = 1.0
    right[right.abs().sum(1) == 0] = 1.0
    right[count // 2 :] = right[: count - count // 2].clone()
    return left, right


@pytest.mark.parametrize("block_elements", [1, 50, 1 << 22], ids=["row", "rows", "one"])
@pytest.mark.parametrize(("kind", "seed"), [("gaussian", 0), ("lattice", 1), ("lattice", 2)])
def test_verification_matches_its_definition(kind: str, seed: int, block_elements: int) -> None:
    left, right = embeddings(kind, seed)
    expected = reference(left, right)
    counts = verification(left, right, FMRS, thresholds=(0.3, 0.7), block_elements=block_elements)
    metrics = counts.metrics(FMRS)
    assert counts.equal > 0 or kind == "gaussian"  # the lattice has ties across the two kinds
    for name in ("roc_auc", "eer", *(f"tmr@fmr{f:g}" for f in FMRS)):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-12), name
    for f in FMRS:
        assert metrics[f"threshold@fmr{f:g}"] == expected[f"threshold@fmr{f:g}"]
    for threshold in (0.3, 0.7):
        assert counts.rates(threshold) == pytest.approx(expected["rates"](threshold))  # type: ignore[operator]
    scores = torch.tensor(
        [[expected_score(left, right, i, j) for j in range(len(right))] for i in range(len(left))]
    )
    off = ~torch.eye(len(left), dtype=torch.bool)
    assert counts.genuine_histogram.tolist() == torch.histc(scores.diagonal(), 100, -1, 1).tolist()
    assert counts.impostor_histogram.tolist() == torch.histc(scores[off], 100, -1, 1).tolist()
    fmr, tmr = counts.roc()
    assert fmr[0] == tmr[0] == 1 and fmr[-1] == tmr[-1] == 0
    assert bool((fmr[1:] <= fmr[:-1]).all() and (tmr[1:] <= tmr[:-1]).all())


def test_known_answers() -> None:
    """Perfect separation, and a model that gives every pair the same score."""
    left = torch.eye(5)
    perfect = verification(left, left).metrics()
    assert perfect["roc_auc"] == 1 and perfect["eer"] == 0 and perfect["tmr@fmr0.001"] == 1
    same = verification(torch.ones(5, 3), torch.ones(5, 3)).metrics()
    assert same["roc_auc"] == 0.5 and same["eer"] == 1 and same["tmr@fmr0.01"] == 0


def test_split_metrics_carry_them_and_pair_scores_agree() -> None:
    left, right = embeddings("gaussian", 3)
    metrics = split_metrics(left, right, right.roll(1, 0), threshold=0.5)
    counts = verification(left, right, thresholds=(0.5,))
    assert metrics["roc_auc"] == counts.roc_auc()
    assert (metrics["tmr@val_threshold"], metrics["fmr@val_threshold"]) == counts.rates(0.5)
    assert torch.equal(torch.sort(pair_scores(left, right)).values, counts.genuine)


def split_embeddings(root: Path, run: Path, split: str, checkpoint: Path) -> tuple[Any, Any]:
    """The left and right embeddings of one split of a run, computed here from the files."""
    from lightning_siamese.applications.inference import embed_paths, load_model

    names = sorted(name for name, where in read_split(run / "split.csv").items() if where == split)
    paths = [root / side / f"{name}{suffix}" for name in names for side, suffix in SIDES]
    embeddings = embed_paths(load_model(checkpoint, "cpu"), paths)
    return embeddings[0::2], embeddings[1::2]


SIDES = (("left", ".jpg"), ("right", ".png"))


def test_fit_calibrates_on_validation_and_test_measures_it(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, run, checkpoint = trained_run
    stored = torch.load(checkpoint, weights_only=True)["match_threshold"]
    expected = reference(*split_embeddings(root, run, "val", checkpoint))
    assert stored["fmr_target"] == 0.01
    assert stored["threshold"] == pytest.approx(expected["threshold@fmr0.01"], abs=1e-6)
    assert stored["tmr"] == pytest.approx(expected["tmr@fmr0.01"])
    tmr, fmr = expected["rates"](stored["threshold"])  # type: ignore[operator]
    assert (stored["tmr"], stored["fmr"]) == pytest.approx((tmr, fmr)) and fmr <= 0.01
    # test: the validation's threshold measured on the test pairs, and said so.
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with caplog.at_level(logging.INFO):
        assert main(["test", *tiny_args(root, copy), f"--ckpt_path={checkpoint}"]) == 0
    logged = {
        k: v
        for row in csv.DictReader(next(copy.rglob("metrics.csv")).open())
        for k, v in row.items()
        if v
    }
    tmr, fmr = reference(*split_embeddings(root, run, "test", checkpoint))["rates"](
        stored["threshold"]
    )  # type: ignore[operator]
    assert float(logged["test/tmr@val_threshold"]) == pytest.approx(tmr)
    assert float(logged["test/fmr@val_threshold"]) == pytest.approx(fmr)
    assert "chosen on the validation split" in caplog.text
    assert "measured on the test split (pairs not used to choose it)" in caplog.text


def test_two_pairs_and_settings_out_of_range() -> None:
    left, right = embeddings("gaussian", 5, count=2)
    metrics = verification(left, right, FMRS).metrics(FMRS)
    expected = reference(left, right)
    for name in ("roc_auc", "eer", "tmr@fmr0.1"):
        assert metrics[name] == pytest.approx(expected[name]), name
    for fmr in (0, 1, -0.5, math.nan):
        with pytest.raises(ConfigError, match="match_fmr"):
            tiny_model(match_fmr=fmr)
    with pytest.raises(ConfigError, match="rerank_k"):
        tiny_model(rerank="csls", rerank_k=0)
