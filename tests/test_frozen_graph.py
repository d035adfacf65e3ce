"""The frozen part run as a frozen inference graph: the same outputs as eager at every batch
size, the module's mode left alone, and eager whenever the graph fails, disagrees or would not
pay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_siamese.applications.inference import embed_paths, load_model, network_graph
from lightning_siamese.data.images import load_image
from lightning_siamese.models import frozen_graph
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.frozen_graph import MIN_BATCHES, FrozenGraph


def small_net() -> EmbeddingNet:
    torch.manual_seed(0)
    return EmbeddingNet(
        backbone="resnet18", weights="none", freeze="layer3.0", head="seed", image_size=48
    )


def batches(count: int, size: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 48, 48, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_jit_graph_gives_the_eager_features(precision: str) -> None:
    net = small_net().train()  # as during fit: the tail trains, the frozen units stay in eval
    images = [*batches(3), batches(1, size=2)[0]]  # a smaller last batch
    logged: list[str] = []
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        eager = [net.forward_frozen(batch) for batch in images]
        graph = FrozenGraph(net.forward_frozen, "jit", len(images), logged.append)
        outputs = [graph(batch) for batch in images]
    assert graph.used == "jit" and "jit graph built" in logged[0]
    assert net.training and net.head.training, "the module's mode is left as it was"
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    for got, want in zip(outputs, eager, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=tolerance, atol=tolerance)


def test_auto_builds_a_graph_only_for_enough_batches() -> None:
    net = small_net().eval()
    with torch.inference_mode():
        few = FrozenGraph(net.forward_frozen, "auto", MIN_BATCHES - 1, lambda _: None)
        few(batches(1)[0])
        many = FrozenGraph(net.forward_frozen, "auto", MIN_BATCHES, lambda _: None)
        many(batches(1)[0])
    assert few.used == "eager" and many.used == "jit"


def test_eager_when_the_graph_fails_or_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    net = small_net().eval()
    images = batches(2)
    with torch.inference_mode():
        want = [net.forward_frozen(batch) for batch in images]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken)
    logged: list[str] = []
    with torch.inference_mode():
        graph = FrozenGraph(net.forward_frozen, "jit", 10, logged.append)
        got = [graph(batch) for batch in images]
    assert graph.used == "eager" and "failed (RuntimeError: cannot trace this)" in logged[0]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))

    # A graph that builds but computes something else is caught on the first batch.
    monkeypatch.setattr(
        FrozenGraph, "_make", staticmethod(lambda kind, wrapper, x: lambda y: wrapper(y) * 1.01)
    )
    logged.clear()
    with torch.inference_mode():
        graph = FrozenGraph(net.forward_frozen, "jit", 10, logged.append)
        got = [graph(batch) for batch in images]
    assert graph.used == "eager" and "differs from eager" in logged[0]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_plain_functions_and_bad_modes() -> None:
    logged: list[str] = []
    graph = FrozenGraph(lambda x: x * 2, "jit", 10, logged.append)
    assert torch.equal(graph(torch.ones(2)), torch.full((2,), 2.0))
    assert graph.used == "eager" and "not a module's method" in logged[0]
    with pytest.raises(ValueError, match="auto, jit, inductor, eager"):
        FrozenGraph(lambda x: x, "fast")
    assert frozen_graph.relative_difference(torch.zeros(3), torch.zeros(3)) == 0


@pytest.mark.slow
def test_inductor_graph_gives_the_eager_features() -> None:
    """torch.compile with freezing (compiles C++ kernels: tens of seconds)."""
    net = small_net().eval()
    images = [*batches(2), batches(1, size=3)[0]]
    with torch.inference_mode():
        eager = [net.forward_frozen(batch) for batch in images]
        graph = FrozenGraph(net.forward_frozen, "inductor", len(images), lambda _: None)
        outputs = [graph(batch) for batch in images]
    assert graph.used == "inductor"
    for got, want in zip(outputs, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_embedding_files_through_the_graph(trained_run: tuple[Path, Path, Path]) -> None:
    """``evaluate``/``search`` embed many files through a graph of the whole trained network:
    the same embeddings as the model's own eager forward."""
    model = load_model(trained_run[2], "cpu")
    paths = sorted((trained_run[0] / "left").iterdir())[: MIN_BATCHES + 2]
    graph = network_graph(model, len(paths), batch_size=1)
    embeddings = embed_paths(model, paths, batch_size=1, graph=graph)
    assert graph.used == "jit"
    transform = model.transform()
    want = torch.cat([model.embed(transform(load_image(path))[None]) for path in paths])
    torch.testing.assert_close(embeddings, want, rtol=1e-4, atol=1e-5)
