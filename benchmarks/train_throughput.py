"""Training throughput of the Keras example's model, and what each speed lever changes.

    python benchmarks/train_throughput.py --root data/bench-jpeg      # all measurements
    python benchmarks/train_throughput.py --only trainer loader       # some of them

The model is the Keras example's (ResNet50 frozen up to layer4[0], Flatten-Dense head, 200x200,
squared L2 triplet loss, Adam 1e-4); weights are random (``weights: none``: same compute, no
download).
Figures are images/s (3 per triplet) over timed steps after warm-up steps, one after the other
in this process, so the ratios are side by side:

- ``trainer``: the real SiameseDataModule + Lightning Trainer (JPEG decoding, DataLoader);
- ``compute``: the same training step on random tensors (no data loading): the model's ceiling;
- ``loader``: the DataLoader alone: is it faster than the model step?
- levers on the compute step: default vs fused Adam, channels_last, bf16 autocast,
  torch.compile, inference_mode for the frozen part, 1 vs 2 threads; on the loader: workers;
  on the trainer: the frozen-feature cache;
- ``frozen``: the frozen part's pass over many images (what the feature cache's build runs),
  channels-last against NCHW, in fp32 and under bf16 autocast, at ``--frozen-batch`` images a
  batch (compiled graphs of it: ``benchmarks/frozen_graph.py``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Inductor's compiled kernels are cached on disk: a fresh folder times a first compile.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))

import pytorch_lightning as pl
import torch

from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.training.model import SiameseModel


def ttl_model(**overrides: Any) -> SiameseModel:
    options: dict[str, Any] = {"backbone": "resnet50", "weights": "none", "image_size": 200}
    options.update(overrides)
    return SiameseModel(**options)


def datamodule(root: Path, batch_size: int, workers: int) -> SiameseDataModule:
    module = SiameseDataModule(
        str(root), image_size=200, batch_size=batch_size, num_workers=workers, check_images=False
    )
    module.setup("fit")
    return module


class StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (on a GPU, up to the end of
    their kernels)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.started = 0.0
        self.seconds = 0.0
        self.steps = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step == self.warmup:
            _synchronize(pl_module)
            self.started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step > self.warmup:
            _synchronize(pl_module)
            self.steps = trainer.global_step - self.warmup
            self.seconds = time.perf_counter() - self.started


def _synchronize(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


def trainer_images_per_second(
    root: Path, batch: int, steps: int, warmup: int, workers: int, cache: bool = False
) -> tuple[float, float]:
    """(images/s of the timed steps, seconds of fit start incl. a cache build)."""
    model = ttl_model(cache_frozen_features=cache)
    module = datamodule(root, batch, workers)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        default_root_dir=tempfile.mkdtemp(prefix="throughput-"),
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=module)
    total = time.perf_counter() - started
    return 3 * batch * timer.steps / timer.seconds, total - timer.seconds


def compute_images_per_second(
    batch: int,
    steps: int,
    warmup: int,
    fused: bool = True,
    channels_last: bool = True,
    autocast: bool = False,
    compile_model: bool = False,
    inference_frozen: bool = False,
) -> float:
    model = ttl_model(channels_last=channels_last)
    model.train()
    net = model.net
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1e-4, fused=fused)
    images = torch.randn(3 * batch, 3, 200, 200)
    tail: Callable[[torch.Tensor], torch.Tensor] = net.forward_tail
    if compile_model:
        tail = torch.compile(net.forward_tail)

    def frozen(x: torch.Tensor) -> torch.Tensor:
        if inference_frozen:
            with torch.inference_mode():
                features = net.forward_frozen(x)
            return features.clone()  # a normal tensor again, usable by autograd
        return net.forward_frozen(x)

    context: Callable[[], AbstractContextManager[Any]] = nullcontext
    if autocast:

        def context() -> AbstractContextManager[Any]:
            return torch.autocast("cpu", dtype=torch.bfloat16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with context():
            anchor, positive, negative = tail(frozen(images)).float().chunk(3)
            loss = model.loss(anchor, positive, negative)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return 3 * batch * steps / (time.perf_counter() - started)


def frozen_images_per_second(bf16: bool, batch: int, steps: int, channels_last: bool) -> float:
    """Images/s of the frozen part, eager, over ``steps`` batches after a first one."""
    net = ttl_model(channels_last=channels_last).net.train()  # as at fit start
    images = torch.randn(batch, 3, 200, 200)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        net.forward_frozen(images)
        started = time.perf_counter()
        for _ in range(steps):
            net.forward_frozen(images)
        seconds = (time.perf_counter() - started) / steps
    return batch / seconds


def loader_images_per_second(root: Path, batch: int, steps: int, workers: int) -> float:
    loader = datamodule(root, batch, workers).train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers started, first batch out
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return 3 * batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/bench-jpeg"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["trainer", "compute", "loader", "levers", "cache", "frozen"],
        choices=["trainer", "compute", "loader", "levers", "cache", "frozen"],
    )
    parser.add_argument("--frozen-batch", type=int, default=64, help="images a frozen batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, steps, warmup = args.batch_size, args.steps, args.warmup
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"batch {batch} triplets ({3 * batch} images), {steps} timed steps after {warmup}"
    )
    rows: list[tuple[str, float]] = []

    def report(name: str, value: float, baseline: float | None = None) -> None:
        ratio = f"{value / baseline:5.2f}x" if baseline else ""
        print(f"  {name:<48} {value:8.1f} images/s  {ratio}", flush=True)
        rows.append((name, value))

    compute = None
    if "compute" in args.only or "levers" in args.only:
        compute = compute_images_per_second(batch, steps, warmup)
        report("compute: eager fp32, fused Adam, channels_last (defaults)", compute)
    torch.set_num_threads(args.threads)
    if "trainer" in args.only:
        value, _ = trainer_images_per_second(args.root, batch, steps, warmup, args.workers)
        report(f"trainer: DataModule + Trainer, {args.workers} workers", value, compute)
    if "loader" in args.only:
        for workers in sorted({0, 1, args.workers}):
            value = loader_images_per_second(args.root, batch, steps * 3, workers)
            report(f"loader alone, {workers} workers", value, compute)
    if "levers" in args.only and compute is not None:
        levers: list[tuple[str, dict[str, bool]]] = [
            ("compute: default (for-each) Adam instead of fused", {"fused": False}),
            ("compute: contiguous (NCHW) input, not channels_last", {"channels_last": False}),
            ("compute: bf16 autocast", {"autocast": True}),
            ("compute: inference_mode for the frozen part", {"inference_frozen": True}),
            ("compute: torch.compile of the trainable tail", {"compile_model": True}),
        ]
        for name, options in levers:
            report(name, compute_images_per_second(batch, steps, warmup, **options), compute)
        other = 1 if args.threads != 1 else 2
        torch.set_num_threads(other)
        value = compute_images_per_second(batch, steps, warmup)
        report(f"compute: {other} thread(s)", value, compute)
        torch.set_num_threads(args.threads)
    if "cache" in args.only:
        value, start = trainer_images_per_second(
            args.root, batch, steps, warmup, args.workers, cache=True
        )
        report(f"trainer + frozen-feature cache (fit start {start:.0f} s)", value, compute)
    if "frozen" in args.only:
        size = args.frozen_batch
        print(f"frozen part alone (the cache's pass), batch {size}, {steps} timed batches:")
        for bf16 in (False, True):
            precision = "bf16 autocast" if bf16 else "fp32"
            base = frozen_images_per_second(bf16, size, steps, channels_last=True)
            nchw = frozen_images_per_second(bf16, size, steps, channels_last=False)
            report(f"frozen {precision}: eager, channels-last (baseline)", base)
            report(f"frozen {precision}: eager, NCHW", nchw, base)


if __name__ == "__main__":
    main()
