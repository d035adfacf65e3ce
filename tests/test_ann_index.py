"""Approximate gallery indexes (faiss IVF and HNSW): recall against exact search, updates as
files come and go, the stored file, and ``search --index`` end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import pattern_image
from lightning_siamese.cli.main import main
from lightning_siamese.errors import ConfigError
from lightning_siamese.retrieval import ann_index
from lightning_siamese.retrieval.ann_index import ApproximateIndex
from lightning_siamese.retrieval.index_settings import IndexSettings

pytest.importorskip("faiss")


def clustered(count: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)
    members = torch.randint(clusters, (count,), generator=generator)
    return centres[members] + 0.5 * torch.randn(count, dim, generator=generator)


def exact_top(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force in float64, written here independently of the library."""
    similarity = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    return similarity.argsort(dim=1, descending=True)[:, :k]


def names(count: int) -> tuple[list[str], dict[str, str]]:
    """``count`` image paths and a content digest for each (made up: 32 hex digits)."""
    paths = [f"img{i:05d}.png" for i in range(count)]
    return paths, {path: f"{i:032x}" for i, path in enumerate(paths)}


@pytest.mark.parametrize(
    "settings", [IndexSettings("ivf"), IndexSettings("hnsw", neighbors=16, ef_search=64)]
)
def test_recall_against_exact_search(settings: IndexSettings) -> None:
    gallery, queries = clustered(3000), clustered(200, seed=1)
    paths, digests = names(len(gallery))
    index = ApproximateIndex.build(settings, paths, digests, gallery)
    scores, rows = index.search(queries, 10, paths)
    truth = exact_top(queries, gallery, 10)
    recall = (
        sum(len(set(a) & set(b)) for a, b in zip(rows.tolist(), truth.tolist(), strict=True))
        / truth.numel()
    )
    assert recall >= 0.9, recall
    # Scores are the cosine similarities of the rows returned, best first.
    cosine = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    torch.testing.assert_close(scores, cosine.gather(1, rows), atol=1e-5, rtol=0)
    assert bool((scores[:, :-1] >= scores[:, 1:] - 1e-6).all())
    # Gallery images as queries, each left out of its own results.
    _, own = index.search(gallery[:50], 5, paths, exclude=list(range(50)))
    assert own.shape == (50, 5) and all(i not in row for i, row in enumerate(own.tolist()))
    truth = exact_top(gallery[:50], gallery, 6)[:, 1:]  # the first is the query itself
    assert (
        sum(len(set(a) & set(b)) for a, b in zip(own.tolist(), truth.tolist(), strict=True))
        >= 0.9 * truth.numel()
    )


def test_ivf_scanning_every_cell_is_exact_and_excludes_the_query() -> None:
    gallery = clustered(500)
    paths, digests = names(len(gallery))
    index = ApproximateIndex.build(IndexSettings("ivf", lists=8, probes=8), paths, digests, gallery)
    queries = gallery[:20]
    _, rows = index.search(queries, 5, paths, exclude=list(range(20)))
    cosine = F.normalize(queries.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    cosine[torch.arange(20), torch.arange(20)] = -2  # each query's own row is left out
    assert rows.tolist() == cosine.argsort(dim=1, descending=True)[:, :5].tolist()


def test_updates_add_remove_and_re_add_changed_files(tmp_path: Path) -> None:
    gallery = clustered(1200)
    paths, digests = names(1000)
    settings = IndexSettings("ivf", probes=1000)  # every cell: exact, so results are checkable
    index = ApproximateIndex.build(settings, paths, digests, gallery[:1000])
    # 200 new files, the first 50 removed, and img00050.png changed (a new embedding).
    new_paths, new_digests = names(1200)
    new_paths, embeddings = new_paths[50:], gallery[50:].clone()
    embeddings[0] = -gallery[50]
    new_digests = {path: new_digests[path] for path in new_paths}
    new_digests["img00050.png"] = "f" * 32  # another content
    index.save(tmp_path / "index.pt")
    loaded = ApproximateIndex.load(tmp_path / "index.pt", settings, notes := [])
    assert loaded is not None and not notes and len(loaded) == 1000
    updated = loaded.update(new_paths, new_digests, embeddings)
    assert updated is loaded, updated.note  # updated in place, not rebuilt
    assert updated.note.startswith("updated") and "201 added" in updated.note, updated.note
    assert "50 removed" in updated.note
    assert len(updated) == 1150
    _, rows = updated.search(embeddings[:30], 3, new_paths)
    assert rows.tolist() == exact_top(embeddings[:30], embeddings, 3).tolist()
    # Nothing changed: the same index, used as it is.
    again = updated.update(new_paths, new_digests, embeddings)
    assert again is updated and again.note.startswith("using")


def test_rebuilds_when_needed() -> None:
    gallery = clustered(800)
    paths, digests = names(800)
    hnsw = ApproximateIndex.build(IndexSettings("hnsw", neighbors=8), paths, digests, gallery)
    grown = hnsw.update(paths[:700], digests, gallery[:700])  # HNSW cannot delete
    assert grown is not hnsw and grown.note.startswith("rebuilt") and len(grown) == 700
    added = grown.update(paths, digests, gallery)  # additions only: in place
    assert added is grown and len(added) == 800
    ivf = ApproximateIndex.build(IndexSettings("ivf"), paths[:100], digests, gallery[:100])
    bigger = ivf.update(paths, digests, gallery)  # 8x the vectors its cells were trained on
    assert bigger is not ivf and "trained on 100" in bigger.note


def test_stored_index_of_other_settings_or_damaged_is_rebuilt(tmp_path: Path) -> None:
    gallery = clustered(400)
    paths, digests = names(400)
    settings = IndexSettings("ivf", lists=4)
    ApproximateIndex.build(settings, paths, digests, gallery).save(tmp_path / "i.pt")
    assert ApproximateIndex.load(tmp_path / "i.pt", replace(settings, lists=8), []) is None
    # Search-time settings do not invalidate the file.
    assert ApproximateIndex.load(tmp_path / "i.pt", replace(settings, probes=2), []) is not None
    (tmp_path / "i.pt").write_bytes(b"not an index")
    notes: list[str] = []
    assert ApproximateIndex.load(tmp_path / "i.pt", settings, notes) is None
    assert "unreadable index" in notes[0]


def test_without_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann_index, "faiss_module", lambda: None)
    with pytest.raises(ConfigError, match=r"lightning-siamese\[faiss\]"):
        ApproximateIndex.build(IndexSettings("ivf"), *names(10), clustered(10))
    assert ann_index.resolve_kind("auto", 10**7) == "exact"
    with pytest.raises(ConfigError, match="kind must be ivf or hnsw"):
        IndexSettings("flat")


def test_search_command_builds_stores_and_updates_the_index(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "gallery"
    shutil.copytree(trained_run[0], gallery)
    query = gallery / "left"

    def run(*extra: str) -> tuple[dict, str]:
        args = [f"--ckpt={trained_run[2]}", f"--gallery={gallery}", f"--query={query}"]
        args += ["--json", "--device=cpu", "--num-workers=0", f"--out={tmp_path / 's.png'}"]
        assert main(["search", *args, *extra]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    exact, _ = run("--index=exact")
    # 80 images, 2 cells, both scanned: the same matches as exact search.
    found, log = run("--index=ivf", "--lists=2", "--probes=2")
    assert "index: built an IVF index (80 images, 2 cells)" in log
    assert found["index"] == "ivf" and exact["index"] == "exact"
    for a, b in zip(found["queries"], exact["queries"], strict=True):
        assert [m["path"] for m in a["matches"]] == [m["path"] for m in b["matches"]]
        assert [m["score"] for m in a["matches"]] == pytest.approx(
            [m["score"] for m in b["matches"]], abs=1e-5
        )
    stored = list((gallery / ".lightning-siamese").glob("gallery-*.ivf.pt"))
    assert len(stored) == 1
    _, log = run("--index=ivf", "--lists=2", "--probes=2")
    assert "index: using an IVF index (80 images" in log
    shutil.copy(gallery / "left" / "pair0000.jpg", gallery / "extra.jpg")
    found, log = run("--index=ivf", "--lists=2", "--probes=2")
    assert "1 added (new or changed), 0 removed" in log, log
    assert any(m["path"] == "extra.jpg" for m in found["queries"][0]["matches"])


def test_search_command_re_adds_a_file_whose_content_changed_under_the_same_stat(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another picture with the same size and mtime (``cp -p``, ``rsync -a``): the index is
    keyed on content, so the file is re-added and found as the new picture."""
    gallery = tmp_path / "gallery"
    shutil.copytree(trained_run[0], gallery)
    target = gallery / "right" / "pair0005.png"
    pattern_image(5, variant=1).save(target, compress_level=0)  # uncompressed: size = pixels
    query = tmp_path / "query.png"
    picture = io.BytesIO()
    pattern_image(200, variant=1).save(picture, format="PNG", compress_level=0)
    query.write_bytes(picture.getvalue())

    def run() -> tuple[dict, str]:
        args = [f"--ckpt={trained_run[2]}", f"--gallery={gallery}", f"--query={query}"]
        args += ["--json", "--device=cpu", "--num-workers=0", f"--out={tmp_path / 's.png'}"]
        args += ["--index=ivf", "--lists=2", "--probes=2"]
        assert main(["search", *args]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    _, log = run()
    assert "index: built an IVF index (80 images, 2 cells)" in log
    before = target.stat()
    target.write_bytes(picture.getvalue())
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    found, log = run()
    assert "1 added (new or changed), 0 removed" in log, log
    best = found["queries"][0]["matches"][0]
    assert best["path"] == "right/pair0005.png"
    assert best["score"] == pytest.approx(1.0, abs=1e-5)
