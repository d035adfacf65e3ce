"""Exact top-k retrieval at scale: N queries against N gallery embeddings (256-d, cosine).

    python benchmarks/retrieval.py                 # N = 1k, 10k, 100k
    python benchmarks/retrieval.py --sizes 100000 --block-size 2048

Each size runs in a fresh process so its peak memory (max RSS) is its own. Reported: wall time
of the top-k (the project's ``retrieval.top_k``, the same code ``search`` and the split reports
use; ``--block-size`` query rows a block, where the library's default is 2**24 scores a block),
the peak RSS of the process, and the memory above the embeddings themselves. A check on
the first 100 queries compares against a full sort.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(size: int, dim: int, k: int, block_size: int, threads: int) -> dict[str, float]:
    import torch

    from lightning_siamese.retrieval import top_k

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(size, dim, generator=generator)
    gallery = torch.randn(size, dim, generator=generator)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    _, indices = top_k(queries, gallery, k, block_elements=block_size * size)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    check = min(100, size)
    normalized_q = torch.nn.functional.normalize(queries[:check], dim=1)
    normalized_g = torch.nn.functional.normalize(gallery, dim=1)
    expected = (normalized_q @ normalized_g.T).topk(k, dim=1)
    exact = bool(torch.equal(indices[:check], expected.indices))
    return {
        "n": size,
        "seconds": seconds,
        "peak_rss_gib": peak / 2**30,
        "above_inputs_gib": (peak - baseline) / 2**30,
        "inputs_gib": 2 * size * dim * 4 / 2**30,
        "exact": exact,
        "queries_per_second": size / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = run_one(args.sizes[0], args.dim, args.k, args.block_size, args.threads)
        print(json.dumps(result))
        return
    print(
        f"exact top-{args.k}, cosine, {args.dim}-d, query blocks of {args.block_size}, "
        f"{args.threads} threads"
    )
    print(f"{'N':>8} {'seconds':>9} {'queries/s':>10} {'peak RSS':>9} {'above inputs':>13} exact")
    for size in args.sizes:
        command = [sys.executable, __file__, "--one", "--sizes", str(size)]
        command += ["--dim", str(args.dim), "--k", str(args.k)]
        command += ["--block-size", str(args.block_size), "--threads", str(args.threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        r = json.loads(output.strip().splitlines()[-1])
        print(
            f"{r['n']:>8,} {r['seconds']:>9.2f} {r['queries_per_second']:>10,.0f} "
            f"{r['peak_rss_gib']:>7.2f} G {r['above_inputs_gib']:>11.2f} G {r['exact']}"
        )


if __name__ == "__main__":
    main()
