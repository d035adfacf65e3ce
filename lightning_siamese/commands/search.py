"""``lightning-siamese search``: rank a gallery of images by cosine similarity to query images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_siamese.gallery import (
    Gallery,
    ImageFile,
    InputError,
    _gather,
    cache_content,
    checkpoint_fingerprint,
    choose_cache_path,
    embed_files,
    gallery_images,
    load_cache,
    query_paths,
    save_cache,
    update_gallery,
)
from lightning_siamese.inference import load_model, pick_device
from lightning_siamese.pairs import display_path
from lightning_siamese.search import top_k, write_montage

if TYPE_CHECKING:
    from lightning_siamese.model import SiameseModel


# Output ----------------------------------------------------------------------------------------


def gallery_line(gallery: Gallery, seconds: float) -> str:
    """``gallery: 1,234 images (1,200 from cache, 34 embedded) in 3.2 s``."""
    parts = [f"{gallery.cached:,} from cache", f"{gallery.embedded:,} embedded"]
    if gallery.unreadable:
        parts.append(f"{len(gallery.unreadable):,} unreadable skipped")
    return f"gallery: {len(gallery.paths):,} images ({', '.join(parts)}) in {seconds:.1f} s"


def format_results(queries: Sequence[str], results: Sequence[Sequence[tuple[str, float]]]) -> str:
    """Each query's path, then its matches: rank, cosine score, path relative to the gallery."""
    lines = []
    for query, matches in zip(queries, results, strict=True):
        lines.append(f"query: {display_path(query)}")
        width = len(str(len(matches)))
        lines.extend(
            f"  {rank:>{width}}  {score:.4f}  {display_path(path)}"
            for rank, (path, score) in enumerate(matches, start=1)
        )
        if not matches:
            lines.append("  (no match)")
    return "\n".join(lines)


def results_json(
    args: argparse.Namespace,
    gallery: Gallery,
    queries: Sequence[str],
    results: Sequence[Sequence[tuple[str, float]]],
    unreadable_queries: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The ``--json`` document."""
    return {
        "gallery": str(args.gallery),
        "checkpoint": str(args.ckpt),
        "top_k": args.top_k,
        "queries": [
            {
                "query": query,
                "matches": [
                    {"rank": rank, "path": path, "score": score}
                    for rank, (path, score) in enumerate(matches, start=1)
                ],
            }
            for query, matches in zip(queries, results, strict=True)
        ],
        "cached": gallery.cached,
        "embedded": gallery.embedded,
        "images": len(gallery.paths),
        "unreadable": [
            {"path": path, "reason": reason}
            for path, reason in [*gallery.unreadable, *unreadable_queries]
        ],
    }


# Command ---------------------------------------------------------------------------------------


def build_gallery(
    args: argparse.Namespace, model: SiameseModel, images: Sequence[ImageFile]
) -> Gallery:
    """The gallery's embeddings, through the cache unless ``--no-cache``."""
    fingerprint = checkpoint_fingerprint(args.ckpt)
    image_size = int(model.hparams["image_size"])
    path, cache = None, None
    if not args.no_cache:
        path, note = choose_cache_path(args.gallery, fingerprint, args.cache_dir)
        if note:
            print(note, file=sys.stderr)
        cache = load_cache(path, fingerprint, image_size)
    gallery, changed = update_gallery(
        model, args.gallery, images, cache, args.batch_size, args.num_workers
    )
    if path is not None and changed:
        try:
            save_cache(path, cache_content(gallery, images, fingerprint, image_size))
        except OSError as error:
            print(f"note: could not write the cache {path}: {error}", file=sys.stderr)
    return gallery


def embed_queries(
    args: argparse.Namespace, model: SiameseModel, paths: Sequence[Path], gallery: Gallery
) -> tuple[list[Path], torch.Tensor, list[int | None], list[tuple[str, str]]]:
    """The readable queries, their embeddings, their own gallery row (or None), unreadable ones.

    A query that is a gallery image reuses the gallery's embedding.
    """
    root = args.gallery.resolve()
    rows = {path: row for row, path in enumerate(gallery.paths)}
    own: list[int | None] = []
    for path in paths:
        try:
            relative = path.resolve().relative_to(root).as_posix()
        except ValueError:
            relative = None
        own.append(rows.get(relative) if relative is not None else None)
    todo = [i for i, row in enumerate(own) if row is None]
    fresh, kept, failed = embed_files(
        model, [paths[i] for i in todo], args.batch_size, args.num_workers
    )
    fresh_rows = {todo[i]: row for row, i in enumerate(kept)}
    keep = [i for i in range(len(paths)) if own[i] is not None or i in fresh_rows]
    in_gallery = [row for row, i in enumerate(keep) if own[i] is not None]
    embedded = [row for row, i in enumerate(keep) if own[i] is None]
    gallery_rows = {i: row for i, row in enumerate(own) if row is not None}
    embeddings = _gather(
        len(keep),
        gallery.embeddings.shape[1],
        [
            (gallery.embeddings, in_gallery, [gallery_rows[keep[row]] for row in in_gallery]),
            (fresh, embedded, [fresh_rows[keep[row]] for row in embedded]),
        ],
    )
    unreadable = [(str(paths[todo[i]]), reason) for i, reason in failed]
    return [paths[i] for i in keep], embeddings, [own[i] for i in keep], unreadable


def search(args: argparse.Namespace) -> int:
    images = gallery_images(args.gallery)
    query_files = query_paths(args.query)
    model = load_model(args.ckpt, args.device)
    log = sys.stderr if args.json else sys.stdout

    started = time.perf_counter()
    gallery = build_gallery(args, model, images)
    for path, reason in gallery.unreadable:
        print(f"warning: skipped unreadable image {args.gallery / path}: {reason}", file=sys.stderr)
    print(gallery_line(gallery, time.perf_counter() - started), file=log)
    if not gallery.paths:
        raise InputError(f"gallery {args.gallery}: no readable image")

    queries, embeddings, own, bad_queries = embed_queries(args, model, query_files, gallery)
    for path, reason in bad_queries:
        print(f"warning: skipped unreadable query {path}: {reason}", file=sys.stderr)
    if not queries:
        raise InputError(f"query {args.query}: no readable image")

    ranked = top_k(
        embeddings,
        gallery.embeddings,
        args.top_k,
        exclude=None if args.include_self else own,
        device=pick_device(args.device),
    )
    results = [[(gallery.paths[row], score) for row, score in matches] for matches in ranked]
    names = [str(path) for path in queries]
    if args.json:
        document = results_json(args, gallery, names, results, bad_queries)
        document["montage"] = str(args.out)
        print(json.dumps(document, indent=2))
    else:
        print(format_results(names, results))
    print(write_montage(args.out, queries, gallery, results), file=log)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
    parser.add_argument("--top-k", type=_positive, default=5, help="matches per query")
    parser.add_argument(
        "--out", type=Path, default=Path("search.png"), help="montage PNG (default: search.png)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument("--num-workers", type=_non_negative, default=2)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument(
        "--include-self",
        action="store_true",
        help="keep a query that is a gallery image in its own results",
    )
    parser.add_argument("--no-cache", action="store_true", help="embed the whole gallery anew")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="folder for the gallery cache (default: GALLERY/.lightning-siamese, or "
        "$XDG_CACHE_HOME/lightning-siamese/search when the gallery is not writable)",
    )
    return parser


def main(args: Sequence[str] | None = None) -> int:
    return search(build_parser().parse_args(None if args is None else list(args)))
