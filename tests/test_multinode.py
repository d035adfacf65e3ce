"""The README's multi-node command, run as 2 nodes of 1 process each on this machine: two
``torchrun`` launches (node ranks 0 and 1, a local c10d rendezvous, gloo) through ``fit`` and
``test``. Each process trains on its share of every batch, so with the trainable part free of
batch statistics (the pooled head alone: no BatchNorm) the run is one process's with the batch
of both: the same weights, validation and test figures."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TESTS_DIR, run_cli, tiny_args, write_pairs

#: The README's flags for the launch; --node_rank is the order of the two launches here.
TORCHRUN = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d"]
SETTINGS = [
    "--model.freeze=all",
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--trainer.accelerator=cpu",
    "--validate_before_fit=false",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def two_nodes(*args: str, cwd: Path, timeout: float = 600) -> None:
    """``torchrun ... -m lightning_siamese *args`` as node 0 and node 1 at once."""
    endpoint = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in {"MASTER_ADDR", "MASTER_PORT"}}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS_DIR))
    torchrun = [sys.executable, "-m", "torch.distributed.run", *TORCHRUN]
    nodes = [
        subprocess.Popen(
            [
                *torchrun,
                "--rdzv_endpoint",
                endpoint,
                "--node_rank",
                str(rank),
                "-m",
                "lightning_siamese",
                *args,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for other in nodes:
                os.killpg(other.pid, signal.SIGKILL)
            pytest.fail("a node still runs after the time allowed (hung?)")
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]


def logged(run: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for log in sorted(run.glob("lightning_logs/version_*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            for key, value in row.items():
                if value and key.startswith(("val/", "test/", "train/loss_epoch")):
                    values.setdefault(key, []).append(float(value))
    return values


def test_two_nodes_train_and_test_as_one_process(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, 60)
    nodes, single = tmp_path / "nodes", tmp_path / "single"
    args = [*tiny_args(root, nodes), *SETTINGS, "--data.batch_size=4"]
    cluster = ["--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
    two_nodes("fit", *args, *cluster, cwd=tmp_path)
    two_nodes("test", *args, *cluster, "--ckpt_path=last", cwd=tmp_path)

    one = [*tiny_args(root, single), *SETTINGS, "--data.batch_size=8"]  # both shares at once
    for command in (["fit"], ["test", "--ckpt_path=last"]):
        result = run_cli(command[0], *one, *command[1:], cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:]

    ours, theirs = logged(nodes), logged(single)
    assert ours.keys() == theirs.keys() and "test/recall@1" in ours and "val/loss" in ours
    for key, values in theirs.items():
        assert ours[key] == pytest.approx(values, rel=1e-4, abs=1e-5), key
    weights = [
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (nodes, single)
    ]
    assert weights[0]["global_step"] == weights[1]["global_step"] > 0
    for name, value in weights[1]["state_dict"].items():
        torch.testing.assert_close(weights[0]["state_dict"][name], value, rtol=1e-4, atol=1e-5)
