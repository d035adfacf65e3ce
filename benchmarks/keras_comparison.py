"""End to end: the Keras example's 2-epoch training, lightning-siamese versus a Keras 3 port,
like for like in fp32 and in bf16, from one run.

    python benchmarks/keras_comparison.py                   # data/bench-jpeg, 1,000 pairs
    python benchmarks/keras_comparison.py --runs fp32 keras # one precision only
    python benchmarks/keras_comparison.py --runs eager      # also: ours without the feature cache
    python benchmarks/keras_comparison.py --runs fp32 compiled keras  # also: the cache's pass
                                                            # compiled, whatever auto would choose

One command, one run after the other on the same CPU, same images, same batch size (64, the
Keras example's), same threads, 2 epochs:

1. ``lightning-siamese fit -c configs/ttl.yaml`` with the frozen-feature cache (the fast way to
   run that config), in fp32 and in ``bf16-mixed``: wall time of the whole process,
   including start-up, the cache build, and the per-epoch validation the Keras example lacks;
2. ``benchmarks/keras_example.py`` (the Keras example's training loop in Keras 3 /
   TensorFlow, its own venv made by ``benchmarks/setup_keras.sh``) on exactly the pairs of our
   train split, in float32 and under Keras' ``mixed_bfloat16`` policy.

Each precision's ratio is against the Keras run of the same precision. Then, where the time
goes: each run's floating-point work (counted with ``torch.utils.flop_counter`` on the same
architecture) against this machine's measured matrix-multiply rate in that precision.

Weights are random for both (``none``: same compute, nothing to download); both normalise the
pixels with ImageNet's mean and std, so the final training losses are on one scale.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERAS_PYTHON = REPO / "benchmarks" / ".venv-keras" / "bin" / "python"


def run(command: list[str], log: Path, extra_env: dict[str, str] | None = None) -> float:
    """Run, send the output to ``log``, return the wall time; fail loudly with the log's tail."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "WANDB_MODE": "disabled"}
    env.update(extra_env or {})
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return seconds


def ours(
    root: Path, out: Path, cache: bool, batch_size: int, bf16: bool = False, graph: str = "auto"
) -> dict[str, float | str]:
    """Our fit; ``graph``: ``--model.frozen_graph`` for the cache's pass (``inductor``: compiled
    whatever ``auto`` would say, with an empty inductor cache, so the compile is a first one)."""
    run_dir = out / (("ours-cache" if cache else "ours-eager") + ("-bf16" if bf16 else ""))
    run_dir = run_dir.with_name(run_dir.name + ("" if graph == "auto" else f"-{graph}"))
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
        f"--model.frozen_graph={graph}",
        *(["--trainer.precision=bf16-mixed"] if bf16 else []),
    ]
    inductor = out / "inductor-caches" / run_dir.name
    shutil.rmtree(inductor, ignore_errors=True)
    env = {"TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    seconds = run(command, out / f"{run_dir.name}.log", env)
    text = (out / f"{run_dir.name}.log").read_text()
    built = re.findall(r"frozen-feature cache: ([\d,]+) images in ([\d.]+) s", text)
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
        "cache_images": sum(int(n.replace(",", "")) for n, _ in built),
        "cache_seconds": sum(float(t) for _, t in built),
        "graph": "; ".join(re.findall(r"frozen graph: (.*)", text)) or "eager",
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


def keras(
    folder: Path, out: Path, batch_size: int, precision: str, interop: str, threads: int
) -> dict[str, float | str]:
    """The Keras port's run; ``interop``: ``unset`` leaves TensorFlow's thread pools to
    TensorFlow (its defaults: as many as cores), a number sets its inter-op pool to it and its
    intra-op pool to ``threads``."""
    if not KERAS_PYTHON.exists():
        subprocess.run(["bash", str(REPO / "benchmarks" / "setup_keras.sh")], check=True)
    name = f"keras-{precision}-interop-{interop}"
    result = out / f"{name}.json"
    command = [
        str(KERAS_PYTHON),
        str(REPO / "benchmarks" / "keras_example.py"),
        f"--root={folder}",
        "--epochs=2",
        f"--batch-size={batch_size}",
        "--normalize",
        f"--precision={precision}",
        f"--json={result}",
    ]
    env = {}
    if interop != "unset":
        env = {"TF_NUM_INTEROP_THREADS": interop, "TF_NUM_INTRAOP_THREADS": str(threads)}
    seconds = run(command, out / f"{name}.log", env)
    data = json.loads(result.read_text())
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


def peak_rates(dtype: str, threads: int) -> dict[str, float]:
    """This machine's measured rates (FLOP/s), the best of 5 runs each: a 2048^3 matrix
    product (``torch.matmul``: MKL, which runs AVX2 code on AMD CPUs) and a 3x3 convolution of
    ResNet size (64 x 256 x 28 x 28, channels-last: oneDNN, AVX-512), the kernels the step
    spends its time in."""
    import torch

    torch.set_num_threads(threads)
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]

    def best(run: Callable[[], object], flops: float) -> float:
        run()  # warm-up
        fastest = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            run()
            fastest = min(fastest, time.perf_counter() - started)
        return flops / fastest

    a, b = torch.randn(2048, 2048).to(kind), torch.randn(2048, 2048).to(kind)
    images = torch.randn(64, 256, 28, 28).to(kind).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(kind)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        return {
            "matmul": best(lambda: a @ b, 2 * 2048**3),
            "conv": best(lambda: conv(images), 2 * 64 * 28 * 28 * 256 * 256 * 9),
        }


def step_flops(image_size: int = 200, keras_style: bool = False) -> dict[str, float]:
    """Floating-point operations per image of the ttl model: the frozen part's forward, the
    trainable tail's forward, and its backward (counted by ``torch.utils.flop_counter``).

    ``keras_style``: Keras' ResNet50 (v1) strides the first 1x1 convolution of each stage's
    first block where torchvision's (v1.5) strides the 3x3 one; the same counts for that."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_siamese.models.embedding import EmbeddingNet

    net = EmbeddingNet(
        backbone="resnet50", weights="none", freeze="layer4.0", head="mlp", image_size=image_size
    )
    if keras_style:
        for stage in ("layer2", "layer3", "layer4"):
            block = net.backbone.get_submodule(stage)[0]
            block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    images = torch.randn(4, 3, image_size, image_size)
    counts = {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        features = net.forward_frozen(images)
    counts["frozen"] = counter.get_total_flops() / 4
    net.train()
    with FlopCounterMode(display=False) as counter:
        embeddings = net.forward_tail(features)
    counts["tail_forward"] = counter.get_total_flops() / 4
    with FlopCounterMode(display=False) as counter:
        embeddings.square().sum().backward()
    counts["tail_backward"] = counter.get_total_flops() / 4
    return counts


def where_the_time_goes(results: dict[str, dict], threads: int) -> None:
    """Each run's work against the machine's matrix-multiply rate in its precision."""
    counts = {"ours": step_flops(), "keras": step_flops(keras_style=True)}
    print("\nwork per image (GFLOP, torch.utils.flop_counter):")
    for who, flops in counts.items():
        print(
            f"  {who:<5} frozen part forward {flops['frozen'] / 1e9:.2f}, trainable tail "
            f"forward {flops['tail_forward'] / 1e9:.2f} "
            f"+ backward {flops['tail_backward'] / 1e9:.2f}"
            + (" (Keras' ResNet50 v1 strides)" if who == "keras" else "")
        )
    measured = {dtype: peak_rates(dtype, threads) for dtype in ("fp32", "bf16")}
    for dtype, found in measured.items():
        print(
            f"measured {dtype} rate ({threads} threads): matmul 2048^3 (MKL) "
            f"{found['matmul'] / 1e9:.0f} GFLOP/s, 3x3 convolution (oneDNN) "
            f"{found['conv'] / 1e9:.0f} GFLOP/s"
        )
    rates = {dtype: max(found.values()) for dtype, found in measured.items()}
    print("of peak: against the faster of the two, in the run's precision")
    print(f"{'run':<40} {'GFLOP':>7} {'GFLOP/s':>8} {'of peak':>7}   part")
    for name, r in results.items():
        rate = rates["bf16" if "bf16" in name else "fp32"]
        flops = counts["keras" if "Keras" in name else "ours"]
        tail = flops["tail_forward"] + flops["tail_backward"]
        if r.get("cache_images"):
            # The cache: the frozen part once per distinct image, then the tail on each triplet.
            frozen = r["cache_images"] * flops["frozen"]
            total = frozen + r["images"] * tail
            part_rate = frozen / r["cache_seconds"]
            part = f"cache build {part_rate / 1e9:.0f} GFLOP/s ({part_rate / rate:.0%} of peak)"
        else:
            total = r["images"] * (flops["frozen"] + tail)
            part = "every image through the frozen part, each epoch"
        seconds = r.get("fit_seconds", r["seconds"])
        print(
            f"{name:<40} {total / 1e9:>7.0f} {total / seconds / 1e9:>8.0f} "
            f"{total / seconds / rate:>6.0%}   {part}"
        )
    print("(GFLOP/s over the whole process for ours, over Keras' fit for Keras)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "data" / "bench-jpeg")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-keras-comparison")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--keras-interop",
        nargs="+",
        default=["unset", "1"],
        help="TensorFlow's threads for the Keras runs, each a run of its own: unset (TensorFlow's "
        "defaults), or N inter-op threads with --threads intra-op ones (1: one op at a time, "
        "as eager PyTorch runs); the faster is the reference",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["fp32", "keras", "bf16", "keras-bf16"],
        choices=["fp32", "keras", "bf16", "keras-bf16", "eager", "compiled", "compiled-bf16"],
        help="fp32 / bf16: ours with the feature cache, in fp32 / bf16-mixed; keras / keras-bf16: "
        "the Keras port in float32 / mixed_bfloat16; eager: ours in fp32 without the cache; "
        "compiled / compiled-bf16: ours with the cache's pass compiled (inductor) whatever "
        "--model.frozen_graph auto would choose",
    )
    args = parser.parse_args()
    root = args.root.resolve()
    if not (root / "left").is_dir():
        make = REPO / "benchmarks" / "make_jpeg_pairs.py"
        subprocess.run([sys.executable, str(make), "--out", str(root)], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # Both frameworks, the same OpenMP threads (torch, oneDNN); TensorFlow's own pools below.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.pop(name, None)  # set per Keras run (--keras-interop)

    results: dict[str, dict] = {}
    ours_runs = {
        "fp32": ("fp32  ours, feature cache", True, False, "auto"),
        "bf16": ("bf16  ours, feature cache, bf16-mixed", True, True, "auto"),
        "eager": ("fp32  ours, eager (no cache)", False, False, "auto"),
        "compiled": ("fp32  ours, cache, compiled", True, False, "inductor"),
        "compiled-bf16": ("bf16  ours, cache, compiled", True, True, "inductor"),
    }
    folder = None
    for key in args.runs:  # in the order given
        if key in ours_runs:
            name, cache, bf16, graph = ours_runs[key]
            results[name] = ours(root, args.out, cache, args.batch_size, bf16, graph)
            run_dir = args.out / (("ours-cache" if cache else "ours-eager") + ("-bf16" * bf16))
            if folder is None and graph == "auto":
                folder = train_split_folder(run_dir, root, args.out)
    for key in args.runs:
        if key.startswith("keras"):
            if folder is None:
                sys.exit("the Keras runs train on our train split: add fp32, bf16 or eager")
            precision = "mixed_bfloat16" if key == "keras-bf16" else "float32"
            for interop in args.keras_interop:
                which = f"inter-op {interop}" if interop != "unset" else "TF's threads"
                name = f"{'bf16' if key == 'keras-bf16' else 'fp32'}  Keras ({precision}, {which})"
                results[name] = keras(
                    folder, args.out, args.batch_size, precision, interop, args.threads
                )

    print(
        f"\nthe Keras example's training, 2 epochs, batch {args.batch_size}, {args.threads} threads"
    )
    print(
        f"{'run':<40} {'pairs':>5} {'seconds':>7} {'images/s':>8} {'vs Keras':>8} "
        f"{'loss':>7} {'accuracy':>8} {'d(a,p)':>8} {'d(a,n)':>8}"
    )
    for precision in ("fp32", "bf16"):
        rows = {n: r for n, r in results.items() if n.startswith(precision)}
        peers = [r for n, r in rows.items() if "Keras" in n]
        peer = min(peers, key=lambda r: r["seconds"]) if peers else None
        for name, r in rows.items():
            speed = r["images"] / r["seconds"]
            ratio = f"{peer['seconds'] / r['seconds']:>7.2f}x" if peer else f"{'-':>8}"
            print(
                f"{name:<40} {r['train_pairs']:>5} {r['seconds']:>7.0f} {speed:>8.1f} {ratio} "
                f"{r['final_loss']:>7.4f} {r['accuracy']:>8.3f} {r['d_ap']:>8.3f} {r['d_an']:>8.3f}"
            )
    print(
        "vs Keras: the faster Keras run's seconds over this run's, in the same precision "
        f"({args.threads} OpenMP threads for all)"
    )
    print("loss, accuracy (share of triplets with d(a,p) < d(a,n)), distances: the last epoch's")
    keras_runs = [r for n, r in results.items() if "Keras" in n]
    if keras_runs:
        peer = keras_runs[0]
        print(
            f"({peer['versions']}; Keras fit alone: "
            + ", ".join(f"{r['fit_seconds']:.0f} s" for r in keras_runs)
            + f"; logs in {args.out})"
        )
    for name, r in results.items():
        if r.get("graph"):
            print(
                f"{name.split('  ')[1]}: cache {r['cache_images']:,} images in "
                f"{r['cache_seconds']:.1f} s; frozen graph: {r['graph']}"
            )
    where_the_time_goes(results, args.threads)


if __name__ == "__main__":
    main()
