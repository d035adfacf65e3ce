"""N processes train as one process with the global batch: 2 gloo processes with batch B against
1 process with 2B, from the same start, for a few SGD steps of a small network with the seed
head's BatchNorm layers (synchronised) under DDP: the loss of every step and every weight and
running statistic at the end agree to 1e-12 (in float64, where only the order of sums differs;
in float32 the same runs differ by rounding, amplified over four steps at this learning rate,
which tells nothing), for InfoNCE with groups, the triplet loss with batch-hard and semi-hard mining
(symmetric too), the plain triplet loss, InfoNCE and batch-hard with a cross-batch memory, and
InfoNCE through BatchNorm of other kinds (2-d with a cumulative average, timm's BatchNormAct2d,
1-d without running statistics). Also: the gathered rows and their gradients against one
process's, and which BatchNorm layers are synchronised.
"""

from __future__ import annotations

import os
import pickle
import socket
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_siamese.models.across_processes import GlobalBatch, all_reduce_sum, world
from lightning_siamese.models.cross_batch_memory import CrossBatchMemory
from lightning_siamese.models.embedding import EmbeddingNet
from lightning_siamese.models.losses import InfoNCELoss, TripletLoss
from lightning_siamese.models.synced_batch_norm import sync_batch_norm

PROCESSES, BATCH, STEPS, FEATURES = 2, 6, 4, 32
#: (name, loss settings); memory: (size, start).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("infonce-groups", {"loss": "infonce"}),
    ("batch-hard", {"loss": "triplet", "mining": "batch_hard"}),
    ("semi-hard-symmetric", {"loss": "triplet", "mining": "semi_hard", "symmetric": True}),
    ("plain-triplet", {"loss": "triplet"}),
    ("infonce-memory", {"loss": "infonce", "memory": (20, 1)}),
    ("batch-hard-memory", {"loss": "triplet", "mining": "batch_hard", "memory": (16, 1)}),
    ("infonce-convolutions", {"loss": "infonce", "net": "convolutions"}),
]


def seed_head() -> nn.Module:
    """The seed head's shape in small: Dense, ReLU, BatchNorm, Dense, ReLU, BatchNorm, Dense."""
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Linear(FEATURES, 16),
        nn.ReLU(),
        nn.BatchNorm1d(16),
        nn.Linear(16, 12),
        nn.ReLU(),
        nn.BatchNorm1d(12),
        nn.Linear(12, 8),
    )
    return layers.double()


def convolutions() -> nn.Module:
    """BatchNorm of other kinds: 2-d over the spatial positions with a cumulative average
    (momentum None), timm's BatchNormAct2d (then its activation), 1-d without running
    statistics."""
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Unflatten(1, (2, 4, 4)),
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4, momentum=None),
        BatchNormAct2d(4),
        nn.Flatten(),
        nn.Linear(64, 8),
        nn.BatchNorm1d(8, track_running_stats=False),
        nn.Linear(8, 6),
    )
    return layers.double()


def make_loss(settings: dict[str, Any]) -> nn.Module:
    memory = CrossBatchMemory(*settings["memory"]) if "memory" in settings else None
    if settings["loss"] == "infonce":
        return InfoNCELoss(temperature=0.2, memory=memory)
    mining, symmetric = settings.get("mining", "none"), settings.get("symmetric", False)
    return TripletLoss(margin=0.5, mining=mining, symmetric=symmetric, memory=memory)


def global_batches() -> list[dict[str, torch.Tensor]]:
    """Every step's global batch of 2B triplets; pairs 2k and 2k+1 share a group, and a few
    given negatives belong to a group of the batch."""
    generator = torch.Generator().manual_seed(1)
    size = BATCH * PROCESSES
    batches = []
    for step in range(STEPS):
        images = torch.randn(3, size, FEATURES, generator=generator, dtype=torch.float64)
        groups = torch.arange(size) // 2 + 100 * step
        negative_groups = torch.full((size,), -1)
        negative_groups[::5] = groups[1::5]
        batch = {"anchor": images[0], "positive": images[1], "negative": images[2]}
        batches.append({**batch, "groups": groups, "negative_groups": negative_groups})
    return batches


def train(settings: dict[str, Any], rank: int, processes: int) -> dict[str, Any]:
    """STEPS SGD steps on this process's share (rows rank::processes) of every global batch."""
    net = convolutions() if settings.get("net") == "convolutions" else seed_head()
    sync_batch_norm(net, frozen=set())
    model = nn.parallel.DistributedDataParallel(net) if processes > 1 else net
    loss_fn = make_loss(settings)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    losses = []
    for batch in global_batches():
        share = {key: value[rank::processes] for key, value in batch.items()}
        images = torch.cat([share["anchor"], share["positive"], share["negative"]])
        anchor, positive, negative = model(images).chunk(3)
        loss = loss_fn(anchor, positive, negative, share["groups"], share["negative_groups"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        logged = loss.detach().clone()  # the mean over the processes, as Lightning logs it
        losses.append(float(all_reduce_sum(logged) / processes))
    return {"losses": losses, "state": {k: v.clone() for k, v in net.state_dict().items()}}


def worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=PROCESSES)
    try:
        results = {name: train(settings, rank, PROCESSES) for name, settings in CASES}
        results["gathered"] = gathered_rows(rank)
        results["warnings"] = convolution_step()
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def gathered_rows(rank: int) -> dict[str, torch.Tensor]:
    """A global batch gathered from shares of 3 and 2 rows (uneven), and the gradient each
    process gets for its rows from sum(weights * global rows) computed on every process."""
    rows = 3 if rank == 0 else 2
    own = torch.arange(rows, dtype=torch.float64)[:, None] * 10 + rank
    own.requires_grad_(True)
    batch = GlobalBatch.gather(own, own * 2, own * 3, None, None)
    weights = torch.arange(batch.size, dtype=torch.float64)[:, None] + 1
    (batch.anchor * weights).sum().backward()
    assert own.grad is not None
    return {"anchor": batch.anchor.detach(), "local": batch.local, "grad": own.grad}


def convolution_step() -> list[str]:
    """One DDP step of an embedding network with trained convolutions fed channels-last images
    (the default), on 2 threads (oneDNN then gives the 1x1 convolutions channels-last
    gradients): the warnings it gives."""
    net = EmbeddingNet("timm/test_resnet", weights="none", head="pooled", image_size=32)
    assert any(p.requires_grad and p.dim() == 4 for p in net.parameters())
    model = nn.parallel.DistributedDataParallel(net)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(torch.randn(4, 3, 32, 32)).square().sum().backward()
    finally:
        torch.set_num_threads(threads)
    return [str(warning.message) for warning in caught]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_processes_train_as_one_with_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=PROCESSES, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(PROCESSES)]
    assert world() == (1, 0)  # this process: one, with the whole global batch
    results: dict[str, list[float]] = {}
    for name, settings in CASES:
        alone = train(settings, rank=0, processes=1)
        for rank in ranks:  # every process holds the same weights and logs the same losses
            torch.testing.assert_close(rank[name]["losses"], alone["losses"], rtol=1e-12, atol=0)
            for key, value in alone["state"].items():
                torch.testing.assert_close(
                    rank[name]["state"][key], value, rtol=1e-12, atol=1e-12, msg=f"{name} {key}"
                )
        assert alone["losses"][0] != alone["losses"][-1], name  # it trained
        results[name] = alone["losses"]
    # The memory joins the negatives from its start step on: the losses part from then.
    for with_memory, without, start in (
        ("infonce-memory", "infonce-groups", 1),
        ("batch-hard-memory", "batch-hard", 1),
    ):
        assert results[with_memory][:start] == results[without][:start]
        assert results[with_memory][start:] != results[without][start:]
    # Uneven shares: the global order deals row i to process i % 2 while both have rows.
    order = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]  # (rank, row)
    expected = torch.tensor([[row * 10.0 + rank] for rank, row in order], dtype=torch.float64)
    for rank in ranks:
        torch.testing.assert_close(rank["gathered"]["anchor"], expected)
    assert ranks[0]["gathered"]["local"].tolist() == [0, 2, 4]
    assert ranks[1]["gathered"]["local"].tolist() == [1, 3]
    # Each row's gradient: its weight (position + 1) from each of the 2 processes' sums.
    torch.testing.assert_close(
        ranks[0]["gathered"]["grad"], torch.tensor([[2.0], [6], [10]]).double()
    )
    torch.testing.assert_close(ranks[1]["gathered"]["grad"], torch.tensor([[4.0], [8]]).double())
    # DDP's gradient buckets match the trained convolutions' channels-last gradients: no copy.
    for rank in ranks:
        assert not [w for w in rank["warnings"] if "Grad strides" in w], rank["warnings"]


def test_only_the_trained_plain_batch_norm_layers_are_synchronised() -> None:
    class OtherNorm(nn.BatchNorm1d):
        pass

    frozen, trained, other = nn.BatchNorm2d(3), nn.BatchNorm1d(4), OtherNorm(4)
    network = nn.Sequential(frozen, trained, other)
    skipped = sync_batch_norm(network, frozen={frozen})
    assert type(frozen) is nn.BatchNorm2d and type(other) is OtherNorm
    assert type(trained).__name__ == "SyncedBatchNorm1d" and isinstance(trained, nn.BatchNorm1d)
    assert skipped == ["2 (OtherNorm)"]
    assert list(trained.state_dict()) == list(nn.BatchNorm1d(4).state_dict())
    assert type(pickle.loads(pickle.dumps(trained))) is type(trained)  # a model still pickles
    # One process: the plain layer's output and running statistics.
    reference = nn.BatchNorm1d(4)
    x = torch.randn(5, 4)
    torch.testing.assert_close(trained(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(trained.running_var, reference.running_var, rtol=0, atol=0)
