"""A network part that no longer changes, run over many images as one frozen inference graph.

Pure torch. The frozen trunk's pass over a split (the feature cache) or a trained model's pass
over a gallery runs the same weights on batch after batch: tracing it once into a frozen graph
(weights folded in as constants, BatchNorm folded into the convolutions, under bf16 autocast
the weights cast once instead of at every call) makes each batch cheaper. Measured on the
seed's frozen ResNet50 (2 CPU threads, batch 64, ``benchmarks/train_throughput.py``): see
``docs/benchmarks.md``.

``jit`` (``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``) sets up in a few
batches' time; ``inductor`` (``torch.compile`` with freezing) in ~20 s with a cold cache (its
kernels are compiled by a C++ compiler and cached on disk), for about jit's speed on the CPU
measured (within the 10% runs vary by). ``auto`` uses ``jit`` on the CPU when there are at least
:data:`MIN_BATCHES` batches to repay it, and eager on a GPU (not measured there; ask for
``jit`` or ``inductor`` explicitly). Whatever the mode, the graph is checked against the eager
result of the first batch (and of its first image alone, another batch size), after a first
call that lets jit profile and optimise, and dropped (with a note) when it fails to build or
disagrees: the eager path is always the fallback.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

FrozenGraphMode = Literal["auto", "jit", "inductor", "eager"]
MODES: tuple[str, ...] = ("auto", "jit", "inductor", "eager")
#: ``auto`` builds a graph for at least this many batches: the jit setup (the trace, the
#: freeze and the check against eager) cost 3-4 eager batches of 64 and each later batch ran
#: ~1.3x faster (``benchmarks/train_throughput.py``, fp32 and bf16): repaid after 14-18.
MIN_BATCHES = 16
#: Largest relative difference (L2 norm of the difference over that of the eager output)
#: accepted between the graph and eager on the first batch and on its first image, by output
#: precision: fp32 graphs differ by reassociation and BatchNorm folding only (~1e-6 measured).
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
LOW_PRECISION_TOLERANCE = 2e-2


class _Method(nn.Module):
    """``owner.name(images)`` as a module's forward (what tracing and freezing need)."""

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


class FrozenGraph:
    """``method(images)`` batch after batch (a bound method of a module whose weights do not
    change meanwhile), through a frozen graph from the second batch on where it pays.

    Args:
        method: e.g. ``net.forward_frozen`` or ``net.forward``; the module's train/eval mode is
            left as it was (the graph is traced in eval mode).
        mode: ``auto``, ``jit``, ``inductor`` or ``eager`` (see the module's docstring).
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
        self.mode = mode
        self.batches = batches
        self.log = log
        self.graph: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.batch_size = 0
        self.calls = 0
        #: What ran: ``eager``, ``jit`` or ``inductor`` (set at the first call).
        self.used = "eager"
        self.setup_seconds = 0.0

    def wanted(self, device: torch.device) -> str:
        """The graph to build: ``jit``, ``inductor`` or ``eager`` (``auto``: ``jit`` on the CPU
        for :data:`MIN_BATCHES` or more; eager on a GPU, where it was not measured)."""
        if self.mode == "auto":
            enough = self.batches is None or self.batches >= MIN_BATCHES
            return "jit" if enough and device.type == "cpu" else "eager"
        return self.mode

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.graph is not None:
            return self._run_graph(images)
        output = self.method(images)
        if self.calls == 1 and (kind := self.wanted(images.device)) != "eager":
            self._build(kind, images, output)
        return output

    def _run_graph(self, images: torch.Tensor) -> torch.Tensor:
        assert self.graph is not None
        return self._run_graph_with(self.graph, self.used, self.batch_size, images)

    @staticmethod
    def _run_graph_with(
        graph: Callable[[torch.Tensor], torch.Tensor], kind: str, size: int, images: torch.Tensor
    ) -> torch.Tensor:
        count = len(images)
        if kind == "inductor" and count < size:  # compiled for one batch size: no recompiling
            padding = images[:1].expand(size - count, *images.shape[1:])
            return graph(torch.cat([images, padding]))[:count]
        return graph(images)

    def _build(self, kind: str, images: torch.Tensor, eager: torch.Tensor) -> None:
        owner = getattr(self.method, "__self__", None)
        if not isinstance(owner, nn.Module):
            self.log(f"{kind} graph: not a module's method; running eager")
            return
        started = time.perf_counter()
        # A shape the trace baked in shows on another batch size (the last batch).
        one_eager = self.method(images[:1])
        modes = {module: module.training for module in owner.modules()}
        wrapper = _Method(owner, self.method.__name__).eval()
        try:
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                # jit's deprecation notices: chosen knowingly. A TracerWarning says a value
                # (a shape) is baked in: fine for the fixed image size, and a batch size baked
                # in shows in the check at another batch size below.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("always", torch.jit.TracerWarning)
                graph = self._make(kind, wrapper, images)
                # The first call of a jit graph profiles; the optimised graph runs from the
                # second on: that is the one compared.
                for _ in range(2):
                    output = graph(images)
                    one = self._run_graph_with(graph, kind, len(images), images[:1])
        except Exception as error:
            self.log(f"{kind} graph failed ({type(error).__name__}: {error}); running eager")
            return
        finally:
            for module, training in modes.items():
                module.training = training
        self.setup_seconds = time.perf_counter() - started
        tolerance = TOLERANCE.get(eager.dtype, LOW_PRECISION_TOLERANCE)
        if output.shape != eager.shape or output.dtype != eager.dtype:
            self.log(f"{kind} graph gives {tuple(output.shape)} {output.dtype}; running eager")
            return
        difference = max(relative_difference(output, eager), relative_difference(one, one_eager))
        if not difference <= tolerance:
            self.log(
                f"{kind} graph differs from eager by {difference:.1e} (tolerance {tolerance:.0e}) "
                "on the first batch; running eager"
            )
            return
        self.graph, self.used, self.batch_size = graph, kind, len(images)
        baked = sum(issubclass(w.category, torch.jit.TracerWarning) for w in caught)
        self.log(
            f"{kind} graph built in {self.setup_seconds:.1f} s "
            f"(relative difference to eager on the first batch {difference:.1e}"
            + (f"; {baked} traced value(s) fixed, checked at two batch sizes)" if baked else ")")
        )

    @staticmethod
    def _make(
        kind: str, wrapper: nn.Module, images: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if kind == "jit":
            traced = torch.jit.trace(wrapper, images, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        compiled = torch.compile(wrapper, dynamic=False, options={"freezing": True})

        def run(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # freezing folds the weights only outside autograd
                return compiled(batch)

        return run
