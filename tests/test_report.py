"""Split reports: metrics, the per-query table and the pictures, from paths and tensors."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from conftest import write_pairs
from lightning_siamese.retrieval.nearest import top_k
from lightning_siamese.retrieval.plots import (
    pca_2d,
    plot_distances,
    plot_retrieval,
    plot_triplets,
    save_figure,
)
from lightning_siamese.retrieval.report import SplitEmbeddings, write_table_csv


def split_of(root: Path, count: int, seed: int = 0) -> SplitEmbeddings:
    write_pairs(root, count)
    left = sorted((root / "left").iterdir())
    right = sorted((root / "right").iterdir())
    generator = torch.Generator().manual_seed(seed)
    anchor = torch.randn(count, 4, generator=generator)
    positive = anchor + 1.5 * torch.randn(count, 4, generator=generator)
    negative = positive.roll(1, dims=0)
    return SplitEmbeddings(left, right, anchor, positive, negative)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_top_k_matches_a_full_sort(backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    queries, gallery = torch.randn(37, 16), torch.randn(53, 16)
    # 8 query rows a block on the torch path
    scores, indices = top_k(queries, gallery, 5, block_elements=8 * 53, backend=backend)
    similarity = (
        torch.nn.functional.normalize(queries, dim=1)
        @ torch.nn.functional.normalize(gallery, dim=1).T
    )
    expected = similarity.sort(dim=1, descending=True)
    torch.testing.assert_close(scores, expected.values[:, :5])
    assert torch.equal(indices, expected.indices[:, :5])
    assert top_k(queries, gallery[:3], 5, backend=backend)[1].shape == (37, 3)  # k capped


def test_top_k_paths_agree_with_ties_and_keep_cuda_on_the_gpu() -> None:
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(3)
    gallery = torch.randn(300, 24, generator=generator)
    gallery = torch.cat([gallery, gallery[:100] * 3.0])  # 100 exact ties (same direction)
    queries = torch.randn(64, 24, generator=generator)
    exclude = [row if row % 3 else None for row in range(64)]
    torch_scores, torch_rows = top_k(queries, gallery, 12, exclude, backend="torch")
    faiss_scores, faiss_rows = top_k(queries, gallery, 12, exclude, backend="faiss")
    torch.testing.assert_close(faiss_scores, torch_scores, atol=1e-5, rtol=0)
    cosine = (
        torch.nn.functional.normalize(queries.double(), dim=1)
        @ torch.nn.functional.normalize(gallery.double(), dim=1).T
    )
    for row in range(64):
        for rows in (torch_rows[row], faiss_rows[row]):
            assert exclude[row] not in rows.tolist()
            # Ties may come in either order: each row's score is the one at its rank.
            scores = cosine[row, rows]
            kept = cosine[row].clone()
            if exclude[row] is not None:
                kept[exclude[row]] = -2
            assert torch.allclose(scores, kept.sort(descending=True).values[:12], atol=1e-6)
    if torch.cuda.is_available():
        scores, rows = top_k(queries.cuda(), gallery.cuda(), 5)
        assert scores.is_cuda and rows.is_cuda


def test_table_ranks_agree_with_metrics_and_top_k(tmp_path: Path) -> None:
    split = split_of(tmp_path / "pairs", 12)
    metrics = split.metrics("squared_l2")
    rows = split.table(k=3)
    assert len(rows) == 12 and metrics["pairs"] == 12
    recall1 = sum(row["rank"] == 1 for row in rows) / 12
    assert recall1 == pytest.approx(metrics["recall@1"])
    assert 0 < metrics["recall@1"] < 1  # a split with both hits and misses
    for row in rows:
        names = [name for name, _ in row["top_k"]]
        scores = [score for _, score in row["top_k"]]
        assert scores == sorted(scores, reverse=True)
        assert (row["true_match"] in names) == (row["rank"] <= 3)
        if row["rank"] == 1:
            assert names[0] == row["true_match"]
            assert scores[0] == row["true_match_score"]
    path = write_table_csv(rows, tmp_path / "out" / "table.csv")
    written = list(csv.DictReader(path.open()))
    assert [int(row["rank"]) for row in written] == [row["rank"] for row in rows]


def test_figures_and_fixed_example_queries(tmp_path: Path) -> None:
    split = split_of(tmp_path / "pairs", 12)
    assert split.example_queries(4) == split.example_queries(4)  # same queries every epoch
    figures = split.figures(margin=0.5, examples=4, k=3)
    assert set(figures) == {"retrieval", "distances", "projection"}
    for name, figure in figures.items():
        assert isinstance(figure, Figure)
        path = save_figure(figure, tmp_path / "png" / f"{name}.png")
        assert path.stat().st_size > 1000
    retrieval = figures["retrieval"]
    # 4 query rows x (query + 3 results + 1 column for a true match outside the top 3).
    assert len(retrieval.axes) in (16, 20)


def test_lengths_must_agree(tmp_path: Path) -> None:
    split = split_of(tmp_path / "pairs", 5)
    with pytest.raises(ValueError, match="differ in length"):
        SplitEmbeddings(split.left[:4], split.right, split.anchor, split.positive, split.negative)


def test_distance_histograms_state_the_margin() -> None:
    positive = torch.tensor([0.1, 0.2, 0.3, 0.4])
    negative = torch.tensor([1.0, 0.3, 0.2, 2.0])
    figure = plot_distances(positive, negative, margin=0.5)
    title = figure.axes[1].get_title()
    assert "75.0% > 0" in title and "50.0% >= margin" in title


def test_pca_keeps_the_main_direction() -> None:
    direction = torch.tensor([3.0, 4.0, 0.0]) / 5
    points = torch.linspace(-1, 1, 9)[:, None] * direction + 1e-3 * torch.randn(9, 3)
    projected = pca_2d(points)
    assert projected.shape == (9, 2)
    assert projected[:, 0].abs().max() == pytest.approx(1.0, abs=0.01)
    assert pca_2d(torch.randn(1, 4)).shape == (1, 2)


def test_plot_retrieval_needs_rows() -> None:
    with pytest.raises(ValueError, match="no query"):
        plot_retrieval([])


def test_figures_and_table_take_any_file_name(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 and ``$`` (matplotlib's maths) in names are drawn as text."""
    split = split_of(tmp_path / "pairs", 3)
    odd = [os.fsdecode(b"caf\xe9"), "price $$", "x_$^$ ☕"]
    for index, name in enumerate(odd):
        for paths in (split.left, split.right):
            target = paths[index].with_name(name + paths[index].suffix)
            paths[index].rename(target)
            paths[index] = target
    figures = split.figures(examples=3, k=2)
    figures["triplets"] = plot_triplets(
        [(torch.zeros(3, 8, 8),) * 3], captions=[(odd[0], odd[1], odd[2])]
    )
    for name, figure in figures.items():
        save_figure(figure, tmp_path / f"{name}.png")  # drawing the titles raised before
    rows = split.table(k=2)
    assert rows[0]["query"] == "caf\\xe9.jpg"
    write_table_csv(rows, tmp_path / "table.csv")
    assert "caf\\xe9.jpg" in (tmp_path / "table.csv").read_text(encoding="utf-8")
