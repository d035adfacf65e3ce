"""End to end: the seed-faithful 2-epoch training, lightning-siamese versus a Keras 3 port.

    python benchmarks/seed_vs_keras.py                       # data/bench-jpeg, 1,000 pairs
    python benchmarks/seed_vs_keras.py --runs cache keras    # without the slow eager run
    python benchmarks/seed_vs_keras.py --runs bf16           # bf16-mixed, vs the last Keras run

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


def ours(
    root: Path, out: Path, cache: bool, batch_size: int, bf16: bool = False
) -> dict[str, float]:
    run_dir = out / (("ours-cache" if cache else "ours-eager") + ("-bf16" if bf16 else ""))
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
        *(["--trainer.precision=bf16-mixed"] if bf16 else []),
    ]
    seconds = run(command, out / f"{run_dir.name}.log")
    log = next(run_dir.glob("lightning_logs/version_*/metrics.csv"))
    rows = list(csv.DictReader(log.open()))

    def last(key: str) -> float:
        return [float(row[key]) for row in rows if row.get(key)][-1]

    split = csv.DictReader((run_dir / "split.csv").open())
    pairs = sum(row["split"] == "train" for row in split)
    images = 3 * (pairs // batch_size) * batch_size * 2
    result = {
        "seconds": seconds,
        "final_loss": last("train/loss_epoch"),
        "accuracy": last("train/triplet_accuracy"),
        "d_ap": last("train/distance_positive"),
        "d_an": last("train/distance_negative"),
        "train_pairs": pairs,
        "images": images,
    }
    (out / f"{run_dir.name}.json").write_text(json.dumps(result) + "\n")
    return result


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
    return keras_result(out, run(command, out / "keras.log"))


def keras_result(out: Path, seconds: float | None) -> dict[str, float]:
    """The Keras run's figures from ``keras.json`` (``seconds``: the process's wall time)."""
    data = json.loads((out / "keras.json").read_text())
    if seconds is None:  # an earlier run: its wall time was kept next to the JSON
        seconds = float((out / "keras.seconds").read_text())
    (out / "keras.seconds").write_text(f"{seconds}\n")
    images = 3 * data["batches_per_epoch"] * data["batch_size"] * len(data["epochs"])
    final = data["epochs"][-1]
    return {
        "seconds": seconds,
        "final_loss": data["final_loss"],
        "accuracy": final.get("triplet_accuracy", float("nan")),
        "d_ap": final.get("distance_positive", float("nan")),
        "d_an": final.get("distance_negative", float("nan")),
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
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["cache", "eager", "keras"],
        choices=["cache", "bf16", "eager", "keras"],
        help="cache: ours with the feature cache; bf16: the same in bf16-mixed precision; eager: "
        "ours without the cache; keras: the Keras port (without it, an earlier keras.json in "
        "--out is the reference)",
    )
    args = parser.parse_args()
    root = args.root.resolve()
    if not (root / "left").is_dir():
        make = REPO / "benchmarks" / "make_jpeg_pairs.py"
        subprocess.run([sys.executable, str(make), "--out", str(root)], check=True)
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    for key, name, cache, bf16 in (
        ("cache", "ours, feature cache", True, False),
        ("bf16", "ours, cache, bf16-mixed", True, True),
        ("eager", "ours, eager (no cache)", False, False),
    ):
        folder = "ours-cache" if cache else "ours-eager"
        earlier = args.out / f"{folder}{'-bf16' if bf16 else ''}.json"
        if key in args.runs:
            results[name] = ours(root, args.out, cache, args.batch_size, bf16)
        elif earlier.is_file():  # measured by an earlier run of this script
            results[name + " (earlier)"] = json.loads(earlier.read_text())
    name = "Keras 3 port of the seed"
    if "keras" in args.runs:
        run_dir = next(
            args.out / d
            for d in ("ours-cache", "ours-cache-bf16", "ours-eager")
            if (args.out / d / "split.csv").is_file()
        )
        folder = train_split_folder(run_dir, root, args.out)
        results[name] = keras(folder, args.out, args.batch_size)
    elif (args.out / "keras.json").is_file():
        results[name + " (earlier)"] = keras_result(args.out, None)
    else:
        sys.exit("no Keras result to compare with: add `keras` to --runs")

    peer = next(value for key, value in results.items() if key.startswith(name))
    print(f"\nseed-faithful training, 2 epochs, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(
        f"{'run':<36} {'pairs':>5} {'seconds':>7} {'images/s':>8} {'vs Keras':>8} "
        f"{'loss':>7} {'accuracy':>8} {'d(a,p)':>8} {'d(a,n)':>8}"
    )
    for name, r in results.items():
        speed = r["images"] / r["seconds"]
        ratio = peer["seconds"] / r["seconds"]
        print(
            f"{name:<36} {r['train_pairs']:>5} {r['seconds']:>7.0f} {speed:>8.1f} "
            f"{ratio:>7.2f}x {r['final_loss']:>7.4f} {r.get('accuracy', float('nan')):>8.3f} "
            f"{r.get('d_ap', float('nan')):>8.3f} {r.get('d_an', float('nan')):>8.3f}"
        )
    print("loss, accuracy (share of triplets with d(a,p) < d(a,n)), distances: the last epoch's")
    print(f"({peer['versions']}; Keras fit alone {peer['fit_seconds']:.0f} s; logs in {args.out})")


if __name__ == "__main__":
    main()
