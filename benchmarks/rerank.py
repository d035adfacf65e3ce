"""CSLS re-ranking against plain cosine on the demo's splits, from the runs of
``benchmarks/demo_results.py`` (their best checkpoints and split.csv).

    .venv/bin/python benchmarks/rerank.py                      # runs/demo-results/demo-seed{0,1,2}
    .venv/bin/python benchmarks/rerank.py --runs DIR --tag demo --seeds 0 1 2

For each run: the validation and test pairs embedded by its best checkpoint, then left -> right
retrieval with plain cosine and with CSLS for each k, through the package's own split metrics.
k is chosen on validation (the mean validation recall@1 over the runs); the test figures of that
k are printed beside cosine's. The plain-cosine test recall@1 is also checked against the one the
run's ``test`` logged (the same checkpoint and pairs).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_siamese.applications.inference import embed_paths, load_model  # noqa: E402
from lightning_siamese.data.pairs import discover_pairs  # noqa: E402
from lightning_siamese.data.splits import read_split  # noqa: E402
from lightning_siamese.retrieval.report import SplitEmbeddings  # noqa: E402

KS = (1, 3, 5, 10, 20)
SHOWN = ("recall@1", "recall@5", "recall@10", "mrr")


def logged_test_recall(run: Path) -> float:
    path = run / "lightning_logs" / "version_1" / "metrics.csv"
    rows = [r for r in csv.DictReader(path.open(encoding="utf-8")) if r.get("test/recall@1")]
    return float(rows[0]["test/recall@1"])


def run_figures(run: Path, root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """split -> setting (``cosine``, ``csls-k``) -> metrics."""
    (best,) = sorted((run / "checkpoints").glob("epoch*-recall1-*.ckpt"))
    model = load_model(best, "cpu")
    split_of = read_split(run / "split.csv")
    pairs = discover_pairs(root).pairs
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("val", "test"):
        chosen = [pair for pair in pairs if split_of.get(pair.name) == split]
        embeddings = embed_paths(model, [p for pair in chosen for p in (pair.left, pair.right)])
        left, right = embeddings[0::2], embeddings[1::2]
        paths = [pair.left for pair in chosen], [pair.right for pair in chosen]
        settings = {"cosine": ("none", 10), **{f"csls-{k}": ("csls", k) for k in KS}}
        figures[split] = {
            name: SplitEmbeddings(*paths, left, right, right, rerank=rerank, rerank_k=k).metrics()
            for name, (rerank, k) in settings.items()
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "demo-results")
    parser.add_argument("--tag", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "emoji")
    args = parser.parse_args()
    results = {}
    for seed in args.seeds:
        run = args.runs / f"{args.tag}-seed{seed}"
        results[seed] = run_figures(run, args.root)
        ours, logged = results[seed]["test"]["cosine"]["recall@1"], logged_test_recall(run)
        print(
            f"seed {seed}: plain-cosine test recall@1 {ours:.4f} (its `test` logged {logged:.4f})"
        )
    settings = list(results[args.seeds[0]]["val"])
    print("\nvalidation recall@1 (the choice of k):")
    print("| setting | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    means = {}
    for name in settings:
        values = [results[s]["val"][name]["recall@1"] for s in args.seeds]
        means[name] = statistics.mean(values)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {means[name]:.3f} |")
    # A tie goes to the larger k: its hubness averages more queries.
    chosen = max(
        (n for n in settings if n != "cosine"), key=lambda n: (means[n], settings.index(n))
    )
    print(f"\nchosen on validation: {chosen}; test:")
    print("| data seed | " + " | ".join(f"{m} cosine | {m} {chosen}" for m in SHOWN) + " |")
    print("|---|" + "---|" * (2 * len(SHOWN)))
    for seed in args.seeds:
        test = results[seed]["test"]
        cells = [f"{test[n][m]:.3f}" for m in SHOWN for n in ("cosine", chosen)]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    cells = []
    for m in SHOWN:
        for n in ("cosine", chosen):
            values = [results[s]["test"][n][m] for s in args.seeds]
            spread = f" ({statistics.stdev(values):.3f})" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
    print("| mean (sd) | " + " | ".join(cells) + " |")
    print("\nevery setting, test recall@1:")
    for name in settings:
        values = [results[s]["test"][name]["recall@1"] for s in args.seeds]
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name}: {shown} (mean {statistics.mean(values):.3f})")


if __name__ == "__main__":
    main()
