"""DDP on CPU (gloo, 2 processes): the same validation and test figures as one process, for
splits that divide evenly over the processes and splits that do not (the distributed sampler
pads those with repeats); and a process that fails stops the whole run with its error.

The CLI runs in a subprocess: Lightning's DDP launcher re-executes the command line for rank 1.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli, tiny_args, write_pairs
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.data.pairs import Pair
from lightning_siamese.data.splits import assign_splits

FRACTIONS = (0.5, 0.25, 0.25)


def ddp_args(root: Path, run: Path, logs: Path, name: str, devices: int) -> list[str]:
    init = {"save_dir": str(logs), "name": name, "version": ""}
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": init}
    strategy = ["--trainer.strategy=ddp"] if devices > 1 else []
    return [
        *tiny_args(root, run),
        "--data.batch_size=4",
        f"--data.split_fractions=[{','.join(map(str, FRACTIONS))}]",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        *strategy,
        f"--trainer.logger={json.dumps(logger)}",
    ]


def logged(log_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    return {key: float(value) for row in rows for key, value in row.items() if value and "/" in key}


def pair_count(val_divides: bool, test_divides: bool) -> int:
    """A folder size (``write_pairs`` names) whose val and test splits divide by 2 or not."""
    for count in range(30, 200):
        names = [f"pair{index:04d}" for index in range(count)]
        splits = assign_splits([Pair(n, Path(), Path(), n) for n in names], FRACTIONS, seed=0)
        val, test = len(splits["val"]), len(splits["test"])
        if min(val, test) >= 5 and (val % 2 == 0, test % 2 == 0) == (val_divides, test_divides):
            return count
    raise AssertionError("no such folder size")


@pytest.mark.parametrize(
    ("val_divides", "test_divides"), [(True, False), (False, True)], ids=["val-even", "val-odd"]
)
def test_ddp_validation_and_test_equal_one_process(
    val_divides: bool, test_divides: bool, tmp_path: Path, trained_run: tuple[Path, Path, Path]
) -> None:
    root, logs = tmp_path / "pairs", tmp_path / "logs"
    write_pairs(root, pair_count(val_divides, test_divides))
    probe = SiameseDataModule(str(root), 32, split_fractions=FRACTIONS, num_workers=0)
    probe.setup("test")
    sizes = {split: len(probe.splits[split]) for split in ("val", "test")}
    assert (sizes["val"] % 2 == 0, sizes["test"] % 2 == 0) == (val_divides, test_divides)

    # The trained checkpoint with a soft margin on normalised embeddings: every triplet has a
    # loss above 0 (a zero loss would hide repeated triplets). `validate` and `test` build the
    # model from the checkpoint's hyper-parameters.
    saved = torch.load(trained_run[2], weights_only=True)
    saved["hyper_parameters"].update(soft_margin=True, normalize=True)
    torch.save(saved, tmp_path / "soft.ckpt")
    checkpoint = [f"--ckpt_path={tmp_path / 'soft.ckpt'}"]
    for command in ("validate", "test"):
        for devices in (2, 1):
            name = f"{command}-{devices}"
            args = ddp_args(root, tmp_path / name, logs, name, devices)
            result = run_cli(command, *args, *checkpoint, cwd=tmp_path)
            assert result.returncode == 0, result.stdout[-3000:]

        split = "val" if command == "validate" else "test"
        two, one = logged(logs / f"{command}-2"), logged(logs / f"{command}-1")
        assert two.keys() == one.keys() and one[f"{split}/loss"] > 0
        assert two[f"{split}/pairs"] == one[f"{split}/pairs"] == sizes[split]
        for key, value in one.items():
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

    # The test table has every pair once, with the same ranks.
    tables = []
    for devices in (2, 1):
        table = tmp_path / f"test-{devices}" / "media" / "test" / "retrieval.csv"
        with table.open(encoding="utf-8", newline="") as handle:
            tables.append(
                [(r["query"], r["true_match"], r["rank"]) for r in csv.DictReader(handle)]
            )
    assert tables[0] == tables[1] and len(tables[0]) == sizes["test"]


def processes_mentioning(text: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if text in line and "ps -eo" not in line]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failing_process_stops_the_run(rank: int, tmp_path: Path) -> None:
    root, run = tmp_path / "pairs", tmp_path / f"run-rank{rank}"
    write_pairs(root, 40)  # 2 training batches per process, so batch 1 comes
    failing = {"class_path": "interrupt_callbacks.FailOnRank", "init_args": {"rank": rank}}
    args = [
        *ddp_args(root, run, tmp_path / "logs", "fail", devices=2),
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


@pytest.mark.parametrize("images", [5, 1], ids=["uneven", "fewer-than-processes"])
def test_ddp_predict_writes_one_file(
    images: int, tmp_path: Path, trained_run: tuple[Path, Path, Path]
) -> None:
    """Two processes write one embeddings.pt, every image once in path order with the skipped
    file listed, equal to one process's; also when a process gets no image."""
    root, _, checkpoint = trained_run
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    sources = sorted((root / "left").glob("*.jpg"))[:images]
    for index, source in enumerate(sources):  # some in a subfolder: path order, not name order
        target = folder / ("b" if index % 2 else "") / f"{chr(ord('e') - index)}.jpg"
        target.write_bytes(source.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    documents = []
    for devices in (2, 1):
        run = tmp_path / f"predict-{devices}"
        args = ddp_args(root, run, tmp_path / "logs", f"predict-{devices}", devices)
        command = ["predict", *args, f"--ckpt_path={checkpoint}", f"--data.predict_root={folder}"]
        result = run_cli(*command, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-30000:]
        assert sorted(p.name for p in (run / "predictions").iterdir()) == ["embeddings.pt"]
        documents.append(torch.load(run / "predictions" / "embeddings.pt", weights_only=True))
    two, one = documents
    expected = sorted(
        (str(p.relative_to(folder)) for p in folder.rglob("*.jpg") if p.name != "broken.jpg"),
        key=lambda path: Path(path).parts,
    )
    assert two["paths"] == one["paths"] == expected
    assert two["embeddings"].shape == one["embeddings"].shape and len(two["embeddings"]) == images
    torch.testing.assert_close(two["embeddings"], one["embeddings"], rtol=1e-5, atol=1e-6)
    assert (
        [s["path"] for s in two["skipped"]] == [s["path"] for s in one["skipped"]] == ["broken.jpg"]
    )
