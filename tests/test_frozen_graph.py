"""The frozen part run as one compiled graph: the same outputs as eager at every batch size, the
module's mode left alone, compiled only where it pays, and eager whenever the graph fails or
disagrees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.data.images import load_image
from lightning_siamese.models import frozen_graph
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.frozen_graph import COMPILE_SECONDS, FrozenGraph, pays


class TinyTrunk(nn.Module):
    """Two convolutions with BatchNorm: quick to compile, and what freezing folds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2)
        )
        self.head = nn.Linear(4, 2)  # trains: its mode must survive the compile

    def forward_frozen(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def batches(count: int, size: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 24, 24, generator=generator) for _ in range(count)]


def test_compiled_graph_gives_the_eager_features() -> None:
    trunk = TinyTrunk().train()
    trunk.layers.eval()  # as during fit: the frozen units in eval, the rest training
    images = [*batches(2), batches(1, size=2)[0]]  # a smaller last batch
    logged: list[str] = []
    with torch.inference_mode():
        eager = [trunk.forward_frozen(batch) for batch in images]
        graph = FrozenGraph(trunk.forward_frozen, "inductor", len(images), logged.append)
        outputs = [graph(batch) for batch in images]
    assert graph.used == "inductor" and "inductor graph built" in logged[0]
    assert trunk.training and trunk.head.training and not trunk.layers.training
    for got, want in zip(outputs, eager, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_auto_compiles_only_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    # Passes measured by benchmarks/frozen_graph.py (docs/benchmarks.md, f: seconds a batch of
    # 64, batches left): the Keras example's ResNet50 trunk over Totally Looks Like repays a
    # compile in fp32 ...
    assert pays(64 / 19.2, 169, torch.float32)
    # ... the demo's small trunk over the emoji (54 batches) does not, nor the demo's whole
    # network in bf16 over a gallery of 100,000 (1.37x measured, 1,562 batches) ...
    assert not pays(64 / 476.1, 54, torch.float32)
    assert not pays(64 / 823.2, 1562, torch.bfloat16)
    # ... which it does in fp32 (1.84x measured).
    assert pays(64 / 293.8, 1562, torch.float32)
    built: list[str] = []
    monkeypatch.setattr(FrozenGraph, "_build", lambda self, images, eager: built.append("x"))
    cpu = torch.zeros(1)
    assert not FrozenGraph(lambda x: x, "auto", 60).wanted(cpu, 0.14)
    assert FrozenGraph(lambda x: x, "auto", 10_000).wanted(cpu, 0.14)
    assert FrozenGraph(lambda x: x, "auto", None).wanted(cpu, COMPILE_SECONDS / 1e6)
    assert FrozenGraph(lambda x: x, "inductor", 1).wanted(cpu, 0.0)
    assert not FrozenGraph(lambda x: x, "eager", 10_000).wanted(cpu, 10.0)
    # The first batch's own time decides: a quick one, few batches left: eager.
    trunk = TinyTrunk().eval()
    with torch.inference_mode():
        FrozenGraph(trunk.forward_frozen, "auto", 3)(batches(1)[0])
    assert built == []


def test_eager_when_the_graph_fails_or_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    trunk = TinyTrunk().eval()
    images = batches(2)
    with torch.inference_mode():
        want = [trunk.forward_frozen(batch) for batch in images]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot compile this")

    monkeypatch.setattr(torch, "compile", broken)
    logged: list[str] = []
    with torch.inference_mode():
        graph = FrozenGraph(trunk.forward_frozen, "inductor", 10, logged.append)
        got = [graph(batch) for batch in images]
    assert graph.used == "eager" and "failed (RuntimeError: cannot compile this)" in logged[0]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))

    # A graph that builds but computes something else is caught on the first batch.
    monkeypatch.setattr(
        FrozenGraph, "_make", staticmethod(lambda wrapper: lambda y: wrapper(y) * 1.01)
    )
    logged.clear()
    with torch.inference_mode():
        graph = FrozenGraph(trunk.forward_frozen, "inductor", 10, logged.append)
        got = [graph(batch) for batch in images]
    assert graph.used == "eager" and "differs from eager" in logged[0]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_larger_batches_and_later_failures_run_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph runs the batch size it was checked at and smaller ones (padded); a larger
    batch, and every batch after the graph fails, run eager."""
    trunk = TinyTrunk().eval()
    sizes: list[int] = []

    def counting(wrapper: nn.Module):  # type: ignore[no-untyped-def]
        def graph(batch: torch.Tensor) -> torch.Tensor:
            sizes.append(len(batch))
            if len(sizes) > 4:
                raise RuntimeError("a kernel failed")
            return wrapper(batch)

        return graph

    monkeypatch.setattr(FrozenGraph, "_make", staticmethod(counting))
    logged: list[str] = []
    images = batches(1, size=6)[0]
    with torch.inference_mode():
        graph = FrozenGraph(trunk.forward_frozen, "inductor", 10, logged.append)
        graph(images)  # eager, then the graph built and checked (two calls, 6 and 1 padded)
        assert graph.used == "inductor" and sizes == [6, 6]
        want = trunk.forward_frozen(torch.cat([images, images]))
        assert torch.equal(graph(torch.cat([images, images])), want) and sizes == [6, 6]
        graph(images[:3])  # padded to 6
        assert sizes == [6, 6, 6]
        graph(images)
        got = graph(images)  # the graph fails: eager from here on
    assert torch.equal(got, trunk.forward_frozen(images))
    assert (
        graph.used == "eager" and "failed (RuntimeError: a kernel failed); eager on" in logged[-1]
    )


def test_plain_functions_old_and_bad_modes() -> None:
    logged: list[str] = []
    graph = FrozenGraph(lambda x: x * 2, "inductor", 10, logged.append)
    assert torch.equal(graph(torch.ones(2)), torch.full((2,), 2.0))
    assert graph.used == "eager" and "not a module's method" in logged[0]
    assert FrozenGraph(lambda x: x, "jit").mode == "inductor"  # an old config's value
    with pytest.raises(ValueError, match="auto, inductor, eager"):
        FrozenGraph(lambda x: x, "fast")
    assert frozen_graph.relative_difference(torch.zeros(3), torch.zeros(3)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_backbone_trunk_compiles_to_the_eager_features(precision: str) -> None:
    """A real backbone's frozen part, in fp32 and under bf16 autocast (tens of seconds)."""
    torch.manual_seed(0)
    net = EmbeddingNet("resnet18", weights="none", freeze="layer3.0", image_size=48).train()
    images = [*batches(2), batches(1, size=3)[0]]
    images = [torch.nn.functional.interpolate(batch, size=48) for batch in images]
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        eager = [net.forward_frozen(batch) for batch in images]
        graph = FrozenGraph(net.forward_frozen, "inductor", len(images), lambda _: None)
        outputs = [graph(batch) for batch in images]
    assert graph.used == "inductor" and net.training
    # bf16 rounds a few elements differently: compared by the relative L2 norm, as the check.
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    for got, want in zip(outputs, eager, strict=True):
        assert got.dtype == want.dtype
        assert frozen_graph.relative_difference(got, want) < tolerance


@pytest.mark.slow
def test_embedding_files_through_the_graph(trained_run: tuple[Path, Path, Path]) -> None:
    """``evaluate``/``search`` embed many files through a graph of the whole trained network:
    the same embeddings as the model's own eager forward."""
    model = load_model(trained_run[2], "cpu")
    paths = sorted((trained_run[0] / "left").iterdir())[:5]
    graph = FrozenGraph(model.net.forward, "inductor", len(paths), lambda _: None)
    embeddings = embed_paths(model, paths, batch_size=2, graph=graph)
    assert graph.used == "inductor"
    transform = model.transform()
    want = torch.cat([model.embed(transform(load_image(path))[None]) for path in paths])
    torch.testing.assert_close(embeddings, want, rtol=1e-4, atol=1e-5)
