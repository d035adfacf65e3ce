"""A network part that no longer changes, run over many images as one compiled graph.

Pure torch. The frozen trunk's pass over a split (the feature cache) or a trained model's pass
over a gallery runs the same weights on batch after batch: compiling it once with
``torch.compile`` (inductor, with freezing: weights folded in as constants, BatchNorm folded
into the convolutions) makes each batch cheaper, after a compile that costs tens of seconds on
a CPU (its kernels are built by a C++ compiler and cached on disk, so a later compile of the
same network is faster). ``benchmarks/frozen_graph.py`` measures both; ``docs/benchmarks.md``
has the figures.

``auto`` compiles only where that pays: on the CPU, when the batches still to run, at the pace
of the first (eager) batch, would take longer by more than the compile costs
(:data:`COMPILE_SECONDS`) at the speed-up measured (:data:`SPEEDUP`); eager on a GPU (not
measured there; ask for ``inductor``). Whatever the mode, the graph is checked against the
eager result of the first batch (and of its first image alone, another batch size) and
dropped, with a note, when it fails to build or disagrees: the eager path is always the
fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

#: ``jit``: the earlier name of the compiled graph (TorchScript is deprecated), now inductor.
FrozenGraphMode = Literal["auto", "inductor", "eager", "jit"]
MODES: tuple[str, ...] = ("auto", "inductor", "eager", "jit")
#: Seconds a first compile costs, to repay: 15-36 s with a cold cache on 2 CPU cores for the
#: networks of ``configs/demo.yaml`` and ``configs/ttl.yaml`` over three runs of
#: ``benchmarks/frozen_graph.py`` (about 9 s warm): above the highest, so as not to count on luck.
COMPILE_SECONDS = 40.0
#: How much faster a compiled batch runs than an eager one, by output precision, over those
#: runs: 1.10-1.43x (the demo's trunk), 1.23-1.38x (the Keras example's trunk) and 1.84-2.02x
#: (the demo's whole network) in float32; 1.33-2.10x, 1.25-1.81x and 1.37-1.58x in bfloat16.
#: Near the low ends, so that ``auto`` compiles only where it clearly pays.
SPEEDUP = {torch.float32: 1.3}
LOW_PRECISION_SPEEDUP = 1.2
#: Largest relative difference (L2 norm of the difference over that of the eager output)
#: accepted between the graph and eager on the first batch and on its first image, by output
#: precision: fp32 graphs differ by reassociation and BatchNorm folding only (~1e-6 measured).
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
LOW_PRECISION_TOLERANCE = 2e-2


class _Method(nn.Module):
    """``owner.name(images)`` as a module's forward (what compiling needs)."""

    def __init__(self, owner: nn.Module, name: str) -> None:
        super().__init__()
        self.owner = owner
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.name)(images)


def relative_difference(graph: torch.Tensor, eager: torch.Tensor) -> float:
    """``|graph - eager| / |eager|`` in the L2 norm, in float64 (0 when both are zero)."""
    difference = (graph.double() - eager.double()).norm().item()
    scale = eager.double().norm().item()
    return difference / scale if scale else difference


def pays(batch_seconds: float, batches_left: int, dtype: torch.dtype) -> bool:
    """Whether compiling repays itself: the eager time of the batches left, at
    ``batch_seconds`` each, less their compiled time, beats :data:`COMPILE_SECONDS`."""
    speedup = SPEEDUP.get(dtype, LOW_PRECISION_SPEEDUP)
    return batch_seconds * batches_left * (1 - 1 / speedup) > COMPILE_SECONDS


class FrozenGraph:
    """``method(images)`` batch after batch (a bound method of a module whose weights do not
    change meanwhile), through a compiled graph from the second batch on where it pays.

    Args:
        method: e.g. ``net.forward_frozen`` or ``net.forward``; the module's train/eval mode is
            left as it was (the graph is compiled in eval mode).
        mode: ``auto``, ``inductor`` (``jit`` is its older name) or ``eager`` (see the module's
            docstring).
        batches: how many batches will run (for ``auto``); None counts as many.
        log: where the one line saying what was chosen goes.
    """

    def __init__(
        self,
        method: Callable[[torch.Tensor], torch.Tensor],
        mode: FrozenGraphMode | str = "auto",
        batches: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"frozen graph mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.method = method
        self.mode = "inductor" if mode == "jit" else mode
        self.batches = batches
        self.log = log
        self.graph: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.batch_size = 0
        self.calls = 0
        #: What ran: ``eager`` or ``inductor`` (set at the first call).
        self.used = "eager"
        self.setup_seconds = 0.0

    def wanted(self, output: torch.Tensor, batch_seconds: float) -> bool:
        """Whether to compile, after a first eager batch that gave ``output`` in
        ``batch_seconds`` (``auto``: on the CPU where :func:`pays` says so)."""
        if self.mode != "auto":
            return self.mode == "inductor"
        if output.device.type != "cpu":
            return False
        left = (self.batches - 1) if self.batches is not None else 1 << 30
        return pays(batch_seconds, left, output.dtype)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        # A batch larger than the one compiled for (the first) runs eager: compiling again
        # would cost another compile, and that graph would go unchecked.
        if self.graph is not None and len(images) <= self.batch_size:
            try:
                return self._run_graph(self.graph, self.batch_size, images)
            except Exception as error:  # eager is always the fallback
                first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                self.log(f"inductor graph failed ({type(error).__name__}: {first}); eager on")
                self.graph, self.used = None, "eager"
        started = time.perf_counter()
        output = self.method(images)
        if self.calls == 1 and self.wanted(output, time.perf_counter() - started):
            self._build(images, output)
        return output

    @staticmethod
    def _run_graph(
        graph: Callable[[torch.Tensor], torch.Tensor], size: int, images: torch.Tensor
    ) -> torch.Tensor:
        count = len(images)
        if count < size:  # compiled for one batch size: pad rather than compile again
            padding = images[:1].expand(size - count, *images.shape[1:])
            return graph(torch.cat([images, padding]))[:count]
        return graph(images)

    def _build(self, images: torch.Tensor, eager: torch.Tensor) -> None:
        owner = getattr(self.method, "__self__", None)
        if not isinstance(owner, nn.Module):
            self.log("inductor graph: not a module's method; running eager")
            return
        started = time.perf_counter()
        # A shape the compile baked in shows on another batch size (the last batch).
        one_eager = self.method(images[:1])
        modes = {module: module.training for module in owner.modules()}
        wrapper = _Method(owner, self.method.__name__).eval()
        try:
            graph = self._make(wrapper)
            output = graph(images)
            one = self._run_graph(graph, len(images), images[:1])
        except Exception as error:  # no C++ compiler, an unsupported operation, ...
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            self.log(f"inductor graph failed ({type(error).__name__}: {first}); running eager")
            return
        finally:
            for module, training in modes.items():
                module.training = training
        self.setup_seconds = time.perf_counter() - started
        tolerance = TOLERANCE.get(eager.dtype, LOW_PRECISION_TOLERANCE)
        if output.shape != eager.shape or output.dtype != eager.dtype:
            self.log(f"inductor graph gives {tuple(output.shape)} {output.dtype}; running eager")
            return
        difference = max(relative_difference(output, eager), relative_difference(one, one_eager))
        if not difference <= tolerance:
            self.log(
                f"inductor graph differs from eager by {difference:.1e} (tolerance "
                f"{tolerance:.0e}) on the first batch; running eager"
            )
            return
        self.graph, self.used, self.batch_size = graph, "inductor", len(images)
        self.log(
            f"inductor graph built in {self.setup_seconds:.1f} s (relative difference to "
            f"eager on the first batch {difference:.1e})"
        )

    @staticmethod
    def _make(wrapper: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        compiled = torch.compile(wrapper, dynamic=False, options={"freezing": True})

        def run(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # freezing folds the weights only outside autograd
                return compiled(batch)

        return run
