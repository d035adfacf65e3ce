"""The package's shape: short modules, no import cycle, import contracts that hold, a cheap
import, commands that start without a framework, and module tables that match the tree."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_pairs

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lightning_siamese"
#: About 300: a module that grows past it is split by concept (never squeezed to fit).
MAX_LINES = 320


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every package module ``path`` imports, at module level or inside functions; only the
    ``if TYPE_CHECKING:`` blocks (never run) are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            # `from lightning_siamese import export` imports a module.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in known
            )
    return found - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_is_long() -> None:
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_the_package_modules() -> None:
    known = set(modules())
    graph = {name: imported_modules(path, known) for name, path in modules().items()}
    assert graph["lightning_siamese.training.model"], "the import graph looks empty: parser broken?"
    assert find_cycle(graph) is None


def test_the_import_contracts_hold_and_catch_a_wrong_way_import(tmp_path: Path) -> None:
    """``lint-imports`` (pyproject.toml's contracts) passes on the package, and fails on a copy
    where a lower wing (models) imports a higher one (training)."""
    lint = Path(sys.executable).with_name("lint-imports")
    args = [str(lint), "--no-cache"]
    assert subprocess.run(args, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    shutil.copytree(PACKAGE, tmp_path / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    wrong = tmp_path / PACKAGE.name / "models" / "distances.py"
    wrong.write_text(wrong.read_text() + "\nfrom lightning_siamese.training import model  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode != 0
    assert "lightning_siamese.models.distances -> lightning_siamese.training.model" in result.stdout


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_package_is_cheap_and_its_names_are_the_classes() -> None:
    out = run_python(
        "import sys, lightning_siamese as ls\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
        "from lightning_siamese import EmbeddingNet, SiameseDataModule, SiameseModel, "
        "TripletLoss\n"
        "from lightning_siamese.training.model import SiameseModel as M\n"
        "print(SiameseModel is M, EmbeddingNet.__name__, TripletLoss.__name__, "
        "SiameseDataModule.__name__, ls.__version__)\n"
    )
    cheap, names = out.strip().splitlines()
    assert cheap == "[]"
    from importlib.metadata import version

    assert names == (
        f"True EmbeddingNet TripletLoss SiameseDataModule {version('lightning-siamese')}"
    )


#: Modules that take a second or more to import, or pull in a framework.
HEAVY = ("torch", "pytorch_lightning", "lightning", "jsonargparse", "timm", "wandb", "matplotlib")
#: The heavy modules each command that trains nothing may import (none for the help texts).
ALLOWED = {
    "--help": (),
    "--version": (),
    "data --help": (),
    "evaluate --help": (),
    "search --help": (),
    "export --help": (),
    "wise-ft --help": (),
    "data check PAIRS": (),
    "data show PAIRS --out OUT": ("torch", "matplotlib"),
}


@pytest.mark.parametrize("command", sorted(ALLOWED))
def test_commands_that_train_nothing_import_no_framework(command: str, tmp_path: Path) -> None:
    write_pairs(tmp_path / "pairs", 3)
    argv = command.replace("PAIRS", str(tmp_path / "pairs")).replace("OUT", str(tmp_path / "s.png"))
    out = run_python(
        "import contextlib, io, sys\n"
        "from lightning_siamese.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        code = main({argv.split()!r})\n"
        "    except SystemExit as stop:\n"
        "        code = stop.code\n"
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    code, imported = out.strip().splitlines()[-1].split(" ", 1)
    assert (code, imported) == ("0", str(sorted(ALLOWED[command])))


def table_paths(page: Path, heading: str) -> set[str]:
    """The paths the first cells of the table under ``heading`` name (``a/b.py``, ``c.py``:
    ``a/c.py``)."""
    text = page.read_text(encoding="utf-8")
    table = text[text.index(heading) :]
    named: set[str] = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, re.M):
        paths = re.findall(r"`([^`]+)`", cell)
        base = Path(paths[0]).parent if paths else Path()
        for path in paths:
            full = path if "/" in path.rstrip("/") else str(base / path)
            named.add(full.rstrip("/"))
    return named


def test_the_module_table_matches_the_tree() -> None:
    """docs/architecture.md names every module of the package, and the README's layout table
    names only what exists."""
    named = table_paths(REPO / "docs" / "architecture.md", "## Modules")
    assert {path for path in named if not (REPO / path).exists()} == set()
    files = {str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py")}
    covered = {path for path in files if path in named or str(Path(path).parent) in named}
    assert files - covered == set()
    readme = table_paths(REPO / "README.md", "## Layout")
    assert readme and {path for path in readme if not (REPO / path).exists()} == set()
