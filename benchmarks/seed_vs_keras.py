"""End to end: the seed-faithful 2-epoch training, lightning-siamese versus a Keras 3 port.

    python benchmarks/seed_vs_keras.py                       # data/bench-jpeg, 1,000 pairs
    python benchmarks/seed_vs_keras.py --skip-uncached       # without the slow eager run

One command, one run after the other on the same CPU, same images, same batch size (64, the
seed's), 2 epochs:

1. ``lightning-siamese fit -c configs/ttl.yaml`` with the frozen-feature cache (the default way
   to run the seed config fast), then without it (plain eager PyTorch): wall time of the whole
   process, including start-up, the cache build, and the per-epoch validation the seed lacks;
2. ``benchmarks/keras_seed.py`` (the seed's training loop in Keras 3 / TensorFlow, its own venv
   made by ``benchmarks/setup_keras.sh``) on exactly the pairs of our train split.

Weights are random for both (``none``: same compute, nothing to download); both normalise the
pixels with ImageNet's mean and std, so the final training losses are on one scale.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERAS_PYTHON = REPO / "benchmarks" / ".venv-keras" / "bin" / "python"


def run(command: list[str], log: Path) -> float:
    """Run, send the output to ``log``, return the wall time; fail loudly with the log's tail."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return seconds


def ours(root: Path, out: Path, cache: bool, batch_size: int) -> dict[str, float]:
    run_dir = out / ("ours-cache" if cache else "ours-eager")
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        str(REPO / ".venv" / "bin" / "lightning-siamese"),
        "fit",
        "-c",
        str(REPO / "configs" / "ttl.yaml"),
        f"--data.root={root}",
        f"--data.batch_size={batch_size}",
        "--model.weights=none",
        f"--model.cache_frozen_features={str(cache).lower()}",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--validate_before_fit=false",
    ]
    seconds = run(command, out / f"{run_dir.name}.log")
    log = next(run_dir.glob("lightning_logs/version_*/metrics.csv"))
    rows = list(csv.DictReader(log.open()))
    losses = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    split = csv.DictReader((run_dir / "split.csv").open())
    pairs = sum(row["split"] == "train" for row in split)
    images = 3 * (pairs // batch_size) * batch_size * 2
    return {"seconds": seconds, "final_loss": losses[-1], "train_pairs": pairs, "images": images}


def train_split_folder(run_dir: Path, root: Path, out: Path) -> Path:
    """Our train split's pairs as a left/right folder of links, for the Keras port."""
    folder = out / "train-split"
    shutil.rmtree(folder, ignore_errors=True)
    rows = csv.DictReader((run_dir / "split.csv").open())
    names = {row["name"] for row in rows if row["split"] == "train"}
    for side in ("left", "right"):
        (folder / side).mkdir(parents=True)
        for path in (root / side).iterdir():
            if path.stem in names:
                (folder / side / path.name).symlink_to(path.resolve())
    return folder


def keras(folder: Path, out: Path, batch_size: int) -> dict[str, float]:
    if not KERAS_PYTHON.exists():
        subprocess.run(["bash", str(REPO / "benchmarks" / "setup_keras.sh")], check=True)
    result = out / "keras.json"
    command = [
        str(KERAS_PYTHON),
        str(REPO / "benchmarks" / "keras_seed.py"),
        f"--root={folder}",
        "--epochs=2",
        f"--batch-size={batch_size}",
        "--normalize",
        f"--json={result}",
    ]
    seconds = run(command, out / "keras.log")
    data = json.loads(result.read_text())
    images = 3 * data["batches_per_epoch"] * data["batch_size"] * len(data["epochs"])
    return {
        "seconds": seconds,
        "final_loss": data["final_loss"],
        "train_pairs": data["pairs"],
        "images": images,
        "fit_seconds": data["fit_seconds"],
        "versions": f"keras {data['keras']}, tensorflow {data['tensorflow']}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "bench-jpeg")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-seed-vs-keras")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-uncached", action="store_true")
    args = parser.parse_args()
    root = args.root.resolve()
    if not (root / "left").is_dir():
        make = REPO / "benchmarks" / "make_jpeg_pairs.py"
        subprocess.run([sys.executable, str(make), "--out", str(root)], check=True)
    args.out.mkdir(parents=True, exist_ok=True)

    results = {"ours, feature cache": ours(root, args.out, True, args.batch_size)}
    if not args.skip_uncached:
        results["ours, eager (no cache)"] = ours(root, args.out, False, args.batch_size)
    folder = train_split_folder(args.out / "ours-cache", root, args.out)
    results["Keras 3 port of the seed"] = keras(folder, args.out, args.batch_size)

    peer = results["Keras 3 port of the seed"]
    print(f"\nseed-faithful training, 2 epochs, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'run':<28} {'pairs':>6} {'seconds':>8} {'images/s':>9} {'vs Keras':>9} final loss")
    for name, r in results.items():
        speed = r["images"] / r["seconds"]
        ratio = peer["seconds"] / r["seconds"]
        print(
            f"{name:<28} {r['train_pairs']:>6} {r['seconds']:>8.0f} {speed:>9.1f} "
            f"{ratio:>8.2f}x {r['final_loss']:.4f}"
        )
    print(f"({peer['versions']}; Keras fit alone {peer['fit_seconds']:.0f} s; logs in {args.out})")


if __name__ == "__main__":
    main()
