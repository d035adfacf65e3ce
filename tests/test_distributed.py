"""Several processes give one process's results: one launch of the README's multi-node command
(``torchrun``, 2 nodes of 1 process, a local c10d rendezvous, gloo) runs fit, test, validate and
predict in the same two processes (tests/distributed_session.py), and each result is compared
with the same command on one process:

- fit and test: each process trains on its share of every batch, InfoNCE gathers the global
  batch and the seed head's BatchNorm layers normalise over it, so (with SGD) the run is one
  process's with the batch of both: the same weights, validation and test figures; one W&B run;
- validate and test on splits that divide evenly over the processes and splits that do not
  (the distributed sampler pads those with repeats): the same figures and test table;
- predict: one embeddings.pt, every image once in path order with the skipped file listed,
  also when a process gets no image.

And a process that fails stops the whole run with its error (Lightning's own launcher).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TESTS_DIR, run_cli, tiny_args, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.data.pairs import Pair
from lightning_siamese.data.splits import assign_splits

REPO = TESTS_DIR.parent
#: The README's torchrun flags, two nodes of one process here.
TORCHRUN = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d"]
CLUSTER = ["--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
FIT = [
    "--model.freeze=all",  # the head alone trains: the seed's, with its two BatchNorm layers
    "--model.head=mlp",  # (synchronised over the processes)
    "--model.loss=infonce",  # each process's images are the other's negatives (gathered)
    "--model.optimizer=torch.optim.SGD",  # Adam would turn rounding noise into steps
    "--model.optimizer.lr=0.05",
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--trainer.accelerator=cpu",
    "--validate_before_fit=false",
]
FRACTIONS = (0.5, 0.25, 0.25)
WANDB_HOMES = ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def two_nodes(plan: list[list[str]], cwd: Path, timeout: float = 600) -> None:
    """Every command of ``plan`` in one two-node ``torchrun`` launch (node ranks 0 and 1)."""
    plan_file = cwd / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    endpoint = f"127.0.0.1:{free_port()}"
    launch = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launch | {"WANDB_DIR"}}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS_DIR), PYTHONUNBUFFERED="1")
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")  # W&B's own files stay here:
    env.update({name: str(cwd / "wandb-home") for name in WANDB_HOMES})
    torchrun = [sys.executable, "-m", "torch.distributed.run", *TORCHRUN]
    script = [str(TESTS_DIR / "distributed_session.py"), str(plan_file)]
    nodes = [
        subprocess.Popen(
            [*torchrun, "--rdzv_endpoint", endpoint, "--node_rank", str(rank), *script],
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
        assert node.returncode == 0, output[-5000:]


def csv_logger(logs: Path, name: str) -> dict[str, Any]:
    init = {"save_dir": str(logs), "name": name, "version": ""}
    return {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": init}


def logged(log_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    return {key: float(value) for row in rows for key, value in row.items() if value and "/" in key}


def split_folder_size() -> int:
    """A folder size (``write_pairs`` names) whose val split divides by 2 and test split not."""
    for count in range(30, 200):
        names = [f"pair{index:04d}" for index in range(count)]
        splits = assign_splits([Pair(n, Path(), Path(), n) for n in names], FRACTIONS, seed=0)
        val, test = len(splits["val"]), len(splits["test"])
        if min(val, test) >= 5 and val % 2 == 0 and test % 2 == 1:
            return count
    raise AssertionError("no such folder size")


def photos(source: Path, folder: Path, count: int) -> Path:
    """``count`` images, some in a subfolder (path order is not name order), and a bad file."""
    (folder / "b").mkdir(parents=True)
    for index, image in enumerate(sorted((source / "left").glob("*.jpg"))[:count]):
        target = folder / ("b" if index % 2 else "") / f"{chr(ord('e') - index)}.jpg"
        target.write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def launched(
    tmp_path_factory: pytest.TempPathFactory, trained_run: tuple[Path, Path, Path]
) -> dict[str, Path]:
    """Every command run once on two nodes and once on one process; the folders."""
    base = tmp_path_factory.mktemp("distributed")
    paths = {name: base / name for name in ("fit_pairs", "split_pairs", "logs")}
    write_pairs(paths["fit_pairs"], 60)
    write_pairs(paths["split_pairs"], split_folder_size())
    paths["photos5"] = photos(trained_run[0], base / "photos5", 5)
    paths["photos1"] = photos(trained_run[0], base / "photos1", 1)
    # The trained checkpoint with a soft margin on normalised embeddings: every triplet has a
    # loss above 0 (a zero loss would hide repeated triplets).
    saved = torch.load(trained_run[2], weights_only=True)
    saved["hyper_parameters"].update(soft_margin=True, normalize=True)
    paths["soft"] = base / "soft.ckpt"
    torch.save(saved, paths["soft"])

    def commands(processes: str) -> list[list[str]]:
        wide = CLUSTER if processes == "nodes" else []
        run, logs = base / f"fit-{processes}", paths["logs"]
        loggers = [csv_logger(logs, f"fit-{processes}")]
        if processes == "nodes":  # and W&B (the overlay's logger), offline, in the run folder
            init = {"project": "lightning-siamese", "log_model": False}
            loggers.append(
                {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": init}
            )
        batch = "4" if processes == "nodes" else "8"  # one process gets both shares at once
        fit = [*tiny_args(paths["fit_pairs"], run), *FIT, *wide, f"--data.batch_size={batch}"]
        plan = [
            ["fit", *fit, f"--trainer.logger={json.dumps(loggers)}"],
            ["test", *fit, "--ckpt_path=last",
             f"--trainer.logger={json.dumps(csv_logger(logs, f'fit-test-{processes}'))}"],
        ]  # fmt: skip
        for command in ("validate", "test"):
            name = f"{command}-{processes}"
            plan.append([
                command, *tiny_args(paths["split_pairs"], base / name), *wide,
                "--trainer.accelerator=cpu", "--data.batch_size=4",
                f"--data.split_fractions=[{','.join(map(str, FRACTIONS))}]",
                f"--trainer.logger={json.dumps(csv_logger(logs, name))}",
                f"--ckpt_path={paths['soft']}",
            ])  # fmt: skip
        for images in ("photos5", "photos1"):
            plan.append([
                "predict", *tiny_args(trained_run[0], base / f"{images}-{processes}"), *wide,
                "--trainer.accelerator=cpu", "--data.batch_size=4", "--trainer.logger=false",
                f"--data.predict_root={paths[images]}", f"--ckpt_path={trained_run[2]}",
            ])  # fmt: skip
        return plan

    two_nodes(commands("nodes"), base)
    for args in commands("one"):  # in this process: nothing to launch
        assert main(args) == 0, args
    return {**paths, "base": base}


def test_two_nodes_train_and_test_as_one_process(launched: dict[str, Path]) -> None:
    logs = launched["logs"]
    for name in ("fit", "fit-test"):
        ours, theirs = logged(logs / f"{name}-nodes"), logged(logs / f"{name}-one")
        assert ours.keys() == theirs.keys(), name
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert "test/recall@1" in ours and "val/loss" in logged(logs / "fit-nodes")
    weights = [
        torch.load(launched["base"] / f"fit-{p}" / "checkpoints" / "last.ckpt", weights_only=True)
        for p in ("nodes", "one")
    ]
    assert weights[0]["global_step"] == weights[1]["global_step"] > 0
    for name, value in weights[1]["state_dict"].items():
        torch.testing.assert_close(weights[0]["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    # One W&B run under DDP, in the run folder, with the validation metrics.
    runs = list((launched["base"] / "fit-nodes" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert not (launched["base"] / "wandb").exists()


def test_validation_and_test_equal_one_process(launched: dict[str, Path]) -> None:
    logs, base = launched["logs"], launched["base"]
    sizes = {"validate": 0, "test": 0}
    for command, split in (("validate", "val"), ("test", "test")):
        two, one = logged(logs / f"{command}-nodes"), logged(logs / f"{command}-one")
        assert two.keys() == one.keys() and one[f"{split}/loss"] > 0
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        sizes[command] = int(one[f"{split}/pairs"])
    # The val split divides by the 2 processes, the test split does not (padded with a repeat).
    assert sizes["validate"] % 2 == 0 and sizes["test"] % 2 == 1
    tables = []
    for processes in ("nodes", "one"):
        table = base / f"test-{processes}" / "media" / "test" / "retrieval.csv"
        with table.open(encoding="utf-8", newline="") as handle:
            tables.append(
                [(r["query"], r["true_match"], r["rank"]) for r in csv.DictReader(handle)]
            )
    assert tables[0] == tables[1] and len(tables[0]) == sizes["test"]


@pytest.mark.parametrize("images", ["photos5", "photos1"], ids=["uneven", "fewer-than-processes"])
def test_predict_writes_one_file(images: str, launched: dict[str, Path]) -> None:
    documents = [
        torch.load(
            launched["base"] / f"{images}-{p}" / "predictions" / "embeddings.pt", weights_only=True
        )
        for p in ("nodes", "one")
    ]
    folder = launched[images]
    expected = sorted(
        (str(p.relative_to(folder)) for p in folder.rglob("*.jpg") if p.name != "broken.jpg"),
        key=lambda path: Path(path).parts,
    )
    two, one = documents
    assert two["paths"] == one["paths"] == expected
    assert two["embeddings"].shape == one["embeddings"].shape == (len(expected), 256)
    torch.testing.assert_close(two["embeddings"], one["embeddings"], rtol=1e-5, atol=1e-6)
    skipped = [[s["path"] for s in document["skipped"]] for document in documents]
    assert skipped == [["broken.jpg"], ["broken.jpg"]]


def processes_mentioning(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if text in line and "ps -eo" not in line]


@pytest.mark.parametrize("rank", [pytest.param(0, marks=pytest.mark.slow), 1])
def test_a_failing_process_stops_the_run(rank: int, tmp_path: Path) -> None:
    """Lightning's own launcher (``--trainer.devices 2``): a process that fails at a batch
    takes the other down, and the error is printed with its rank."""
    root, run = tmp_path / "pairs", tmp_path / f"run-rank{rank}"
    write_pairs(root, 40)  # 2 training batches per process, so batch 1 comes
    failing = {"class_path": "interrupt_callbacks.FailOnRank", "init_args": {"rank": rank}}
    args = [
        *tiny_args(root, run),
        "--data.batch_size=4",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=2",
        "--validate_before_fit=false",
        f"--trainer.callbacks+={json.dumps(failing)}",
    ]
    started = time.perf_counter()
    result = run_cli("fit", *args, cwd=tmp_path, timeout=240)
    assert result.returncode != 0
    assert f"RuntimeError: rank {rank} failed on purpose at batch 1" in result.stdout
    deadline = time.perf_counter() + 30
    while processes_mentioning(str(run)) and time.perf_counter() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(str(run)), "a process of the run is still alive"
    print(f"rank {rank} failed: the run stopped after {time.perf_counter() - started:.0f} s")
