"""Every accelerator path of the package, one table: run it first on a new GPU machine.

    python benchmarks/gpu_check.py                     # NVIDIA GPU(s), no network needed
    python benchmarks/gpu_check.py --accelerator cpu   # the same paths on CPU, a few minutes

It builds its own data (font-glyph pairs from matplotlib's fonts, and 200 px JPEG copies of
them) and uses random weights, so it needs no network, and only the packages the project needs
(no W&B: every run logs to CSV). Each command path runs as the real CLI in a subprocess:

- ``fit`` in fp32, ``bf16-mixed``, ``bf16-true`` with the frozen-feature cache, and
  ``--trainer.deterministic true`` with the pooled head (``pool_size 2`` on a 3x3 grid; run
  twice, the weights must be identical);
- ``validate`` (must give the figures ``fit`` logged for that checkpoint), ``test``,
  ``predict`` (one ``embeddings.pt`` with every image), ``evaluate``, ``search``;
- ``export`` to a ``torch.export`` program (pt2) and ONNX, each also run on the accelerator
  against PyTorch (ONNX on the GPU only where onnxruntime has its CUDA provider);
- the ``ddp`` strategy on every GPU of the machine (NCCL; 2 gloo processes with ``cpu``);

then, in this process, the ttl model's training throughput (ResNet50 frozen to ``layer4.0``,
the Flatten-Dense head, 200 px, ``bf16-mixed``, channels-last, batch 64): images/s of the
Trainer with the loader (JPEG files, as many workers as the machine allows), of the bare step
(random tensors on the device), and of the Trainer with the feature cache, each with the peak
GPU memory; the loader alone, whether it keeps up with the bare step, and the goal of 6,000
images/s with the cache on one H100/H200. Output: the table on stdout, and
``<out>/gpu_check.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass
class Row:
    path: str
    passed: bool
    seconds: float
    figures: str


class Check:
    """Runs the paths into ``out`` and collects one :class:`Row` per path."""

    def __init__(self, out: Path, accelerator: str, workers: int) -> None:
        self.out = out
        self.accelerator = accelerator
        self.workers = workers
        self.rows: list[Row] = []
        self.device = "cuda" if accelerator == "gpu" else "cpu"

    # Running ---------------------------------------------------------------------------------

    def record(self, path: str, run: Callable[[], str]) -> None:
        """Run one path; its return value is the figures, an exception a failure."""
        started = time.perf_counter()
        try:
            figures, passed = run(), True
        except (Exception, SystemExit) as error:  # a failing path is a row, not the end
            figures, passed = f"{type(error).__name__}: {str(error)[-300:]}", False
        row = Row(path, passed, time.perf_counter() - started, figures)
        self.rows.append(row)
        print(
            f"[{'pass' if passed else 'FAIL'}] {path} ({row.seconds:.0f} s): {figures}", flush=True
        )

    def cli(self, name: str, *args: str, timeout: float = 300) -> str:
        """``lightning-siamese *args`` in its own process group (with every process it starts,
        killed whole after ``timeout`` seconds); its output is kept in
        ``<out>/logs/<name>.log``."""
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        process = subprocess.Popen(
            [sys.executable, "-m", "lightning_siamese", *args],
            cwd=self.out, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            output, errors = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, errors = process.communicate()
            errors += f"\n(killed after {timeout:.0f} s)"
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output + errors, encoding="utf-8")
        if process.returncode != 0:
            tail = (output + errors).strip().splitlines()[-3:]
            raise RuntimeError(f"exit {process.returncode}: {' | '.join(tail)} (see {log})")
        return output

    def run_args(self, run: str, image_size: int = 64, devices: int = 1) -> list[str]:
        logger = {
            "class_path": "pytorch_lightning.loggers.CSVLogger",
            "init_args": {"save_dir": run},
        }
        return [
            f"--data.root={self.out / 'glyphs'}",
            f"--data.image_size={image_size}",
            "--data.batch_size=32",
            f"--data.num_workers={self.workers}",
            "--model.backbone=resnet18",
            "--model.weights=none",
            "--model.head=pooled",
            f"--trainer.accelerator={self.accelerator}",
            f"--trainer.devices={devices}",
            f"--trainer.default_root_dir={self.out / run}",
            f"--trainer.logger={json.dumps(logger)}",
            "--trainer.enable_progress_bar=false",
        ]

    def metrics(self, run: str) -> dict[str, float]:
        """The last value of each metric the run's CSV logs hold."""
        import csv

        values: dict[str, float] = {}
        for log in sorted((self.out / run).glob("lightning_logs/version_*/metrics.csv")):
            for row in csv.DictReader(log.open()):
                values.update({k: float(v) for k, v in row.items() if v and "/" in k})
        return values

    def checkpoint(self, run: str) -> Path:
        return self.out / run / "checkpoints" / "last.ckpt"

    # The paths -------------------------------------------------------------------------------

    def fit(self, run: str, *extra: str, image_size: int = 64, devices: int = 1) -> str:
        self.cli(
            run, "fit", *self.run_args(run, image_size, devices), "--trainer.max_epochs=2", *extra
        )
        metrics = self.metrics(run)
        recall, loss = metrics.get("val/recall@1", math.nan), metrics.get("train/loss_epoch")
        if loss is None or not math.isfinite(loss) or not math.isfinite(recall):
            raise RuntimeError(f"no finite training loss or val/recall@1 logged: {metrics}")
        if not self.checkpoint(run).is_file():
            raise RuntimeError("no last.ckpt written")
        return f"val/recall@1 {recall:.3f}, train loss {loss:.3f}"

    def fit_bf16_true_cached(self) -> str:
        figures = self.fit(
            "fit-bf16-true-cache",
            "--trainer.precision=bf16-true",
            "--model.cache_frozen_features=true",
        )
        log = (self.out / "logs" / "fit-bf16-true-cache.log").read_text(encoding="utf-8")
        if "train: frozen-feature cache:" not in log or "bfloat16" not in log:
            raise RuntimeError("the log shows no bfloat16 frozen-feature cache")
        return figures + ", bf16 cache"

    def fit_deterministic(self) -> str:
        weights = []
        for attempt in (1, 2):
            run = f"fit-deterministic-{attempt}"
            figures = self.fit(
                run,
                "--trainer.deterministic=true",
                "--model.pool_size=2",
                "--seed_everything=1",
                image_size=80,  # a 3x3 feature map pooled to 2x2: the non-dividing grid
            )
            weights.append(torch.load(self.checkpoint(run), weights_only=True)["state_dict"])
        same = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        if not same:
            raise RuntimeError("two deterministic runs ended with different weights")
        return figures + ", 2 runs bit-identical"

    def validate(self) -> str:
        """``validate`` of fit's last checkpoint gives the figures fit logged for it (the
        loss to 1e-3 relative; recall@1 to one pair, as a near-tie may flip across kernels)."""
        run = "fit-fp32"
        logged = self.metrics(run)
        self.cli(
            "validate", "validate", *self.run_args("validate"),
            f"--ckpt_path={self.checkpoint(run)}",
        )  # fmt: skip
        again = self.metrics("validate")
        one_pair = 1 / again["val/pairs"]
        if not math.isclose(again["val/loss"], logged["val/loss"], rel_tol=1e-3):
            raise RuntimeError(
                f"val/loss {again['val/loss']} differs from fit's {logged['val/loss']}"
            )
        if abs(again["val/recall@1"] - logged["val/recall@1"]) > one_pair + 1e-9:
            raise RuntimeError(f"val/recall@1 {again['val/recall@1']} is not fit's")
        return (
            f"val/loss {again['val/loss']:.4f}, val/recall@1 {again['val/recall@1']:.3f} "
            f"(fit logged {logged['val/loss']:.4f}, {logged['val/recall@1']:.3f})"
        )

    def test(self) -> str:
        self.cli(
            "test", "test", *self.run_args("test"), f"--ckpt_path={self.checkpoint('fit-fp32')}"
        )
        metrics = self.metrics("test")
        return f"test/recall@1 {metrics['test/recall@1']:.3f}, pairs {metrics['test/pairs']:.0f}"

    def predict(self) -> str:
        folder = self.out / "glyphs" / "left"
        self.cli(
            "predict",
            "predict",
            *self.run_args("predict"),
            f"--ckpt_path={self.checkpoint('fit-fp32')}",
            f"--data.predict_root={folder}",
        )
        document = torch.load(
            self.out / "predict" / "predictions" / "embeddings.pt", weights_only=True
        )
        images = len(list(folder.iterdir()))
        if len(document["paths"]) != images or document["embeddings"].shape[0] != images:
            raise RuntimeError(f"{len(document['paths'])} embeddings for {images} images")
        return f"{images} embeddings of size {document['embeddings'].shape[1]}"

    def evaluate(self) -> str:
        out = self.out / "evaluate"
        self.cli(
            "evaluate",
            "evaluate",
            "--ckpt",
            str(self.checkpoint("fit-fp32")),
            "--root",
            str(self.out / "glyphs"),
            "--out",
            str(out),
            "--device",
            self.device,
        )
        metrics = json.loads((out / "metrics.json").read_text())
        return f"recall@1 {metrics['recall@1']:.3f} over {metrics['pairs']:.0f} pairs"

    def search(self) -> str:
        query = sorted((self.out / "glyphs" / "left").iterdir())[0]
        output = self.cli(
            "search",
            "search",
            "--ckpt",
            str(self.checkpoint("fit-fp32")),
            "--gallery",
            str(self.out / "glyphs" / "right"),
            "--query",
            str(query),
            "--top-k",
            "5",
            "--json",
            "--no-cache",
            "--device",
            self.device,
            "--out",
            str(self.out / "search.png"),
        )
        document = json.loads(output)
        matches = document["queries"][0]["matches"]
        if len(matches) != 5:
            raise RuntimeError(f"{len(matches)} matches, not 5")
        return f"top-5 found, best score {matches[0]['score']:.3f}"

    def export(self, fmt: str) -> str:
        """The deterministic run's model (its 2x2-of-3x3 pooling traced too), exported by the
        command (which checks it on CPU), then run on the accelerator against PyTorch."""
        from lightning_siamese.training.model import SiameseModel

        checkpoint = self.checkpoint("fit-deterministic-1")
        if not checkpoint.is_file():  # that row failed: export the fp32 run's model instead
            checkpoint = self.checkpoint("fit-fp32")
        suffix = ".onnx" if fmt == "onnx" else ".pt2"
        target = self.out / f"model{suffix}"
        self.cli(
            f"export-{fmt}",
            "export",
            "--ckpt",
            str(checkpoint),
            "--format",
            fmt,
            "--out",
            str(target),
        )
        model = SiameseModel.load_from_checkpoint(checkpoint, map_location=self.device)
        model.eval()
        side = int(model.hparams["image_size"])
        images = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model(images.to(self.device)).float().cpu()
        where = "CPU check by the command"
        if fmt == "pt2":
            program = torch.export.load(str(target)).module().to(self.device)
            with torch.no_grad():
                got = program(images.to(self.device)).float().cpu()
            where = f"run on {self.device}"
        else:
            import onnxruntime

            providers = onnxruntime.get_available_providers()
            if self.device == "cuda" and "CUDAExecutionProvider" not in providers:
                return (
                    f"exported and checked on CPU; onnxruntime has no CUDA provider ({providers})"
                )
            provider = "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"
            session = onnxruntime.InferenceSession(str(target), providers=[provider])
            if session.get_providers()[0] != provider:  # e.g. CUDA libraries that do not match
                raise RuntimeError(f"onnxruntime fell back to {session.get_providers()[0]}")
            got = torch.from_numpy(
                session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
            )
            where = f"run with {provider}"
        difference = (got - expected).abs().max().item()
        if difference > 1e-3:
            raise RuntimeError(f"largest difference from PyTorch {difference:.2e}")
        return f"{where}: largest difference from PyTorch {difference:.1e}"

    def ddp(self) -> str:
        devices = torch.cuda.device_count() if self.device == "cuda" else 2
        figures = self.fit("ddp", "--trainer.strategy=ddp", "--model.loss=infonce", devices=devices)
        backend = "NCCL" if self.device == "cuda" else "gloo"
        alone = " (one GPU: no collective crosses devices)" if devices == 1 else ""
        return f"{devices} process(es) ({backend}){alone}, " + figures


# Throughput of the ttl model -------------------------------------------------------------------


def ttl_throughput(check: Check, steps: int, warmup: int, batch: int) -> None:
    """The ttl model at 200 px in bf16-mixed, channels-last, batch ``batch`` (triplets)."""
    import pytorch_lightning as pl

    from lightning_siamese.data.datamodule import SiameseDataModule
    from lightning_siamese.training.model import SiameseModel

    sys.path.insert(0, str(HERE))
    from make_jpeg_pairs import make_jpeg_pairs
    from train_throughput import StepTimer

    jpeg = check.out / "jpeg"

    def jpeg_copies() -> str:
        if not (jpeg / "left").is_dir():
            make_jpeg_pairs(check.out / "glyphs", jpeg, pairs=496, size=200)
        return f"{len(list((jpeg / 'left').iterdir()))} pairs as 200 px JPEG files"

    check.record("data: 200 px JPEG copies", jpeg_copies)
    cuda = check.device == "cuda"

    def peak() -> str:
        if not cuda:
            return "n/a on CPU"
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"

    def reset_peak() -> None:
        gc.collect()  # the previous Trainer's model and optimizer, held by reference cycles
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def datamodule() -> SiameseDataModule:
        """The JPEG copies, 90% of them for training, at the Keras example's size and batch."""
        return SiameseDataModule(
            str(jpeg),
            image_size=200,
            batch_size=batch,
            num_workers=check.workers,
            split_fractions=(0.9, 0.05, 0.05),
            check_images=False,
        )

    def trainer_run(cache: bool) -> str:
        reset_peak()
        model = SiameseModel(backbone="resnet50", weights="none", cache_frozen_features=cache)
        data = datamodule()
        timer = StepTimer(warmup)
        trainer = pl.Trainer(
            accelerator=check.accelerator,
            devices=1,
            precision="bf16-mixed",
            max_steps=warmup + steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
            default_root_dir=str(check.out / "speed"),
        )
        began = time.perf_counter()
        trainer.fit(model, datamodule=data)
        rate = 3 * batch * timer.steps / timer.seconds
        rates["cache" if cache else "trainer"] = rate
        setup = time.perf_counter() - began - timer.seconds  # start-up, warm-up, cache build
        what = "cache build, warm-up" if cache else "warm-up"
        return (
            f"{rate:,.0f} images/s, peak {peak()}, {check.workers} loader workers "
            f"({setup:.0f} s of start-up, {what})"
        )

    def bare_step() -> str:
        reset_peak()
        model = SiameseModel(backbone="resnet50", weights="none").to(check.device).train()
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=1e-4, fused=True)
        images = torch.randn(3 * batch, 3, 200, 200, device=check.device)
        images = images.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(check.device, dtype=torch.bfloat16):
                anchor, positive, negative = model(images).float().chunk(3)
                loss = model.loss(anchor, positive, negative)
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        rate = 3 * batch * steps / (time.perf_counter() - started)
        rates["bare"] = rate
        return f"{rate:,.0f} images/s, peak {peak()}"

    def loader_alone() -> str:
        data = datamodule()
        data.setup("fit")
        batches, images, started = 0, 0, time.perf_counter()
        while batches < warmup + steps:  # epochs of the train loader, as fit would run them
            for item in data.train_dataloader():
                batches += 1
                if batches == warmup:  # timed from here: the batches fetched after it
                    started = time.perf_counter()
                elif batches > warmup:
                    images += 3 * len(item["index"])
                if batches >= warmup + steps:
                    break
        rates["loader"] = images / (time.perf_counter() - started)
        return f"{rates['loader']:,.0f} images/s, {check.workers} workers (no model)"

    rates: dict[str, float] = {}

    def keeps_up() -> str:
        loader, step = rates.get("loader"), rates.get("bare")
        if loader is None or step is None:
            raise RuntimeError("the loader or the bare step did not run")
        verdict = "keeps up" if loader >= step else "does NOT keep up"
        return f"loader {loader / step:.2f}x the bare step: {verdict}"

    def goal() -> str:
        rate = rates.get("cache")
        if rate is None:
            raise RuntimeError("the cached run did not run")
        met = "met" if rate >= 6000 else "missed"
        where = "" if cuda else " (a GPU goal; this ran on the CPU)"
        return f"{rate:,.0f} images/s with the cache against 6,000 on one H100/H200: {met}{where}"

    check.record("ttl model, loader alone (JPEG), bf16-mixed sizes", loader_alone)
    check.record("ttl model, Trainer + JPEG loader, bf16-mixed", lambda: trainer_run(False))
    check.record("ttl model, bare step (random tensors), bf16-mixed", bare_step)
    check.record("ttl model, does the loader keep up with the step", keeps_up)
    check.record("ttl model, Trainer + feature cache, bf16-mixed", lambda: trainer_run(True))
    check.record("ttl model, goal: >= 6,000 images/s with the cache", goal)


def machine(accelerator: str) -> str:
    import platform

    import pytorch_lightning as pl

    what = f"torch {torch.__version__}, pytorch-lightning {pl.__version__}, "
    what += f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    if accelerator == "gpu":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        what += f", GPUs: {', '.join(names)}, CUDA {torch.version.cuda}"
    return what


def table(rows: list[Row]) -> str:
    lines = ["| path | result | seconds | figures |", "|---|---|---|---|"]
    for row in rows:
        figures = row.figures.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {row.path} | {'pass' if row.passed else 'FAIL'} | {row.seconds:.0f} | {figures} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    parser.add_argument("--steps", type=int, help="timed throughput steps (default: 30 GPU, 2 CPU)")
    parser.add_argument("--workers", type=int, help="loader workers (default: CPUs - 2, 1 to 12)")
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: run with --accelerator cpu", file=sys.stderr)
        return 2
    gpu = args.accelerator == "gpu"
    workers = (
        args.workers if args.workers is not None else max(1, min(12, (os.cpu_count() or 2) - 2))
    )
    steps = args.steps or (30 if gpu else 2)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    check = Check(out, args.accelerator, workers)
    print(machine(args.accelerator), flush=True)

    def glyphs() -> str:
        from lightning_siamese.data.glyphs import build_glyphs

        if not (out / "glyphs" / "left").is_dir():
            build_glyphs(out / "glyphs")
        return f"{len(list((out / 'glyphs' / 'left').iterdir()))} glyph pairs"

    check.record("data: glyph pairs built here", glyphs)
    check.record("fit fp32", lambda: check.fit("fit-fp32"))
    check.record(
        "fit bf16-mixed", lambda: check.fit("fit-bf16-mixed", "--trainer.precision=bf16-mixed")
    )
    check.record("fit bf16-true + feature cache", check.fit_bf16_true_cached)
    check.record("fit deterministic, pooled head 2x2 of 3x3", check.fit_deterministic)
    check.record("validate", check.validate)
    check.record("test", check.test)
    check.record("predict", check.predict)
    check.record("evaluate", check.evaluate)
    check.record("search", check.search)
    check.record("export pt2", lambda: check.export("pt2"))
    check.record("export onnx", lambda: check.export("onnx"))
    check.record("fit, ddp strategy", check.ddp)
    ttl_throughput(check, steps=steps, warmup=3 if gpu else 1, batch=64)

    total = time.perf_counter() - started
    text = f"{machine(args.accelerator)}\n\n{table(check.rows)}\n\ntotal {total:.0f} s\n"
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    document = {
        "machine": machine(args.accelerator),
        "seconds": total,
        "rows": [asdict(row) for row in check.rows],
    }
    (out / "gpu_check.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    print("\n" + text)
    return 0 if all(row.passed for row in check.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
