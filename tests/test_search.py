"""``lightning-siamese search``: ranking, the gallery cache, queries and errors, the montage."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import pattern_image, tiny_model
from lightning_siamese.applications import gallery as gallery_module
from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.applications.search import search
from lightning_siamese.cli.main import main
from lightning_siamese.data.images import load_image
from lightning_siamese.retrieval.nearest import top_k
from lightning_siamese.retrieval.plots import plot_retrieval


@pytest.fixture
def gallery(trained_run: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    """A writable copy of the trained run's pair folder (the cache writes into the gallery)."""
    copy = tmp_path / "gallery"
    shutil.copytree(trained_run[0], copy)
    return copy


@pytest.fixture
def checkpoint(trained_run: tuple[Path, Path, Path]) -> Path:
    return trained_run[2]


def run_search(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, query: Path, *extra: str
) -> tuple[int, str, str]:
    code = main(
        [
            "search",
            f"--ckpt={checkpoint}",
            f"--gallery={gallery}",
            f"--query={query}",
            "--num-workers=0",
            "--batch-size=32",
            "--device=cpu",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def search_json(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, query: Path, *extra: str
) -> dict:
    code, out, err = run_search(capsys, checkpoint, gallery, query, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def gallery_files(gallery: Path) -> list[Path]:
    return sorted(
        path
        for path in gallery.rglob("*")
        if path.is_file() and ".lightning-siamese" not in path.parts
    )


def matches(document: dict) -> list[list[tuple[str, float]]]:
    return [
        [(match["path"], match["score"]) for match in query["matches"]]
        for query in document["queries"]
    ]


def test_search_scores_are_cosine_similarities(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    query = gallery / "left" / "pair0003.jpg"
    out = tmp_path / "montage" / "search.png"
    document = search_json(capsys, checkpoint, gallery, query, "--top-k=5", f"--out={out}")

    model = load_model(checkpoint, "cpu")
    files = gallery_files(gallery)
    embeddings = F.normalize(embed_paths(model, files, batch_size=16), dim=1)
    with torch.inference_mode():
        image = model.transform()(load_image(query)).unsqueeze(0)
        query_embedding = F.normalize(model.net(image), dim=1)[0]
    expected = {
        path.relative_to(gallery).as_posix(): float(score)
        for path, score in zip(files, embeddings @ query_embedding, strict=True)
    }

    assert document["top_k"] == 5
    assert document["embedded"] == len(files) == 80
    assert document["cached"] == 0
    assert [entry["query"] for entry in document["queries"]] == [str(query)]
    found = document["queries"][0]["matches"]
    assert [match["rank"] for match in found] == [1, 2, 3, 4, 5]
    scores = [match["score"] for match in found]
    assert scores == sorted(scores, reverse=True)
    for match in found:
        assert match["score"] == pytest.approx(expected[match["path"]], abs=1e-5)
    assert "left/pair0003.jpg" not in [match["path"] for match in found]
    # The exact top 5 of the other 79 images.
    others = sorted((s for p, s in expected.items() if p != "left/pair0003.jpg"), reverse=True)
    assert scores == pytest.approx(others[:5], abs=1e-5)

    assert out.is_file()
    with Image.open(out) as picture:
        picture.load()
        assert picture.format == "PNG"
        assert picture.width > 100

    document = search_json(capsys, checkpoint, gallery, query, "--include-self", f"--out={out}")
    first = document["queries"][0]["matches"][0]
    assert first["path"] == "left/pair0003.jpg"
    assert first["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(document["queries"][0]["matches"]) == 5


def test_text_output(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    out = tmp_path / "text.png"
    query = gallery / "right" / "pair0010.png"
    code, stdout, _ = run_search(capsys, checkpoint, gallery, query, "--top-k=3", f"--out={out}")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("gallery: 80 images (0 from cache, 80 embedded) in ")
    assert lines[1] == f"query: {query}"
    ranked = [line.split() for line in lines[2:5]]
    assert [fields[0] for fields in ranked] == ["1", "2", "3"]
    assert all(len(fields[1]) == 6 and (gallery / fields[2]).is_file() for fields in ranked)
    assert lines[-1] == f"montage: {out}"
    assert out.is_file()


def test_gallery_cache(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    query = gallery / "left" / "pair0003.jpg"
    out = f"--out={tmp_path / 'search.png'}"
    first = search_json(capsys, checkpoint, gallery, query, out)
    assert (first["cached"], first["embedded"]) == (0, 80)
    (cache,) = (gallery / ".lightning-siamese").glob("gallery-*.pt")
    written = cache.stat().st_mtime_ns

    second = search_json(capsys, checkpoint, gallery, query, out)
    assert (second["cached"], second["embedded"]) == (80, 0)
    assert matches(second) == matches(first)
    assert cache.stat().st_mtime_ns == written, "an unchanged gallery rewrote the cache"
    code, stdout, _ = run_search(capsys, checkpoint, gallery, query, out)
    assert code == 0
    assert stdout.splitlines()[0].startswith("gallery: 80 images (80 from cache, 0 embedded)")

    # Two new images and one rewritten with another picture (a later mtime for certain).
    (gallery / "extra").mkdir()
    pattern_image(100).save(gallery / "extra" / "new100.png")
    pattern_image(101).save(gallery / "extra" / "new101.jpg")
    changed = gallery / "left" / "pair0005.jpg"
    before = changed.stat()
    pattern_image(200).save(changed)
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    updated = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100")
    assert (updated["cached"], updated["embedded"]) == (79, 3)
    fresh = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100", "--no-cache")
    assert (fresh["cached"], fresh["embedded"]) == (0, 82)
    got, want = matches(updated)[0], matches(fresh)[0]
    assert len(got) == 81
    assert [path for path, _ in got] == [path for path, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-5)

    # A removed image leaves the results; nothing is embedded.
    (gallery / "right" / "pair0007.png").unlink()
    removed = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100")
    assert (removed["cached"], removed["embedded"]) == (81, 0)
    paths = [path for path, _ in matches(removed)[0]]
    assert len(paths) == 80
    assert "right/pair0007.png" not in paths
    assert {"extra/new100.png", "extra/new101.jpg"} <= set(paths)


def test_unreadable_images_are_skipped(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    broken = gallery / "left" / "broken.png"
    broken.write_bytes(b"not a png")
    query = gallery / "left" / "pair0001.jpg"
    out = f"--out={tmp_path / 'search.png'}"
    code, stdout, stderr = run_search(capsys, checkpoint, gallery, query, out)
    assert code == 0
    assert f"skipped unreadable image {broken}" in stderr
    assert "gallery: 80 images (0 from cache, 80 embedded, 1 unreadable skipped)" in stdout
    assert "broken.png" not in stdout

    # Not cached: tried again (and reported again) at every search.
    document = search_json(capsys, checkpoint, gallery, query, out)
    assert (document["cached"], document["embedded"]) == (80, 0)
    assert [entry["path"] for entry in document["unreadable"]] == ["left/broken.png"]


def test_an_image_once_unreadable_is_embedded_once_readable(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    """Truncated PNG bytes, then the whole file: same size, same mtime, embedded at once."""
    whole = io.BytesIO()
    pattern_image(200).save(whole, format="PNG")
    data = whole.getvalue()
    broken = gallery / "left" / "late.png"
    broken.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    query = tmp_path / "query.png"
    query.write_bytes(data)
    out = f"--out={tmp_path / 'search.png'}"
    first = search_json(capsys, checkpoint, gallery, query, out)
    assert (first["cached"], first["embedded"]) == (0, 80)
    assert [entry["path"] for entry in first["unreadable"]] == ["left/late.png"]

    before = broken.stat()
    broken.write_bytes(data)
    os.utime(broken, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = broken.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = search_json(capsys, checkpoint, gallery, query, out)
    assert (second["cached"], second["embedded"]) == (80, 1)
    assert second["unreadable"] == []
    best = second["queries"][0]["matches"][0]
    assert best["path"] == "left/late.png"
    assert best["score"] == pytest.approx(1.0, abs=1e-5)


def test_an_image_replaced_with_the_same_size_and_mtime_is_embedded_again(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    """``cp -p`` of another picture over a gallery image: only its content says it changed."""
    target = gallery / "right" / "pair0005.png"
    pattern_image(5, variant=1).save(target, compress_level=0)  # uncompressed: size = pixels
    query = tmp_path / "query.png"
    pattern_image(200, variant=1).save(query)
    out = f"--out={tmp_path / 'search.png'}"
    first = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100")
    assert (first["cached"], first["embedded"]) == (0, 80)
    assert first["queries"][0]["matches"][0]["score"] < 0.999  # the new picture is not there yet

    before = target.stat()
    pattern_image(200, variant=1).save(target, compress_level=0)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    updated = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100")
    assert (updated["cached"], updated["embedded"]) == (79, 1)
    best = updated["queries"][0]["matches"][0]
    assert best["path"] == "right/pair0005.png"
    assert best["score"] == pytest.approx(1.0, abs=1e-5)
    fresh = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100", "--no-cache")
    got, want = matches(updated)[0], matches(fresh)[0]
    assert [path for path, _ in got] == [path for path, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-5)


def test_a_checkpoint_retrained_in_place_gets_its_own_cache(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    """New weights written over the same path with the same size and mtime: the cache is
    keyed on the model's content, so the old embeddings are not used; a copy of a checkpoint
    elsewhere shares its cache."""
    # The same weights in another file (written the way they are rewritten below).
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model_file = tmp_path / "model.ckpt"
    torch.save(content, model_file)
    query = gallery / "left" / "pair0003.jpg"
    out = f"--out={tmp_path / 'search.png'}"
    first = search_json(capsys, checkpoint, gallery, query, out, "--top-k=100")
    again = search_json(capsys, model_file, gallery, query, out, "--top-k=100")
    assert (again["cached"], again["embedded"]) == (80, 0), "the same weights share the cache"

    before = model_file.stat()
    generator = torch.Generator().manual_seed(0)
    head = [name for name in content["state_dict"] if name.startswith("net.head.")]
    assert head
    for name in head:
        tensor = content["state_dict"][name]
        tensor.copy_(torch.randn(tensor.shape, generator=generator))
    torch.save(content, model_file)
    os.utime(model_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    stat = model_file.stat()
    assert (stat.st_size, stat.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    retrained = search_json(capsys, model_file, gallery, query, out, "--top-k=100")
    assert (retrained["cached"], retrained["embedded"]) == (0, 80)
    assert len(list((gallery / ".lightning-siamese").glob("gallery-*.pt"))) == 2
    fresh = search_json(capsys, model_file, gallery, query, out, "--top-k=100", "--no-cache")
    assert matches(retrained) != matches(first), "the new weights should rank differently"
    got, want = matches(retrained)[0], matches(fresh)[0]
    assert [path for path, _ in got] == [path for path, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want], abs=1e-5)


def test_model_fingerprint_is_its_weights_and_settings() -> None:
    """Equal for equal weights and settings (whatever the optimizer factory's address), and
    different when one weight or one setting differs."""
    first = tiny_model(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    twin = tiny_model(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    twin.load_state_dict(first.state_dict())
    key = gallery_module.model_fingerprint(first)
    assert len(key) == 32
    assert gallery_module.model_fingerprint(twin) == key
    with torch.no_grad():
        twin.net.head[2].bias[0] += 1e-3
    assert gallery_module.model_fingerprint(twin) != key
    other = tiny_model(normalize=True)
    other.load_state_dict(first.state_dict())
    assert gallery_module.model_fingerprint(other) != key


def test_an_image_that_cannot_be_read_for_its_digest_is_reported(
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    gallery: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A permission error while hashing (simulated: the tests may run as root) names the file
    and its reason, like any unreadable image; the others are searched."""
    locked = gallery / "left" / "pair0009.jpg"
    real_digest = gallery_module.content_digest

    def digest(path: str | Path) -> str:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_digest(path)

    monkeypatch.setattr(gallery_module, "content_digest", digest)
    query = gallery / "left" / "pair0001.jpg"
    document = search_json(capsys, checkpoint, gallery, query, f"--out={tmp_path / 's.png'}")
    assert (document["images"], document["embedded"]) == (79, 79)
    (entry,) = document["unreadable"]
    assert entry["path"] == "left/pair0009.jpg"
    assert "Permission denied" in entry["reason"]


def test_cache_of_another_format_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "gallery-old.pt"
    old = {"format": 1, "checkpoint": "key", "image_size": 32, "paths": [], "stats": None}
    torch.save(old, path)
    notes: list[str] = []
    assert gallery_module.load_cache(path, "key", 32, notes) is None
    assert notes == []  # not damaged: only of another layout


def test_links_and_odd_names(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    """Broken links and link loops are named and skipped; names that are not UTF-8 print."""
    (gallery / "left" / "dangling.png").symlink_to(tmp_path / "gone.png")
    (gallery / "left" / "loop.png").symlink_to(gallery / "left" / "loop.png")
    odd = gallery / "left" / os.fsdecode(b"caf\xe9 $$.jpg")
    (gallery / "left" / "pair0001.jpg").rename(odd)
    code, stdout, stderr = run_search(
        capsys, checkpoint, gallery, odd, f"--out={tmp_path / 'm.png'}"
    )
    assert code == 0, stderr
    assert f"skipped {gallery / 'left' / 'dangling.png'}: broken symbolic link" in stderr
    assert f"skipped {gallery / 'left' / 'loop.png'}: symbolic link loop" in stderr
    assert "query: " in stdout and "caf\\xe9 $$.jpg" in stdout
    assert "gallery: 80 images" in stdout
    assert (tmp_path / "m.png").is_file()


def test_query_folder(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, gallery: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "queries"
    (queries / "sub").mkdir(parents=True)
    pattern_image(300).save(queries / "a.png")
    pattern_image(301).save(queries / "sub" / "b.jpg")
    shutil.copy(gallery / "left" / "pair0002.jpg", queries / "c.jpg")
    (queries / "notes.txt").write_text("not an image")
    (queries / ".hidden.png").write_bytes(b"")
    document = search_json(
        capsys, checkpoint, gallery, queries, "--top-k=4", f"--out={tmp_path / 'q.png'}"
    )
    names = [entry["query"] for entry in document["queries"]]
    assert names == [str(queries / "a.png"), str(queries / "c.jpg"), str(queries / "sub" / "b.jpg")]
    assert all(len(entry["matches"]) == 4 for entry in document["queries"])
    # A copy outside the gallery is not "self": its twin in the gallery comes first.
    twin = document["queries"][1]["matches"][0]
    assert twin["path"] == "left/pair0002.jpg"
    assert twin["score"] == pytest.approx(1.0, abs=1e-5)


def test_cache_falls_back_when_the_gallery_is_not_writable(
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    gallery: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gallery_module, "gallery_writable", lambda folder: False)
    query = gallery / "left" / "pair0001.jpg"
    out = f"--out={tmp_path / 'search.png'}"
    code, _, stderr = run_search(capsys, checkpoint, gallery, query, out, "--json")
    assert code == 0
    assert "is not writable; caching embeddings in" in stderr
    cache_dir = tmp_path / "cache" / "lightning-siamese" / "search"  # XDG_CACHE_HOME of conftest
    assert len(list(cache_dir.glob("gallery-*.pt"))) == 1
    assert not (gallery / ".lightning-siamese").exists()
    document = search_json(capsys, checkpoint, gallery, query, out)
    assert (document["cached"], document["embedded"]) == (80, 0)

    elsewhere = tmp_path / "elsewhere"
    document = search_json(capsys, checkpoint, gallery, query, out, f"--cache-dir={elsewhere}")
    assert document["embedded"] == 80
    assert len(list(elsewhere.glob("gallery-*.pt"))) == 1


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing gallery", "does not exist: pass a folder of images"),
        ("empty gallery", "no image file"),
        ("missing query", "does not exist: pass an image file or a folder of images"),
        ("not a checkpoint", "not a readable checkpoint"),
        ("missing checkpoint", "no such checkpoint file"),
        # Folders are looked at before the checkpoint is loaded.
        ("empty query folder, missing checkpoint", "no image file in it"),
    ],
)
def test_errors(
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    tmp_path: Path,
    problem: str,
    message: str,
) -> None:
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    pattern_image(0).save(gallery / "one.png")
    query = gallery / "one.png"
    if problem == "missing gallery":
        gallery = tmp_path / "nowhere"
    elif problem == "empty gallery":
        gallery = tmp_path / "empty"
        (gallery / "sub").mkdir(parents=True)
        (gallery / "readme.txt").write_text("no images")
    elif problem == "missing query":
        query = tmp_path / "missing.png"
    elif problem == "empty query folder, missing checkpoint":
        query = tmp_path / "no-queries"
        query.mkdir()
        checkpoint = tmp_path / "missing.ckpt"
    elif problem == "not a checkpoint":
        checkpoint = tmp_path / "fake.ckpt"
        checkpoint.write_text("not a checkpoint")
    else:
        checkpoint = tmp_path / "missing.ckpt"
    code, stdout, stderr = run_search(
        capsys, checkpoint, gallery, query, f"--out={tmp_path / 's.png'}"
    )
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_top_k_blocks_and_exclusion(backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(0)
    gallery = torch.randn(50, 8, generator=generator)
    queries = torch.cat([gallery[:3] * 2.0, torch.randn(4, 8, generator=generator)])
    exclude = [0, 1, 2, None, None, None, None]
    whole = top_k(queries, gallery, 6, exclude, block_elements=10**9, backend=backend)
    blocks = top_k(queries, gallery, 6, exclude, block_elements=50, backend=backend)
    assert torch.equal(blocks[1], whole[1])
    assert torch.allclose(blocks[0], whole[0], atol=1e-6)
    cosine = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    scores, indices = whole
    for row in range(len(queries)):
        assert len(indices[row]) == 6
        if exclude[row] is not None:
            assert exclude[row] not in indices[row].tolist()
            cosine[row, exclude[row]] = -2
        want = torch.topk(cosine[row], 6)
        assert indices[row].tolist() == want.indices.tolist()
        assert scores[row].tolist() == pytest.approx(want.values.tolist(), abs=1e-6)
    # k larger than the gallery: everything, the excluded row last with -inf.
    small_scores, small_indices = top_k(queries[:1], gallery[:4], 10, [0], backend=backend)
    assert sorted(small_indices[0, :3].tolist()) == [1, 2, 3]
    assert small_indices[0, 3] == 0 and small_scores[0, 3] == float("-inf")


def test_montage_draws_one_row_per_query() -> None:
    rows = [
        (
            pattern_image(0),
            "q0.png",
            [(pattern_image(1), "0.9\na.png", None), (pattern_image(2), "0.8\nb.png", None)],
        ),
        (pattern_image(3), "q1.png", [(pattern_image(4), "0.7\nc.png", None)]),
    ]
    figure = plot_retrieval(rows)
    assert len(figure.axes) == 2 * 3
    assert figure.axes[1].get_xlabel() == "0.9\na.png"
    assert not figure.axes[5].axison  # the second row has one match fewer
    with pytest.raises(ValueError, match="no query"):
        plot_retrieval([])


def test_a_query_never_finds_itself_even_when_k_exceeds_the_gallery(
    checkpoint: Path, gallery: Path
) -> None:
    query = gallery / "left" / "pair0003.jpg"
    result = search(checkpoint, gallery, query, top_k_matches=10_000, use_cache=False)
    (found,) = result.matches
    assert len(found) == len(result.gallery.paths) - 1
    assert "left/pair0003.jpg" not in [path for path, _ in found]
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and min(scores) > float("-inf")
    kept = search(checkpoint, gallery, query, top_k_matches=10_000, include_self=True)
    assert kept.matches[0][0] == ("left/pair0003.jpg", pytest.approx(1.0, abs=1e-5))


def test_no_readable_image_names_the_files(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_text("not an image")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 cut")
    code, stdout, stderr = run_search(capsys, checkpoint, folder, folder / "a.png")
    assert code == 2 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: gallery {folder}: no readable image (2 unreadable: ")
    assert "a.png: " in line and "b.jpg: " in line
