"""Every command of the README and of ``docs/`` runs, as written, on tiny data.

The commands are extracted from the ``bash`` and ``python`` blocks of the README and the
``docs/`` pages (the README first, then the pages by name) and run in a sandbox folder laid out
like the README's world (``my_pairs/``, ``TotallyLooksLike/``, ``data/emoji/``,
``configs/``), in README order, so later commands use what earlier ones wrote
(``runs/demo/checkpoints/last.ckpt``). Training commands get :data:`FAST` appended (a small
network without downloads, 32 px, one short epoch): the README's own flags are still parsed and
used. A few commands are covered elsewhere, or need what a test machine lacks; :data:`COVERED`
says where and why, and a README command that is in neither table fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    TINY_CONFIG,
    cairo_missing_reason,
    npm_unreachable_reason,
    pattern_image,
    write_pairs,
)
from lightning_siamese.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: The pages whose commands run: the README, then docs/ by name.
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
#: docs/benchmarks.md's commands are the benchmarks themselves: minutes to an hour each, their
#: output on that page (gpu_check.py runs on CPU in the slow suite, tests/test_gpu_check.py).
BENCHMARK = "a benchmark script; docs/benchmarks.md shows its output from one run"

# Appended to every training command of the README: the suite's tiny setup, and a smaller run
# still (no frozen part, global pooling, two batches of one epoch).
FAST = [
    "-c",
    str(TINY_CONFIG),
    "--data.batch_size=4",
    "--model.freeze=none",
    "--model.pool_size=1",
    "--model.feature_unit=null",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
]
TRAINING = ("fit", "validate", "test", "predict")
# Per command: extra flags after FAST (a resumed run needs one more epoch to run at all).
EXTRA = {
    "lightning-siamese fit -c configs/demo.yaml --ckpt_path last": ["--trainer.max_epochs=2"],
}
NETWORK = {  # run when npm reaches its registry, each in a folder of its own
    "lightning-siamese data emoji --out data/emoji",
    "lightning-siamese data emoji --out data/emoji-all --skin-tones",
    "lightning-siamese data emoji --out data/emoji-fluent --right fluent",
}
DISTRIBUTED = {  # subprocesses on CPU: 2 processes with gloo instead of GPUs / nodes
    "lightning-siamese fit -c configs/ttl.yaml -c configs/trainer/ddp.yaml --data.root "
    "TotallyLooksLike --data.batch_size 32",
}
COVERED = {
    **{
        f".venv/bin/python benchmarks/{script}": BENCHMARK
        for script in (
            "make_jpeg_pairs.py",
            "train_throughput.py",
            "keras_comparison.py",
            "layer_rates.py",
            "retrieval.py",
            "ann_index.py",
            "ann_index.py --size 200000",
            "gpu_check.py --accelerator cpu",
            "frozen_graph.py",
            "fingerprint_cost.py",
            "report_page.py",
            "rerank.py",
            "demo_epoch.py",
            "demo_results.py --seeds 0 1 2",
        )
    },
    "torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint node0:29500 -m "
    "lightning_siamese fit -c configs/ttl.yaml -c configs/trainer/ddp.yaml --trainer.num_nodes 2 "
    "--trainer.devices 4 --data.root TotallyLooksLike": "tests/test_distributed.py launches it "
    "(its torchrun flags, 2 nodes of 1 process on this machine, gloo) for fit, test, validate "
    "and predict",
    "bash scripts/demo.sh": "tests/test_demo.py runs it (slow; in .ci/run)",
    "bash scripts/test.sh": ".ci/run runs it: it is this test suite",
    "lightning-siamese wise-ft --ckpt runs/demo/checkpoints/last.ckpt --alpha 0.75": "tests/"
    "test_wise_ft.py runs it on a model trained from a weights file; the sandbox's models start "
    "from random weights, which WiSE-FT refuses",
    ".venv/bin/python -m pytest -m slow": ".ci/run runs it",
    "wandb sync runs/demo/wandb/offline-run-*": "uploading needs a W&B account and the network; "
    "the offline run folder it names is checked here after the W&B command",
    ".venv/bin/jupyter lab notebooks/": "starts a server; tests/test_notebooks.py executes the "
    "notebook and here `jupyter lab --version` checks the command is installed",
}


def readme_blocks(kind: str) -> list[str]:
    """The ``kind`` blocks of every page, in order."""
    pattern = rf"```{kind}\n(.*?)```"
    return [b for page in PAGES for b in re.findall(pattern, page.read_text("utf-8"), re.S)]


def readme_commands() -> list[str]:
    """Each line of the ``bash`` blocks, without its trailing comment, once, in page order."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#") and command not in commands:
                commands.append(command)
    return commands


def test_every_readme_command_is_run_or_covered() -> None:
    commands = readme_commands()
    unknown = [
        c
        for c in commands
        if c not in COVERED
        and c not in NETWORK
        and c not in DISTRIBUTED
        and not c.startswith(("lightning-siamese ", "WANDB_MODE="))
    ]
    assert not unknown, f"commands of the README or docs/ that no test runs: {unknown}"
    stale = (set(COVERED) | NETWORK | DISTRIBUTED | set(EXTRA)) - set(commands)
    assert not stale, f"tables name commands the README and docs/ no longer have: {stale}"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out like the README's examples, with tiny images; the cwd of the test."""
    root = tmp_path / "sandbox"
    root.mkdir()
    (root / "configs").symlink_to(REPO / "configs")
    for folder in ("my_pairs", "TotallyLooksLike", "data/emoji"):
        write_pairs(root / folder, 20)
    pattern_image(500).save(root / "data/emoji/left/1f600.png")
    pattern_image(500, variant=1).save(root / "data/emoji/right/1f600.png")
    (root / "some_images").mkdir()
    for index in range(3):
        pattern_image(600 + index).save(root / "some_images" / f"image{index}.png")
    pattern_image(700).save(root / "some.png")
    monkeypatch.chdir(root)
    return root


def run_command(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    words = shlex.split(command)
    while "=" in words[0]:  # VAR=value prefixes
        name, value = words.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    assert words[0] == "lightning-siamese", command
    args = words[1:]
    if args[0] in TRAINING:
        args += FAST + EXTRA.get(command, [])
    code = main(args)
    if "wandb.yaml" in command:
        import wandb

        wandb.finish()  # as the process exit would
    assert code == 0, command


def test_readme_commands_run(sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_DIR")  # (set for every test): W&B files go to the run folder
    for command in readme_commands():
        if command in COVERED or command in NETWORK or command in DISTRIBUTED:
            continue
        run_command(command, monkeypatch)

    # What the commands promise to leave behind.
    assert (sandbox / "triplets.png").is_file()
    assert (sandbox / "data/glyphs/pairs.csv").is_file()
    assert (sandbox / "runs/ttl/checkpoints/last.ckpt").is_file()
    assert (sandbox / "runs/demo/checkpoints/last.ckpt").is_file()
    assert (sandbox / "runs/demo/predictions/embeddings.pt").is_file()
    assert list(sandbox.glob("runs/demo/wandb/offline-run-*")), "the folder `wandb sync` is given"
    metrics = json.loads((sandbox / "runs/demo/evaluate/emoji/metrics.json").read_text())
    assert metrics["pairs"] == 21
    assert (sandbox / "search.png").is_file()
    assert (sandbox / "runs/demo/checkpoints/last.onnx").is_file()

    # The Python blocks (loading a checkpoint, the library behind the commands), as written.
    ran = set()
    for block in readme_blocks("python"):
        namespace: dict = {}
        exec(compile(block, "README.md or docs/", "exec"), namespace)
        if "embedding" in namespace:
            assert namespace["embedding"].shape == (1, namespace["model"].hparams.embedding_dim)
            ran.add("load")
        else:
            best = namespace["best"]
            assert len(best) == 3 and all(
                (sandbox / "data/emoji/right" / p).is_file() for p, _ in best
            )
            assert [score for _, score in best] == sorted(
                (score for _, score in best), reverse=True
            )
            assert 0 <= namespace["metrics"]["recall@1"] <= 1
            assert namespace["metrics"]["pairs"] == 21
            ran.add("library")
    assert ran == {"load", "library"}

    jupyter = Path(sys.executable).parent / "jupyter"
    result = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.network
def test_readme_emoji_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = npm_unreachable_reason()
    if reason:
        pytest.skip(reason)
    for number, command in enumerate(sorted(NETWORK)):
        if "fluent" in command and cairo_missing_reason():
            continue  # tests/test_builders.py reports the skip
        folder = tmp_path / str(number)
        folder.mkdir()
        monkeypatch.chdir(folder)
        run_command(command, monkeypatch)
        out = Path(shlex.split(command)[shlex.split(command).index("--out") + 1])
        assert len(list((folder / out / "left").iterdir())) > 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def distributed_args(command: str) -> list[str]:
    """The command for 2 CPU processes on this machine (gloo) instead of the GPUs."""
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.num_nodes=1"]
    return [sys.executable, "-m", "lightning_siamese", *shlex.split(command)[1:], *FAST, *cpu]


@pytest.mark.parametrize("command", sorted(DISTRIBUTED))
def test_readme_distributed_commands(command: str, sandbox: Path) -> None:
    # A fresh launch: no DDP variables from an earlier in-process run.
    launch = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {key: value for key, value in os.environ.items() if key not in launch}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        distributed_args(command),
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (sandbox / "runs/ttl/checkpoints/last.ckpt").is_file()
    assert "Starting with 2 processes" in result.stdout + result.stderr
