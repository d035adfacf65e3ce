"""``lightning-siamese search``: rank a gallery of images by cosine similarity to query images."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_siamese.cli.registry import batch_size, num_workers, output_file, positive_int
from lightning_siamese.files import display_path
from lightning_siamese.retrieval.index_settings import KINDS, IndexSettings

if TYPE_CHECKING:
    from lightning_siamese.applications.gallery import Gallery
    from lightning_siamese.applications.search import SearchResult


def gallery_line(gallery: Gallery) -> str:
    """``gallery: 1,234 images (1,200 from cache, 34 embedded) in 3.2 s``."""
    parts = [f"{gallery.cached:,} from cache", f"{gallery.embedded:,} embedded"]
    if gallery.unreadable:
        parts.append(f"{len(gallery.unreadable):,} unreadable skipped")
    return f"gallery: {len(gallery.paths):,} images ({', '.join(parts)}) in {gallery.seconds:.1f} s"


def format_results(result: SearchResult) -> str:
    """Each query's path, then its matches: rank, cosine score, path relative to the gallery."""
    lines = []
    for query, matches in zip(result.queries.paths, result.matches, strict=True):
        lines.append(f"query: {display_path(query)}")
        width = len(str(len(matches)))
        lines.extend(
            f"  {rank:>{width}}  {score:.4f}  {display_path(path)}"
            for rank, (path, score) in enumerate(matches, start=1)
        )
        if not matches:
            lines.append("  (no match)")
    return "\n".join(lines)


def results_json(args: argparse.Namespace, result: SearchResult) -> dict[str, Any]:
    """The ``--json`` document."""
    gallery, queries = result.gallery, result.queries
    return {
        "gallery": str(args.gallery),
        "checkpoint": str(args.ckpt),
        "top_k": result.top_k,
        "index": result.index,
        "queries": [
            {
                "query": str(query),
                "matches": [
                    {"rank": rank, "path": path, "score": score}
                    for rank, (path, score) in enumerate(matches, start=1)
                ],
            }
            for query, matches in zip(queries.paths, result.matches, strict=True)
        ],
        "cached": gallery.cached,
        "embedded": gallery.embedded,
        "images": len(gallery.paths),
        "unreadable": [
            {"path": path, "reason": reason}
            for path, reason in [*gallery.unreadable, *queries.unreadable]
        ],
        "skipped": [
            {"path": path, "reason": reason}
            for path, reason in [*gallery.skipped, *queries.skipped]
        ],
        "montage": str(args.out),
    }


def warning_lines(result: SearchResult, gallery_root: Path) -> list[str]:
    """Notes about the cache, then one line per file that was skipped, with its reason."""
    gallery, queries = result.gallery, result.queries
    lines = list(gallery.notes)
    lines += [f"warning: skipped {path}: {reason}" for path, reason in gallery.skipped]
    lines += [
        f"warning: skipped unreadable image {display_path(gallery_root / path)}: {reason}"
        for path, reason in gallery.unreadable
    ]
    lines += [f"warning: skipped {path}: {reason}" for path, reason in queries.skipped]
    lines += [
        f"warning: skipped unreadable query {display_path(path)}: {reason}"
        for path, reason in queries.unreadable
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-siamese search",
        description="Find the gallery images most similar to query images (cosine similarity).",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint written by `fit`")
    parser.add_argument(
        "--gallery", type=Path, required=True, help="folder searched (all images, recursively)"
    )
    parser.add_argument("--query", type=Path, required=True, help="an image file or a folder")
    parser.add_argument("--top-k", type=positive_int, default=5, help="matches per query")
    parser.add_argument(
        "--out",
        type=output_file,
        default=Path("search.png"),
        help="montage PNG (default: search.png)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an --out file that search did not write"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--batch-size", type=batch_size, default=64, help="1 to 65536")
    parser.add_argument("--num-workers", type=num_workers, default=2, help="0 to 256")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument(
        "--include-self",
        action="store_true",
        help="keep a query that is a gallery image in its own results",
    )
    parser.add_argument("--no-cache", action="store_true", help="embed the whole gallery anew")
    parser.add_argument(
        "--rerank",
        choices=("none", "csls"),
        help="csls: re-rank (exact search), lowering the gallery images that are near most "
        "queries; needs at least --rerank-k queries (a folder); none: plain cosine (default: "
        "the checkpoint's model.rerank, where it can run)",
    )
    parser.add_argument(
        "--rerank-k", type=positive_int, help="CSLS's nearest queries (default: the checkpoint's)"
    )
    parser.add_argument(
        "--index",
        choices=KINDS,
        default="auto",
        help="exact search, or an approximate faiss index (ivf, hnsw) kept beside the cache and "
        "updated as files change; auto: ivf from 100,000 images with faiss installed, else exact",
    )
    parser.add_argument("--lists", type=positive_int, default=None, help="IVF cells (4 sqrt N)")
    parser.add_argument(
        "--probes", type=positive_int, default=None, help="IVF cells scanned a query (lists/128)"
    )
    parser.add_argument("--neighbors", type=positive_int, default=32, help="HNSW links (M)")
    parser.add_argument(
        "--ef-search", type=positive_int, default=128, help="HNSW candidates explored a query"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder for the gallery cache (default: GALLERY/.lightning-siamese, or "
        "$XDG_CACHE_HOME/lightning-siamese/search when the gallery is not writable)",
    )
    return parser


def main(args: Sequence[str] | None = None) -> int:
    parsed = build_parser().parse_args(None if args is None else list(args))
    from lightning_siamese.applications.search import search, write_montage  # after parsing
    from lightning_siamese.outputs import claim_file
    from lightning_siamese.retrieval.plots import written_here

    claim_file(parsed.out, "the montage", parsed.force, written_here)  # before any work

    result = search(
        parsed.ckpt,
        parsed.gallery,
        parsed.query,
        top_k_matches=parsed.top_k,
        include_self=parsed.include_self,
        use_cache=not parsed.no_cache,
        cache_dir=parsed.cache_dir,
        batch_size=parsed.batch_size,
        num_workers=parsed.num_workers,
        device=parsed.device,
        index=parsed.index,
        index_settings=IndexSettings(
            lists=parsed.lists,
            probes=parsed.probes,
            neighbors=parsed.neighbors,
            ef_search=parsed.ef_search,
        ),
        rerank=parsed.rerank,
        rerank_k=parsed.rerank_k,
    )
    for line in warning_lines(result, parsed.gallery):
        print(line, file=sys.stderr)
    log = sys.stderr if parsed.json else sys.stdout
    print(gallery_line(result.gallery), file=log)
    if result.index_note:
        print(f"index: {result.index_note}", file=log)
    if parsed.json:
        print(json.dumps(results_json(parsed, result), indent=2))
    else:
        print(format_results(result))
    print(write_montage(parsed.out, result), file=log)
    return 0
