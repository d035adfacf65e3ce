"""Approximate gallery search at 1M images: build time, queries/s, memory, recall@10 against
exact search, for the indexes ``search --index ivf|hnsw`` builds.

    python benchmarks/ann_index.py                          # 1M vectors, IVF and HNSW
    python benchmarks/ann_index.py --kinds ivf --size 200000 --noise 1.0

The gallery is synthetic and clustered, like the embeddings of a trained model: ``--clusters``
centres drawn from a standard normal in 256-d, each with 10 sub-centres at 0.7x the centre's
scale, and every vector a sub-centre plus Gaussian noise of scale ``--noise``. At 1.5 (the
default) a vector's cosine is ~0.4 to its sub-centre's mates, ~0.27 to its cluster's and ~0
to the rest, and some true neighbours lie in other clusters; at 1.0 every index finds all
of them, at 2.5 the neighbours are nearly random. Cluster sizes follow a Zipf-like law. The
queries are new draws of the same mixture. Exact search is ``retrieval.top_k`` (faiss's flat
index: what ``search`` does without an index); the approximate ones are
:class:`lightning_siamese.retrieval.ann_index.ApproximateIndex` with its defaults, then swept
over their search parameter. Memory: the index's serialised size and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import faiss
import torch

from lightning_siamese.retrieval.ann_index import ApproximateIndex
from lightning_siamese.retrieval.index_settings import IndexSettings, default_probes
from lightning_siamese.retrieval.nearest import top_k


def mixture(clusters: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The sub-centres (10 per cluster) and their Zipf-like weights."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)
    noise = 0.7 * torch.randn(10 * clusters, dim, generator=generator)
    subs = centres.repeat_interleave(10, 0) + noise
    weights = 1.0 / torch.arange(1, 10 * clusters + 1).double() ** 0.5
    return subs, weights[torch.randperm(len(weights), generator=generator)]


def draw(
    subs: torch.Tensor, weights: torch.Tensor, count: int, seed: int, noise: float
) -> torch.Tensor:
    """``count`` vectors of the mixture: a sub-centre plus Gaussian noise of that scale."""
    generator = torch.Generator().manual_seed(seed)
    members = torch.multinomial(weights, count, replacement=True, generator=generator)
    out = torch.empty(count, subs.shape[1])
    for start in range(0, count, 100_000):  # in chunks: no second full-size temporary
        rows = members[start : start + 100_000]
        jitter = noise * torch.randn(len(rows), subs.shape[1], generator=generator)
        out[start : start + len(rows)] = subs[rows] + jitter
    return out


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.numel()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--noise", type=float, default=1.5, help="scale of each vector's noise")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    parser.add_argument("--probes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    subs, weights = mixture(args.clusters, args.dim)
    gallery = draw(subs, weights, args.size, seed=1, noise=args.noise)
    queries = draw(subs, weights, args.queries, seed=2, noise=args.noise)
    paths = [f"{i:07d}" for i in range(args.size)]
    stats = dict.fromkeys(paths, (0, 0))
    print(
        f"{args.size:,} gallery vectors, {args.dim}-d, {args.clusters:,} clusters x 10 "
        f"sub-centres, noise {args.noise}; {args.queries:,} queries; top-{args.k}; "
        f"{args.threads} threads "
        f"(data made in {time.perf_counter() - started:.0f} s)"
    )

    started = time.perf_counter()
    _, truth = top_k(queries, gallery, args.k, backend="faiss")
    exact_seconds = time.perf_counter() - started
    exact_qps = args.queries / exact_seconds
    print(f"exact (faiss flat): {exact_qps:,.0f} queries/s ({exact_seconds:.1f} s)")
    print(
        f"{'index':<30} {'build s':>8} {'size':>9} {'peak RSS':>9} {'param':>12} "
        f"{'recall@10':>9} {'queries/s':>10} {'vs exact':>8}"
    )
    for kind in args.kinds:
        settings = IndexSettings(kind)
        started = time.perf_counter()
        index = ApproximateIndex.build(settings, paths, stats, gallery)
        build = time.perf_counter() - started
        size = len(faiss.serialize_index(index.index)) / 2**30
        name = index.describe().replace("an ", "").replace(f"{args.size:,} images, ", "")
        sweep = args.probes if kind == "ivf" else args.ef_search
        default = default_probes(index.index.nlist) if kind == "ivf" else settings.ef_search
        values = sorted({*sweep, default})
        for value in values:
            tuned = (
                IndexSettings(kind, probes=value)
                if kind == "ivf"
                else IndexSettings(kind, ef_search=value)
            )
            index.settings = tuned
            started = time.perf_counter()
            _, found = index.search(queries, args.k, paths)
            seconds = time.perf_counter() - started
            qps = args.queries / seconds
            label = ("probes" if kind == "ivf" else "ef_search") + f" {value}"
            label += "*" if value == default else ""
            print(
                f"{name:<30} {build:>8.1f} {size:>7.2f} G {peak_rss_gib():>7.2f} G {label:>12} "
                f"{recall(found, truth):>9.3f} {qps:>10,.0f} {qps / exact_qps:>7.1f}x"
            )
    print("*: the default; recall@10: share of the exact top-10 found; size: the index file")


if __name__ == "__main__":
    main()
