"""The README's results table: the demo config trained and tested, and frozen ImageNet features
on the same test split, from the current code.

    .venv/bin/python benchmarks/demo_results.py                    # data seed 0
    .venv/bin/python benchmarks/demo_results.py --seeds 0 1 2
    .venv/bin/python benchmarks/demo_results.py --tag mates -- --data.group_mates_as_negatives true

Each seed is one group split of the emoji set (``--data.seed``): ``fit -c configs/demo.yaml``,
then ``test`` on its best-validation checkpoint, each in its own process, as ``scripts/demo.sh``
does. Printed per seed: validation recall@1 before training (step 0) and at the best epoch,
test recall@1/5/10 and MRR, fit + test seconds; then the frozen-feature baseline on that test
split (EfficientNet-Lite0 with its ImageNet weights, 224 px, global average pooling of its last
feature map, cosine retrieval); then each fit's time-quality curve (validation recall@1 after each
epoch against minutes since the fit started, timed by ``benchmarks/validation_clock.py``), and
mean and standard deviation over the seeds. Arguments after
``--`` go to ``fit`` and ``test`` (settings to compare). Needs ``data/emoji`` (``lightning-siamese
data emoji --out data/emoji``, or the demo builds it with npm).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHOWN = ("recall@1", "recall@5", "recall@10", "mrr")
#: The test split's verification figures (the match threshold: chosen on validation).
VERIFICATION = (
    "roc_auc",
    "eer",
    "tmr@fmr0.01",
    "tmr@fmr0.001",
    "tmr@val_threshold",
    "fmr@val_threshold",
)


def metrics_rows(run: Path, version: int) -> list[dict[str, str]]:
    path = run / "lightning_logs" / f"version_{version}" / "metrics.csv"
    return list(csv.DictReader(path.open(encoding="utf-8")))


def run_demo(seed: int, extra: list[str], run: Path) -> dict[str, Any]:
    """fit + test of configs/demo.yaml on the split of ``seed``; the logged figures."""
    shutil.rmtree(run, ignore_errors=True)  # a run of its own: one fit log, one test log
    common = ["-c", "configs/demo.yaml", f"--trainer.default_root_dir={run}", f"--data.seed={seed}"]
    command = [sys.executable, "-m", "lightning_siamese"]
    path = os.pathsep.join(filter(None, [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg", "PYTHONPATH": path}
    clock = {  # the time of each validation: the time-quality curve
        "class_path": "validation_clock.ValidationClock",
        "init_args": {"path": str(run / "clock.jsonl")},
    }
    started = time.time()
    fit = [*command, "fit", *common, *extra, f"--trainer.callbacks+={json.dumps(clock)}"]
    subprocess.run(fit, cwd=REPO, env=env, check=True)
    fitted = time.time()
    (best,) = sorted((run / "checkpoints").glob("epoch*-recall1-*.ckpt"))
    test = [*command, "test", *common, *extra, f"--ckpt_path={best}"]
    subprocess.run(test, cwd=REPO, env=env, check=True)
    seconds = time.time() - started
    validation = [float(r["val/recall@1"]) for r in metrics_rows(run, 0) if r.get("val/recall@1")]
    (tested,) = [r for r in metrics_rows(run, 1) if r.get("test/recall@1")]
    result: dict[str, Any] = {
        "val_before": validation[0],
        "val_best": max(validation[1:]),
        "seconds": seconds,
        "fit_seconds": fitted - started,
    }
    lines = (json.loads(line) for line in (run / "clock.jsonl").read_text().splitlines())
    result["curve"] = [(round(p["time"] - started, 1), p["recall@1"]) for p in lines]
    result.update({name: float(tested[f"test/{name}"]) for name in (*SHOWN, *VERIFICATION)})
    calibration = torch.load(best, weights_only=True)["match_threshold"]
    result["val_threshold"] = calibration["threshold"]
    result["test_pairs"] = float(tested["test/pairs"])
    return result


def frozen_baseline(run: Path) -> dict[str, float]:
    """Frozen ImageNet EfficientNet-Lite0 features, 224 px, on the run's test split."""
    from generalisation import frozen_embeddings  # the same baseline as the other checks

    from lightning_siamese.data.pairs import discover_pairs
    from lightning_siamese.data.splits import read_split
    from lightning_siamese.retrieval.ranks import rank_metrics, retrieval_ranks

    split = read_split(run / "split.csv")
    pairs = [p for p in discover_pairs(REPO / "data" / "emoji").pairs if split[p.name] == "test"]
    files = [path for pair in pairs for path in (pair.left, pair.right)]
    features = frozen_embeddings("timm/tf_efficientnet_lite0", files)
    metrics = rank_metrics(retrieval_ranks(features[0::2], features[1::2]))
    return {name: metrics[name] for name in SHOWN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tag", default="demo", help="name of this setting in the run folders")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "demo-results")
    parser.add_argument("extra", nargs="*", help="after --: arguments for fit and test")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        run = args.runs / f"{args.tag}-seed{seed}"
        result = run_demo(seed, args.extra, run)
        result.update({f"frozen_{k}": v for k, v in frozen_baseline(run).items()})
        result["seed"] = seed
        results.append(result)
        print(json.dumps(result), flush=True)

    print(f"\nsetting: {args.tag} {' '.join(args.extra)}".rstrip())
    header = "| data seed | test pairs | val R@1 step 0 -> best | " + " | ".join(SHOWN)
    print(header + " | frozen R@1 | frozen R@5 | fit + test |")
    print("|" + "---|" * (len(SHOWN) + 6))
    for r in results:
        figures = " | ".join(f"{r[name]:.3f}" for name in SHOWN)
        print(
            f"| {r['seed']} | {r['test_pairs']:.0f} | {r['val_before']:.3f} -> {r['val_best']:.3f} "
            f"| {figures} | {r['frozen_recall@1']:.3f} | {r['frozen_recall@5']:.3f} "
            f"| {r['seconds'] / 60:.1f} min |"
        )
    print(
        "\nverification on the test split (all non-matching left/right pairs; the threshold "
        "chosen on validation for FMR 0.01):"
    )
    print(
        "| data seed | ROC AUC | EER | TMR@FMR 1e-2 | TMR@FMR 1e-3 | threshold "
        "| test TMR | test FMR |"
    )
    print("|" + "---|" * 8)
    for r in results:
        figures = [f"{r[name]:.3f}" for name in VERIFICATION[:4]]
        figures += [f"{r['val_threshold']:.3f}", f"{r['tmr@val_threshold']:.3f}"]
        print(f"| {r['seed']} | {' | '.join(figures)} | {r['fmr@val_threshold']:.4f} |")
    print("\ntime-quality curve: validation recall@1 after each epoch, minutes since fit start")
    for r in results:
        points = ", ".join(f"{seconds / 60:.1f} {recall:.3f}" for seconds, recall in r["curve"])
        print(f"seed {r['seed']} (fit {r['fit_seconds'] / 60:.1f} min): {points}")
    if len(results) > 1:
        print(f"fit + test minutes: mean {statistics.mean(r['seconds'] for r in results) / 60:.1f}")
        for name in ("val_best", *SHOWN, *VERIFICATION, "frozen_recall@1"):
            values = [r[name] for r in results]
            print(f"{name}: mean {statistics.mean(values):.3f}, sd {statistics.stdev(values):.3f}")


if __name__ == "__main__":
    main()
