"""When a compiled graph pays: eager against ``torch.compile`` (inductor, freezing) for the passes
the package runs over many images, and what ``FrozenGraph``'s ``auto`` decides for each.

    python benchmarks/frozen_graph.py                  # every case, fp32 and bf16
    python benchmarks/frozen_graph.py --cases demo     # one case

Cases (random weights: the same compute as pretrained ones, nothing to download):

- ``demo``: the frozen trunk of ``configs/demo.yaml`` (EfficientNet-Lite0 up to ``blocks.1.1``,
  96 px): what the feature cache runs over the emoji set's ~3,440 training and validation
  images at fit start (90% of 1,911 pairs, both sides);
- ``ttl``: the frozen trunk of ``configs/ttl.yaml`` (ResNet50 up to ``layer4.0``, 200 px): the
  cache over Totally Looks Like's ~10,800 training and validation images;
- ``demo-whole``: the whole trained network of the demo (what ``evaluate`` and ``search`` run
  over a gallery), for a gallery of 1,911 images (the emoji's right/) and of 100,000.

Each case is timed in a fresh process (inductor's kernels are cached on disk: every process
gets an empty cache folder, so the setup is a first compile), at batch 64 on this machine's
threads: images/s over ``--steps`` batches after the first, and the setup (the first batch,
which compiles and checks the graph, less one batch's time). Then the seconds the whole pass
would take either way, and ``auto``'s choice from the first batch's time alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

#: The network of configs/demo.yaml.
DEMO_NET = {
    "backbone": "timm/tf_efficientnet_lite0",
    "freeze": "blocks.1.1",
    "feature_unit": "blocks.4.2",
    "head": "pooled",
    "pool_size": 4,
    "normalize": True,
    "image_size": 96,
}
CASES: dict[str, dict[str, Any]] = {
    "demo": {
        "net": DEMO_NET,
        "part": "frozen",
        "images": [3440],
    },
    "ttl": {
        "net": {"backbone": "resnet50", "head": "mlp", "image_size": 200},
        "part": "frozen",
        "images": [10828],
    },
    "demo-whole": {
        "net": DEMO_NET,
        "part": "whole",
        "images": [1911, 100_000],
    },
}
BATCH = 64


def measure(case: str, mode: str, bf16: bool, steps: int) -> dict[str, float]:
    """In this process: images/s and setup seconds of ``mode`` for ``case``."""
    import torch

    from lightning_siamese.models.embedding import EmbeddingNet
    from lightning_siamese.models.frozen_graph import FrozenGraph

    spec = CASES[case]
    net = EmbeddingNet(weights="none", **spec["net"]).train()  # as at fit start
    if spec["part"] == "whole":
        net.eval()
    method = net.forward_frozen if spec["part"] == "frozen" else net.forward
    size = spec["net"]["image_size"]
    images = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        graph = FrozenGraph(method, mode, steps + 1, log=lambda _: None)
        started = time.perf_counter()
        graph(images)
        first = time.perf_counter() - started
        if graph.used != mode:
            raise RuntimeError(f"the {mode} graph was not used")
        started = time.perf_counter()
        for _ in range(steps):
            graph(images)
        seconds = (time.perf_counter() - started) / steps
    return {"per_second": BATCH / seconds, "batch": seconds, "setup": max(0.0, first - seconds)}


def in_fresh_process(case: str, mode: str, bf16: bool, steps: int) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = [sys.executable, __file__, "--one", case, mode, str(int(bf16)), str(steps)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=6, help="timed batches after the first")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        case, mode, bf16, steps = args.one
        print(json.dumps(measure(case, mode, bf16 == "1", int(steps))))
        return
    import torch

    from lightning_siamese.models.frozen_graph import COMPILE_SECONDS, pays

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}; auto "
        f"compiles when the eager time saved > {COMPILE_SECONDS:.0f} s at the assumed speed-up"
    )
    header = (
        "case        | precision | eager img/s | compiled img/s | speed-up | compile s | "
        "images  | pass eager s | pass compiled s | auto"
    )
    print(header)
    print("-" * len(header))
    for case in args.cases:
        for bf16 in (False, True):
            eager = in_fresh_process(case, "eager", bf16, args.steps)
            compiled = in_fresh_process(case, "inductor", bf16, args.steps)
            dtype = torch.bfloat16 if bf16 else torch.float32
            for count in CASES[case]["images"]:
                batches = -(-count // BATCH)
                whole_eager = batches * eager["batch"]
                whole_compiled = compiled["setup"] + batches * compiled["batch"]
                auto = "compile" if pays(eager["batch"], batches - 1, dtype) else "eager"
                print(
                    f"{case:<11} | {'bf16' if bf16 else 'fp32':<9} | "
                    f"{eager['per_second']:>11.1f} | {compiled['per_second']:>14.1f} | "
                    f"{compiled['per_second'] / eager['per_second']:>7.2f}x | "
                    f"{compiled['setup']:>9.1f} | {count:>7,} | {whole_eager:>12.0f} | "
                    f"{whole_compiled:>15.0f} | {auto}"
                )


if __name__ == "__main__":
    main()
