"""Where a training step runs below the machine's convolution rate: the frozen part's forward
(what the feature cache's build runs) and the trainable tail's forward and backward, layer by
layer, in fp32 and under bf16 autocast (what ``bf16-mixed`` runs on a CPU), grouped by kind of
layer.

    .venv/bin/python benchmarks/layer_rates.py                 # the ttl config and the demo's
    .venv/bin/python benchmarks/layer_rates.py --nets demo --precisions bf16

For each network (``ttl``: ``configs/ttl.yaml``'s ResNet50 tail, ``layer4[1:]`` and the
Flatten-Dense head, at 200 px; ``demo``: ``configs/demo.yaml``'s EfficientNet-Lite0 blocks 2.0 to
4.2 and pooled head, at 96 px), random weights, batch 64, in training mode:

1. the frozen part's forward in eval mode (the network's own pass), and the same with its
   batch norms folded into the convolutions before them (``models/folding.py``: what the
   feature cache runs, where there is a plain ``BatchNorm2d`` to fold); then the whole step of
   the tail (forward, then the backward of a sum of squares); each the median of
   ``--repeats`` runs;
2. each leaf layer alone on the input it got in that pass (captured under the same precision),
   its forward and, in the tail, its backward (weights and input), median of ``--repeats``
   runs, its floating-point work counted by ``torch.utils.flop_counter``;
3. the layers grouped by kind (1x1 convolution, kxk convolution, depthwise convolution,
   linear, batch norm (with its activation, in timm's networks), activation, the rest):
   seconds per step, GFLOP/s, and the share of this machine's measured 3x3 convolution rate in
   the run's precision.

The layers' isolated times add up close to the step's (the table prints both), so the
groups say which kind of layer holds the step back. Timings are on however many threads torch
uses (``--threads``, default: every core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from frozen_graph import DEMO_NET  # noqa: E402
from keras_comparison import peak_rates  # noqa: E402

from lightning_siamese.models.embedding import EmbeddingNet  # noqa: E402
from lightning_siamese.models.folding import FoldedFrozenPart  # noqa: E402

#: The two configs' networks, as ``EmbeddingNet`` arguments, and their image sizes.
NETS: dict[str, dict[str, object]] = {
    "ttl": {"backbone": "resnet50", "freeze": "layer4.0", "head": "mlp", "image_size": 200},
    "demo": dict(DEMO_NET),
}


def kind(module: nn.Module) -> str:
    """The group a leaf layer's time is counted in."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise convolution"
        return "1x1 convolution" if module.kernel_size == (1, 1) else "kxk convolution"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batch norm"
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish)):
        return "activation"
    return "the rest"


def leaves(module: nn.Module) -> list[nn.Module]:
    """The layers timed one by one: modules without children, and batch norms whole (timm's
    ``BatchNormAct2d`` runs its activation inside)."""
    children = list(module.children())
    if not children or isinstance(module, nn.modules.batchnorm._BatchNorm):
        return [module]
    return [leaf for child in children for leaf in leaves(child)]


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step(net: EmbeddingNet, features: torch.Tensor, precision: AbstractContextManager) -> None:
    net.zero_grad(set_to_none=True)
    with precision:
        embeddings = net.forward_tail(features)
    embeddings.float().square().sum().backward()


def captured_inputs(
    net: EmbeddingNet, run: Callable[[], object], precision: AbstractContextManager
) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Every leaf layer ``run`` calls, in order, with the input it got."""
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {module: name for name, module in net.named_modules()}
    hooks = []

    def record(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.append((names[module], module, args[0].detach().clone()))

    for module in leaves(net):
        hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad(), precision:
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def layer_costs(
    module: nn.Module,
    source: torch.Tensor,
    needs_input_grad: bool,
    precision: Callable[[], AbstractContextManager],
    repeats: int,
) -> dict[str, float]:
    """One layer alone: forward seconds and FLOPs, and backward ones where it has gradients
    to compute (none in the frozen part)."""
    base = source.detach().requires_grad_(needs_input_grad and source.is_floating_point())

    def fresh(tensor: torch.Tensor) -> torch.Tensor:
        """A copy for an in-place layer (which would overwrite ``base``), else ``base``
        itself: a copy would add a pass over memory to the time of every other layer."""
        return tensor.clone() if getattr(module, "inplace", False) else tensor

    trains = any(p.requires_grad for p in module.parameters())
    if not (base.requires_grad or trains):
        with torch.no_grad(), FlopCounterMode(display=False) as counter, precision():
            module(fresh(base))

        def inference() -> None:
            with torch.no_grad(), precision():
                module(fresh(base))

        return {
            "forward_seconds": median_seconds(inference, repeats),
            "forward_flops": counter.get_total_flops(),
        }

    def forward() -> torch.Tensor:
        with precision():
            return module(fresh(base))

    output = forward()
    grad = torch.randn_like(output)

    def backward() -> None:
        module.zero_grad(set_to_none=True)
        base.grad = None
        forward().backward(grad)

    with FlopCounterMode(display=False) as counter:
        forward()
    forward_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        backward()
    backward_flops = counter.get_total_flops() - forward_flops
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        # The counter takes a grouped convolution's backward for a dense one (it counted a
        # depthwise one at hundreds of times its forward): the weights' gradient costs what the
        # forward does, and so does the input's where it is needed.
        backward_flops = forward_flops * (2 if base.requires_grad else 1)
    forward_seconds = median_seconds(forward, repeats)
    return {
        "forward_seconds": forward_seconds,
        "backward_seconds": max(median_seconds(backward, repeats) - forward_seconds, 0.0),
        "forward_flops": forward_flops,
        "backward_flops": backward_flops,
    }


def grouped(
    layers: list[tuple[str, nn.Module, torch.Tensor]],
    training: bool,
    precision: Callable[[], AbstractContextManager],
    repeats: int,
) -> dict[str, dict[str, float]]:
    """Every layer's costs, summed by :func:`kind`; ``training``: the backward too, with the
    input's gradient for every layer but the first (whose input is data)."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for index, (_, module, source) in enumerate(layers):
        costs = layer_costs(module, source, training and index > 0, precision, repeats)
        group = groups[kind(module)]
        group["layers"] += 1
        for key, value in costs.items():
            group[key] += value
    return groups


def print_groups(title: str, groups: dict[str, dict[str, float]], conv_rate: float) -> None:
    parts = ("forward_seconds", "backward_seconds", "forward_flops", "backward_flops")
    total = {key: sum(group.get(key, 0.0) for group in groups.values()) for key in parts}
    print(title)
    header = (
        f"{'layers':<22} {'n':>3} | {'fwd ms':>7} {'GFLOP/s':>8} {'of conv':>7} | "
        f"{'bwd ms':>7} {'GFLOP/s':>8} {'of conv':>7} | {'share of time':>13}"
    )
    print(header)
    print("-" * len(header))
    everything = total["forward_seconds"] + total["backward_seconds"]
    ordered = sorted(
        groups.items(), key=lambda item: -(item[1]["forward_seconds"] + item[1]["backward_seconds"])
    )
    for label, group in [*ordered, ("all", total)]:
        cells = []
        for part in ("forward", "backward"):
            seconds, flops = group.get(f"{part}_seconds", 0.0), group.get(f"{part}_flops", 0.0)
            rate = flops / seconds if seconds and flops >= 1e6 else 0.0  # not a pooling's
            shown = f"{rate / 1e9:>8.0f} {rate / conv_rate:>7.0%}" if rate else f"{'-':>8} {'-':>7}"
            cells.append(f"{seconds * 1e3:>7.1f} {shown}")
        seconds = group.get("forward_seconds", 0.0) + group.get("backward_seconds", 0.0)
        count = int(group.get("layers", sum(g["layers"] for g in groups.values())))
        print(f"{label:<22} {count:>3} | {cells[0]} | {cells[1]} | {seconds / everything:>13.0%}")


def report(name: str, dtype: str, batch: int, repeats: int, conv_rate: float) -> None:
    torch.manual_seed(0)
    settings = dict(NETS[name])
    image_size = int(settings.pop("image_size"))  # type: ignore[call-overload]
    net = EmbeddingNet(weights="none", image_size=image_size, **settings)  # type: ignore[arg-type]
    net.train()

    def precision() -> AbstractContextManager:
        if dtype == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    images = torch.randn(batch, 3, image_size, image_size)
    features = net.forward_frozen(images)
    folded = FoldedFrozenPart.of(net)
    with precision(), torch.no_grad():
        frozen_seconds = median_seconds(lambda: net.forward_frozen(images), repeats)
        folded_seconds = median_seconds(lambda: folded(images), repeats) if folded else 0.0
    whole = median_seconds(lambda: step(net, features, precision()), repeats)
    frozen_layers = captured_inputs(net, lambda: net.forward_frozen(images), precision())
    tail_layers = captured_inputs(net, lambda: net.forward_tail(features), precision())
    frozen = grouped(frozen_layers, False, precision, repeats)
    tail = grouped(tail_layers, True, precision, repeats)
    alone = sum(g.get("forward_seconds", 0.0) for g in frozen.values())
    print(f"\n{name}, {dtype}, batch {batch}, 3x3 convolution rate {conv_rate / 1e9:.0f} GFLOP/s")
    folding = (
        f"with {folded.folded} batch norms folded into their convolutions (the cache's pass) "
        f"{folded_seconds * 1e3:.0f} ms ({frozen_seconds / folded_seconds:.2f}x"
        + (")" if folded.state == "folded" else "; its check failed: the network's pass ran)")
        if folded
        else "no plain batch norm to fold"
    )
    print_groups(
        f"the frozen part's forward: {frozen_seconds * 1e3:.0f} ms (its layers alone "
        f"{alone * 1e3:.0f} ms); {folding}",
        frozen,
        conv_rate,
    )
    alone = sum(
        g.get("forward_seconds", 0.0) + g.get("backward_seconds", 0.0) for g in tail.values()
    )
    print_groups(
        f"the tail's step: {whole * 1e3:.0f} ms (its layers alone {alone * 1e3:.0f} ms)",
        tail,
        conv_rate,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["ttl", "demo"])
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates = {dtype: peak_rates(dtype, args.threads)["conv"] for dtype in args.precisions}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}")
    for name in args.nets:
        for dtype in args.precisions:
            report(name, dtype, args.batch_size, args.repeats, rates[dtype])
    print(
        "\nfwd / bwd: each layer alone on its captured input, median of "
        f"{args.repeats}; bwd: the gradients of the weights and the input (none for the first "
        "layer's input, as in training); of conv: against the 3x3 convolution rate above"
    )


if __name__ == "__main__":
    main()
