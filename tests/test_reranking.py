"""CSLS re-ranking against a brute-force reference written from its definition: the ranks, the
top-k (torch blocks and faiss), ``evaluate --rerank``, ``test --model.rerank`` and ``search``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import brute_force_rank_metrics, tiny_args
from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.cli.main import main
from lightning_siamese.data.splits import read_split
from lightning_siamese.retrieval.nearest import top_k
from lightning_siamese.retrieval.ranks import rank_metrics, retrieval_ranks
from lightning_siamese.retrieval.report import SplitEmbeddings
from lightning_siamese.retrieval.reranking import gallery_offset


def csls_matrix(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, own: dict[int, int] | None = None
) -> list[list[float]]:
    """2 cos(q, g) - r(q) - r(g), every term from its definition, in float64; ``own[i]``: query
    i's own gallery row, which counts in neither r(q_i) nor r(g)."""
    own = own or {}
    cos = [
        [float(F.cosine_similarity(q.double(), g.double(), dim=0)) for g in gallery]
        for q in queries
    ]
    rows = [[c for j, c in enumerate(row) if own.get(i) != j] for i, row in enumerate(cos)]
    r_query = [sum(sorted(row, reverse=True)[:k]) / k for row in rows]
    columns = [
        [cos[i][j] for i in range(len(queries)) if own.get(i) != j] for j in range(len(gallery))
    ]
    r_gallery = [sum(sorted(column, reverse=True)[:k]) / k for column in columns]
    return [
        [2 * cos[i][j] - r_query[i] - r_gallery[j] for j in range(len(gallery))]
        for i in range(len(queries))
    ]


@pytest.mark.parametrize("k", [1, 4, 40])
def test_csls_ranks_and_top_k_match_the_definition(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    queries = torch.randn(40, 6, generator=generator)
    gallery = queries + torch.randn(40, 6, generator=generator)
    gallery[:5] += 3 * torch.randn(1, 6, generator=generator)  # a few hubs near each other
    expected = csls_matrix(queries, gallery, k)
    offset = gallery_offset("csls", queries, gallery, k)
    for block_size in (1, 7, 1024):
        ranks = retrieval_ranks(queries, gallery, block_size, offset)
        assert rank_metrics(ranks) == pytest.approx(brute_force_rank_metrics(expected))
    best = [sorted(range(40), key=lambda j: -row[j])[:5] for row in expected]
    for backend in ("torch", "faiss"):
        _, indices = top_k(queries, gallery, 5, backend=backend, gallery_offset=offset)  # type: ignore[arg-type]
        assert indices.tolist() == best, backend
    split = SplitEmbeddings(
        [Path(f"l{i}") for i in range(40)],
        [Path(f"r{i}") for i in range(40)],
        queries,
        gallery,
        gallery,
        rerank="csls",
        rerank_k=k,
    )
    scores, _ = split.top_k(None, 5)
    reference = [expected[i][j] for i, row in enumerate(best) for j in row]
    assert scores.flatten().tolist() == pytest.approx(reference, abs=1e-5)
    # Re-ranking moved something: the hubs lost places.
    plain = rank_metrics(retrieval_ranks(queries, gallery))
    assert plain != rank_metrics(retrieval_ranks(queries, gallery, 1024, offset)) or k == 40


def split_pairs(root: Path, run: Path, split: str) -> list[Path]:
    names = sorted(n for n, where in read_split(run / "split.csv").items() if where == split)
    return [
        root / side / f"{name}{suffix}"
        for name in names
        for side, suffix in (("left", ".jpg"), ("right", ".png"))
    ]


def test_evaluate_and_test_rerank_exactly(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, run, checkpoint = trained_run
    model = load_model(checkpoint, "cpu")
    # evaluate: all 40 pairs of the folder.
    files = sorted((root / "left").iterdir()) + sorted((root / "right").iterdir())
    embeddings = embed_paths(model, files)
    left, right = embeddings[:40], embeddings[40:]
    out = tmp_path / "eval"
    args = ["evaluate", "--ckpt", str(checkpoint), "--root", str(root), "--out", str(out)]
    assert main([*args, "--rerank", "csls", "--rerank-k", "3"]) == 0
    assert "retrieval re-ranked: csls (k=3)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    expected = brute_force_rank_metrics(csls_matrix(left, right, 3))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    table = list(csv.DictReader((out / "retrieval.csv").open(encoding="utf-8")))
    assert sum(row["rank"] == "1" for row in table) / 40 == pytest.approx(metrics["recall@1"])
    # A checkpoint trained with --model.rerank csls: evaluate follows it unless told otherwise;
    # search of one image cannot estimate hubs from one query and says it ranks by cosine.
    saved = torch.load(checkpoint, weights_only=True)
    saved["hyper_parameters"].update(rerank="csls", rerank_k=3)
    reranking = tmp_path / "csls.ckpt"
    torch.save(saved, reranking)
    own = [
        "evaluate",
        "--ckpt",
        str(reranking),
        "--root",
        str(root),
        "--out",
        str(tmp_path / "own"),
    ]
    assert main(own) == 0
    assert (
        json.loads((tmp_path / "own" / "metrics.json").read_text())["recall@1"]
        == metrics["recall@1"]
    )
    assert main([*own[:-1], str(tmp_path / "plain"), "--rerank", "none"]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    cosine = (F.normalize(left.double(), dim=1) @ F.normalize(right.double(), dim=1).T).tolist()
    assert plain["rerank"] == "none"
    assert plain["recall@1"] == pytest.approx(brute_force_rank_metrics(cosine)["recall@1"])
    one = ["search", f"--ckpt={reranking}", f"--gallery={root / 'right'}", f"--query={files[0]}"]
    one += [f"--cache-dir={tmp_path / 'cache'}", f"--out={tmp_path / 'one.png'}", "--device=cpu"]
    assert main(one) == 0
    assert "csls re-ranking skipped" in capsys.readouterr().out
    # test: the run's test split, through the CLI's runtime option, also with a checkpoint
    # written before the option existed.
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = torch.load(checkpoint, weights_only=True)
    for key in ("rerank", "rerank_k"):
        del saved["hyper_parameters"][key]
    older = tmp_path / "older.ckpt"
    torch.save(saved, older)
    test = ["test", *tiny_args(root, copy), f"--ckpt_path={older}", "--model.rerank=csls"]
    assert main([*test, "--model.rerank_k=2"]) == 0
    logged = {
        k: v
        for row in csv.DictReader(next(copy.rglob("metrics.csv")).open())
        for k, v in row.items()
        if v
    }
    embeddings = embed_paths(model, split_pairs(root, run, "test"))
    expected = brute_force_rank_metrics(csls_matrix(embeddings[0::2], embeddings[1::2], 2))
    assert float(logged["test/recall@1"]) == pytest.approx(expected["recall@1"])
    assert float(logged["test/mrr"]) == pytest.approx(expected["mrr"])


def test_search_reranks_with_its_queries(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gallery holds the queries themselves: each is left out of its own results and of
    the hubness terms (r(q), r(g)) of its own pair of rows."""
    root, _, checkpoint = trained_run
    gallery = tmp_path / "gallery"
    shutil.copytree(root, gallery)
    base = ["search", f"--ckpt={checkpoint}", f"--gallery={gallery}"]
    base += [f"--query={gallery / 'left'}", "--num-workers=0", "--device=cpu"]
    base += [f"--out={tmp_path / 'm.png'}", "--top-k=3"]
    assert main([*base, "--json", "--rerank=csls", "--rerank-k=4", "--no-cache"]) == 0
    document = json.loads(capsys.readouterr().out)
    model = load_model(checkpoint, "cpu")
    queries = embed_paths(model, sorted((root / "left").iterdir()))
    files = sorted(p for p in gallery.rglob("*") if p.suffix in (".jpg", ".png"))
    names = [path.relative_to(gallery).as_posix() for path in files]
    own = {
        i: names.index(f"left/{path.name}")
        for i, path in enumerate(sorted((root / "left").iterdir()))
    }
    expected = csls_matrix(queries, embed_paths(model, files), 4, own)
    for i, (query, row) in enumerate(zip(document["queries"], expected, strict=True)):
        best = sorted((j for j in range(len(files)) if j != own[i]), key=lambda j: -row[j])[:3]
        assert [m["path"] for m in query["matches"]] == [names[j] for j in best]
        assert [m["score"] for m in query["matches"]] == pytest.approx(
            [row[j] for j in best], abs=1e-5
        )
    one = gallery / "left" / "pair0001.jpg"
    assert main([*base[:3], f"--query={one}", *base[4:], "--rerank=csls"]) == 2
    assert "at least rerank_k = 10 queries" in capsys.readouterr().err
    assert main([*base, "--rerank=csls", "--index=hnsw"]) == 2
    assert "re-ranking runs on exact search" in capsys.readouterr().err
