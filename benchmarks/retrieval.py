"""Exact top-k retrieval at scale, both paths of ``retrieval.top_k``: faiss and torch blocks.

    python benchmarks/retrieval.py                 # N = 1k, 10k, 100k; faiss and torch
    python benchmarks/retrieval.py --sizes 100000 --paths torch --block-size 2048

N random 256-d queries against N gallery embeddings, exact cosine top-10 through
``retrieval.top_k`` (the function ``search``, ``evaluate`` and the split reports use), once
with ``backend="faiss"`` and once with ``backend="torch"``; each size and path in a fresh
process so its peak memory (max RSS) is its own. The torch path ranks ``--block-size`` query
rows a block (the library's default is 2**24 scores a block, 168 rows at 100k).

Exactness is checked against a float64 full sort, not against either path: a few sampled
query rows from every block of 1,024 queries get their similarities to the whole gallery in
float64, sorted; a row is exact when the float64 similarities of the rows returned equal the
float64 top-k (so tied neighbours may come in any order) within 1e-5, and the scores returned
equal those similarities within 1e-5. The two paths' neighbours are also compared.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 1e-5


def sampled_rows(size: int, block: int = 1024, per_block: int = 2) -> list[int]:
    """``per_block`` rows from every block of ``block`` queries: its first and its middle."""
    rows = []
    for start in range(0, size, block):
        stop = min(start + block, size)
        rows += sorted({start, (start + stop) // 2})[:per_block]
    return rows


def run_one(
    size: int, dim: int, k: int, block_size: int, threads: int, path: str, out: Path
) -> dict[str, object]:
    import torch

    from lightning_siamese.retrieval.nearest import top_k

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(size, dim, generator=generator)
    gallery = torch.randn(size, dim, generator=generator)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    scores, indices = top_k(
        queries,
        gallery,
        k,
        block_elements=block_size * size,
        backend=path,  # type: ignore[arg-type]
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save({"indices": indices}, out)

    rows = sampled_rows(size)
    q = torch.nn.functional.normalize(queries[rows].double(), dim=1)
    g = torch.nn.functional.normalize(gallery.double(), dim=1)
    similarity = q @ g.T
    best = similarity.sort(dim=1, descending=True).values[:, :k]
    found = similarity.gather(1, indices[rows])
    exact_rows = (found - best).abs().max(dim=1).values <= TOLERANCE
    score_error = (scores[rows].double() - found).abs().max().item()
    return {
        "n": size,
        "path": path,
        "seconds": seconds,
        "peak_rss_gib": peak / 2**30,
        "above_inputs_gib": (peak - baseline) / 2**30,
        "checked_rows": len(rows),
        "exact_rows": int(exact_rows.sum()),
        "score_error": score_error,
        "queries_per_second": size / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--paths", nargs="+", default=["faiss", "torch"], choices=["faiss", "torch"]
    )
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-retrieval"))
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = run_one(
            args.sizes[0],
            args.dim,
            args.k,
            args.block_size,
            args.threads,
            args.paths[0],
            args.work,
        )
        print(json.dumps(result))
        return
    import faiss  # the faiss path needs it: fail here, not inside a child
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"exact top-{args.k}, cosine, {args.dim}-d, {args.threads} threads; torch path: query "
        f"blocks of {args.block_size}; faiss {faiss.__version__} (IndexFlatIP), torch "
        f"{torch.__version__}"
    )
    print(
        f"{'N':>8} {'path':>6} {'seconds':>9} {'queries/s':>10} {'peak RSS':>9} "
        f"{'above inputs':>13} {'exact rows':>11} {'score err':>9} {'vs torch':>8}"
    )
    for size in args.sizes:
        results = {}
        for path in args.paths:
            out = args.work / f"{size}-{path}.pt"
            command = [sys.executable, __file__, "--one", "--sizes", str(size), "--paths", path]
            command += ["--dim", str(args.dim), "--k", str(args.k), "--work", str(out)]
            command += ["--block-size", str(args.block_size), "--threads", str(args.threads)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[path] = r = json.loads(output.strip().splitlines()[-1])
        for path, r in results.items():
            ratio = (
                f"{results['torch']['seconds'] / r['seconds']:>7.2f}x" if "torch" in results else ""
            )
            print(
                f"{r['n']:>8,} {path:>6} {r['seconds']:>9.2f} {r['queries_per_second']:>10,.0f} "
                f"{r['peak_rss_gib']:>7.2f} G {r['above_inputs_gib']:>11.2f} G "
                f"{r['exact_rows']:>5}/{r['checked_rows']:<5} {r['score_error']:>9.1e} {ratio}"
            )
        if len(results) == 2:
            a, b = (torch.load(args.work / f"{size}-{p}.pt")["indices"] for p in args.paths)
            same = (a == b).all(dim=1).float().mean().item()
            print(
                f"{'':>8} both paths: the same neighbours in the same order for {same:.2%} "
                "of all queries (the rest: tied scores in another order or a float32 rounding)"
            )
    print(
        f"exact rows: sampled queries (2 per block of 1,024) whose results are the float64 "
        f"top-{args.k} within {TOLERANCE:g}; score err: largest |score - float64 similarity|"
    )


if __name__ == "__main__":
    main()
