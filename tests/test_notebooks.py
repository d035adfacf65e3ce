"""The notebooks run top to bottom on CPU, offline, and show what they promise."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_SIAMESE_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    notebook = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    text = "\n".join(
        output.get("text", "") for output in outputs if output.get("output_type") == "stream"
    )
    assert "test pairs" in text and "cosine similarity, anchor-positive" in text
    assert "recall@1" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "triplets, retrieval and distances are drawn"
    work = tmp_path / "work"
    assert list((work / "run" / "checkpoints").glob("epoch*.ckpt"))
    assert os.environ["LIGHTNING_SIAMESE_NOTEBOOK_DIR"] == str(work)
