"""A 2-process DDP fit (gloo, CPU) with loader workers, run again and again: does it ever hang?

    .venv/bin/python benchmarks/ddp_loader_workers.py --runs 30
    .venv/bin/python benchmarks/ddp_loader_workers.py --runs 30 --workers 2 --timeout 180
    .venv/bin/python benchmarks/ddp_loader_workers.py -- --trainer.deterministic=true

Each run is ``lightning-siamese fit`` on glyph pairs built here (the test suite's tiny network:
timm's test ResNet, random weights, 32 px), ``--trainer.strategy=ddp --trainer.devices=2`` with
``--data.num_workers`` loader workers per process, 2 epochs, in a process group of its own.
A run that outlives ``--timeout`` is a hang: every process of its group (the launcher, the
second rank, the loader workers) has its Python stacks dumped (``py-spy dump`` when installed,
else a SIGABRT that Python's faulthandler turns into a traceback), the group is killed, and the
dumps are kept under ``--out``. Arguments after ``--`` go to ``fit``. Prints one line per run
and the count of hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def group_pids(group: int) -> list[int]:
    """Every process of a process group (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group:  # pgrp
                pids.append(int(entry.name))
    return sorted(pids)


def dump_stacks(group: int, folder: Path) -> None:
    """Each process's stacks into ``folder``: py-spy when there is one, else faulthandler."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    for pid in group_pids(group):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if Path(spy).exists():
            dump = subprocess.run(
                [spy, "dump", "--pid", str(pid), "--locals"], capture_output=True, text=True
            )
            text = dump.stdout + dump.stderr
        else:
            os.kill(pid, signal.SIGABRT)  # faulthandler writes every thread's stack to stderr
            text = "(SIGABRT sent: the stacks are in the run's output)"
        (folder / f"{pid}.txt").write_text(f"{command}\n\n{text}", encoding="utf-8")


def fit_args(data: Path, run: Path, workers: int) -> list[str]:
    logger = {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": str(run)},
    }
    return [
        "fit",
        f"--data.root={data}",
        "--data.image_size=32",
        "--data.batch_size=4",
        f"--data.num_workers={workers}",
        "--model.backbone=timm/test_resnet",
        "--model.weights=none",
        "--model.head=pooled",
        "--model.loss=infonce",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger={json.dumps(logger)}",
        "--validate_before_fit=false",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="loader workers per process")
    parser.add_argument("--timeout", type=float, default=180, help="seconds before a hang")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ddp-loader-workers")
    parser.add_argument("extra", nargs="*", help="after --: arguments for fit")
    args = parser.parse_args()
    out = args.out.resolve()
    data = out / "glyphs"
    if not (data / "left").is_dir():
        from lightning_siamese.data.glyphs import build_glyphs

        build_glyphs(data)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MASTER_")}
    env.update(PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    hangs, failures, seconds = 0, 0, []
    for index in range(args.runs):
        run = out / f"run{index:03d}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        command = [
            sys.executable,
            "-m",
            "lightning_siamese",
            *fit_args(data, run, args.workers),
            *args.extra,
        ]
        started = time.perf_counter()
        with (run / "output.log").open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command, cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                code: int | str = process.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                hangs += 1
                dump_stacks(process.pid, run / "stacks")
                time.sleep(2)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = f"HUNG (stacks in {run / 'stacks'})"
        elapsed = time.perf_counter() - started
        seconds.append(elapsed)
        print(f"run {index + 1}/{args.runs}: {code} in {elapsed:.1f} s", flush=True)
        if code == 0:
            shutil.rmtree(run)  # the failures' and hangs' folders stay
        elif isinstance(code, int):
            failures += 1
    print(
        f"{args.runs} runs, {args.workers} loader workers per process: {hangs} hung, "
        f"{failures} failed; median {sorted(seconds)[len(seconds) // 2]:.1f} s a run",
        flush=True,
    )
    return 1 if hangs or failures else 0


if __name__ == "__main__":
    sys.exit(main())
