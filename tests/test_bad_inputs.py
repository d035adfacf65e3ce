"""Every kind of bad input, run through ``data check``, ``fit`` and ``evaluate`` with the real CLI.

One folder holds good pairs next to one case of each bad input (the ``CASES`` table): each command
must name every unusable file with what is wrong and what to do, use every good pair (odd names,
modes and links included), and report the counts. Folders that cannot be used at all
(``LAYOUTS``) must stop every command with one clear message.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pattern_image, tiny_args, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.data.splits import read_split

#: Words of which every problem's reason must hold one: the "what to do" part.
ACTIONS = (
    "remove",
    "fix",
    "replace",
    "rename",
    "add it",
    "move",
    "convert",
    "keep one",
    "see above",
)

#: A file name with bytes that are not UTF-8 (Latin-1 "café"), and how reports print it.
NON_UTF8 = os.fsdecode(b"caf\xe9")
NON_UTF8_SHOWN = "caf\\xe9"


@dataclass(frozen=True)
class Case:
    """One bad input: what it writes under ``root`` and, per file (as reports print it,
    relative to ``root``), the words its reason holds, or None for a file that is used."""

    build: Callable[[Path], None]
    expected: dict[str, str | None]


def twin(root: Path, stem: str, index: int) -> None:
    """The good right-hand image of a left-hand case."""
    pattern_image(index, 32, variant=1).save(root / "right" / f"{stem}.png")


def truncated_jpeg(root: Path) -> None:
    pattern_image(70, 64).save(root / "left" / "cut.jpg", quality=95)
    data = (root / "left" / "cut.jpg").read_bytes()
    (root / "left" / "cut.jpg").write_bytes(data[: len(data) // 2])
    twin(root, "cut", 70)


def decompression_bomb(stem: str, side: int, index: int) -> Callable[[Path], None]:
    """A PNG whose header claims ``side`` x ``side`` pixels (its data is 8x8)."""

    def build(root: Path) -> None:
        buffer = io.BytesIO()
        Image.new("1", (8, 8)).save(buffer, "PNG")
        data = bytearray(buffer.getvalue())
        data[16:24] = struct.pack(">II", side, side)  # IHDR width and height
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        (root / "left" / f"{stem}.png").write_bytes(bytes(data))
        twin(root, stem, index)

    return build


def sixteen_bit(root: Path) -> None:
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(root / "left" / "deep.png")
    twin(root, "deep", 72)


def cmyk(root: Path) -> None:
    pattern_image(73).convert("CMYK").save(root / "left" / "cmyk.jpg")
    twin(root, "cmyk", 73)


def palette_transparency(root: Path) -> None:
    image = pattern_image(74).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.save(root / "left" / "palette.png", transparency=0)
    twin(root, "palette", 74)


def exif_rotated(root: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    pattern_image(75).save(root / "left" / "rotated.jpg", exif=exif)
    twin(root, "rotated", 75)


def named(stem: str, index: int) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        pattern_image(index).save(root / "left" / f"{stem}.jpg")
        twin(root, stem, index)

    return build


def symlink_followed(root: Path) -> None:
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    pattern_image(80).save(elsewhere / "kept.png")
    (root / "left" / "linked.png").symlink_to(elsewhere / "kept.png")
    twin(root, "linked", 80)


def symlink_broken(root: Path) -> None:
    (root / "left" / "dangling.png").symlink_to(root.parent / "gone.png")
    twin(root, "dangling", 81)


def symlink_loop(root: Path) -> None:
    (root / "left" / "loop.png").symlink_to(root / "left" / "loop.png")
    twin(root, "loop", 82)


def symlink_same_file(root: Path) -> None:
    twin(root, "same", 83)
    (root / "left" / "same.png").symlink_to(root / "right" / "same.png")


def hard_link(root: Path) -> None:
    twin(root, "hard", 97)
    (root / "left" / "hard.png").hardlink_to(root / "right" / "hard.png")


def twin_not_an_image(root: Path) -> None:
    pattern_image(98).save(root / "left" / "photo.jpg")
    (root / "right" / "photo.heic").write_bytes(b"a format we do not read")


def one_stem_twice(root: Path) -> None:
    pattern_image(84).save(root / "left" / "twice.png")
    pattern_image(84).save(root / "left" / "twice.jpg")
    twin(root, "twice", 84)


def write(relative: str, data: bytes, twin_index: int | None = None) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        (root / relative).write_bytes(data)
        if twin_index is not None:
            twin(root, Path(relative).stem, twin_index)

    return build


def tiny(root: Path) -> None:
    Image.new("RGB", (1, 1), (200, 30, 30)).save(root / "left" / "dot.png")
    twin(root, "dot", 85)


def png_named_jpg(root: Path) -> None:
    pattern_image(86).save(root / "left" / "png_named.jpg", format="PNG")
    twin(root, "png_named", 86)


def folder(root: Path) -> None:
    (root / "right" / "nested").mkdir()
    pattern_image(87).save(root / "right" / "nested" / "inside.png")


def no_twin(root: Path) -> None:
    pattern_image(88).save(root / "left" / "only_left.png")
    pattern_image(89).save(root / "right" / "only_right.png")


CASES = {
    "no twin": Case(
        no_twin, {"left/only_left.png": "no twin in right/", "right/only_right.png": "no twin"}
    ),
    "truncated JPEG": Case(
        truncated_jpeg,
        {"left/cut.jpg": "truncated", "right/cut.png": "its twin left/cut.jpg is unusable"},
    ),
    "zero-byte file": Case(
        write("left/zero.jpg", b"", twin_index=90),
        {"left/zero.jpg": "empty file (0 bytes)", "right/zero.png": "its twin left/zero.jpg"},
    ),
    "text named .jpg": Case(
        write("left/text.jpg", b"not an image at all\n", twin_index=91),
        {"left/text.jpg": "cannot identify image file", "right/text.png": "its twin"},
    ),
    "PNG named .jpg": Case(
        png_named_jpg, {"left/png_named.jpg": None, "right/png_named.png": None}
    ),
    "decompression bomb": Case(  # 400 megapixels: Pillow refuses it (over twice its limit)
        decompression_bomb("bomb", 20000, 71),
        {"left/bomb.png": "below 89 megapixels", "right/bomb.png": "its twin left/bomb.png"},
    ),
    "over Pillow's limit": Case(  # 100 megapixels: Pillow would only warn and decode it
        decompression_bomb("huge", 10000, 96),
        {"left/huge.png": "exceeds limit of 89478485", "right/huge.png": "its twin left/huge"},
    ),
    "1x1 image": Case(
        tiny, {"left/dot.png": "too small (1x1 pixels", "right/dot.png": "its twin left/dot.png"}
    ),
    "16-bit PNG": Case(sixteen_bit, {"left/deep.png": None, "right/deep.png": None}),
    "CMYK JPEG": Case(cmyk, {"left/cmyk.jpg": None, "right/cmyk.png": None}),
    "palette PNG with transparency": Case(
        palette_transparency, {"left/palette.png": None, "right/palette.png": None}
    ),
    "EXIF-rotated JPEG": Case(exif_rotated, {"left/rotated.jpg": None, "right/rotated.png": None}),
    "name with spaces": Case(
        named("with space", 92), {"left/with space.jpg": None, "right/with space.png": None}
    ),
    "unicode name": Case(
        named("café ☕", 93), {"left/café ☕.jpg": None, "right/café ☕.png": None}
    ),
    "non-UTF-8 name": Case(
        named(NON_UTF8, 94),
        {f"left/{NON_UTF8_SHOWN}.jpg": None, f"right/{NON_UTF8_SHOWN}.png": None},
    ),
    "dollar signs in a name": Case(
        named("price $$", 95), {"left/price $$.jpg": None, "right/price $$.png": None}
    ),
    "symbolic link (followed)": Case(
        symlink_followed, {"left/linked.png": None, "right/linked.png": None}
    ),
    "broken symbolic link": Case(
        symlink_broken,
        {"left/dangling.png": "broken symbolic link", "right/dangling.png": "its twin"},
    ),
    "symbolic link loop": Case(
        symlink_loop, {"left/loop.png": "symbolic link loop", "right/loop.png": "its twin"}
    ),
    "left and right one file": Case(
        symlink_same_file, {"left/same.png": "same file", "right/same.png": "same file"}
    ),
    "left and right hard-linked": Case(
        hard_link, {"left/hard.png": "same file", "right/hard.png": "same file"}
    ),
    "twin not an image": Case(
        twin_not_an_image,
        {"left/photo.jpg": "its twin right/photo.heic is unusable", "right/photo.heic": "not an"},
    ),
    "two files with one stem": Case(
        one_stem_twice,
        {
            "left/twice.jpg": "2 files share the stem 'twice'",
            "left/twice.png": "2 files share the stem 'twice'",
            "right/twice.png": "its twin left/twice",
        },
    ),
    "hidden file": Case(write("left/.DS_Store", b"\x00\x01"), {"left/.DS_Store": "hidden file"}),
    "not an image extension": Case(
        write("left/notes.txt", b"notes"), {"left/notes.txt": "not an image file"}
    ),
    "sub-folder": Case(folder, {"right/nested": "folder, ignored"}),
}

GOOD_PAIRS = 12


def messy_folder(root: Path) -> tuple[dict[str, str], set[str]]:
    """Good pairs plus every case; returns (unusable file -> reason words, used files)."""
    names = write_pairs(root, GOOD_PAIRS)
    problems: dict[str, str] = {}
    used = {f"left/{name}.jpg" for name in names} | {f"right/{name}.png" for name in names}
    for case in CASES.values():
        case.build(root)
        for path, words in case.expected.items():
            if words is None:
                used.add(path)
            else:
                problems[path] = words
    return problems, used


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it (own process, real stdout and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_siamese", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=600,
    )


def relative(root: Path, shown: str) -> str:
    return shown.removeprefix(f"{root}/")


def check_problems(root: Path, listed: list[dict[str, str]], expected: dict[str, str]) -> None:
    """``listed`` (path, reason) names exactly the expected files, with their reason and an
    action."""
    found = {relative(root, problem["path"]): problem["reason"] for problem in listed}
    assert sorted(found) == sorted(expected)
    for path, words in expected.items():
        assert words in found[path], (path, found[path])
        assert any(action in found[path] for action in ACTIONS), (path, found[path])


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], set[str]]:
    root = tmp_path_factory.mktemp("bad-inputs") / "pairs"
    problems, used = messy_folder(root)
    return root, problems, used


def test_data_check_names_every_bad_input(messy: tuple[Path, dict[str, str], set[str]]) -> None:
    root, problems, used = messy
    result = run_cli("data", "check", str(root), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    check_problems(root, report["problems"], problems)
    assert report["pairs"] == len(used) // 2
    # Nothing silently dropped: every entry of left/ and right/ is used or named.
    assert report["files_seen"] == len(used) + len(problems)
    assert report["skipped_files"] == len(problems)

    text = run_cli("data", "check", str(root))
    assert text.returncode == 0 and "Warning" not in text.stderr, text.stderr
    header = f"{len(used) // 2} pairs ({len(used) // 2} groups) from {len(used) + len(problems)}"
    assert header in text.stdout and f"{len(problems)} problems" in text.stdout
    for path in problems:
        assert f"{root}/{path}: " in text.stdout, path

    strict = run_cli("data", "check", str(root), "--strict")
    assert strict.returncode == 1


def test_fit_trains_on_the_good_pairs_and_reports_the_rest(
    messy: tuple[Path, dict[str, str], set[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, problems, used = messy
    run = tmp_path / "run"
    result = run_cli("fit", *tiny_args(root, run), "--trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert f"{len(problems)} files skipped: {len(problems)} problems in {root}" in err
    assert f"and {len(problems) - 10} more (run `lightning-siamese data check {root}`)" in err
    pairs = len(used) // 2
    assert f"{pairs} pairs ({pairs} groups) from {len(used) + len(problems)} files" in err
    # Every good pair, odd names included, is in the run's split; no other.
    split = read_split(run / "split.csv")
    stems = {Path(path).stem.replace(NON_UTF8_SHOWN, NON_UTF8) for path in used}
    assert sorted(split) == sorted(stems)
    assert NON_UTF8 in split
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "media" / "val").glob("retrieval-step*.png"))

    assert main(["fit", *tiny_args(root, tmp_path / "strict"), "--data.strict=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: strict mode: the folder has problems.")  # before training
    for path in list(problems)[:5]:
        assert f"{root}/{path}: " in err
    assert not (tmp_path / "strict" / "checkpoints").exists()


def test_evaluate_scores_the_good_pairs_and_lists_the_rest(
    messy: tuple[Path, dict[str, str], set[str]],
    trained_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, problems, used = messy
    checkpoint = str(trained_run[2])
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--ckpt", checkpoint, "--root", str(root), "--out", str(out)]) == 0
    result = capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    check_problems(root, metrics["problems"], problems)
    assert metrics["pairs"] == len(used) // 2 and metrics["images"] == len(used)
    assert metrics["skipped_files"] == len(problems)
    assert f"{len(problems)} problems; not evaluated:" in result.err
    assert f"{len(used) // 2} pairs ({len(used)} images, {len(problems)} files skipped)" in (
        result.out
    )
    with (out / "retrieval.csv").open(encoding="utf-8", newline="") as handle:
        queries = {row["query"] for row in csv.DictReader(handle)}
    assert queries == {Path(path).name for path in used if path.startswith("left/")}
    assert f"{NON_UTF8_SHOWN}.jpg" in queries
    assert (out / "retrieval.png").is_file()

    assert main(["evaluate", "--ckpt", checkpoint, "--root", str(root), "--strict"]) == 2
    assert "strict mode: the folder has problems" in capsys.readouterr().err


def test_a_folder_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = Path(os.fsdecode(bytes(tmp_path) + b"/pairs-\xe9"))
    write_pairs(root, 3)
    result = run_cli("data", "check", str(root))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/pairs-\\xe9: 3 pairs" in result.stdout
    payload = json.loads(run_cli("data", "check", str(root), "--json").stdout)
    assert payload["root"] == f"{tmp_path}/pairs-\\xe9" and payload["pairs"] == 3


def no_pair(root: Path) -> None:
    for side, name in (("left", "cat"), ("right", "dog")):
        (root / side).mkdir(parents=True)
        pattern_image(1).save(root / side / f"{name}.png")


def only_bad_files(root: Path) -> None:
    for side in ("left", "right"):
        (root / side).mkdir(parents=True)
        (root / side / "a.jpg").write_bytes(b"")


def folders(*sides: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        root.mkdir(parents=True)
        for side in sides:
            (root / side).mkdir()

    return build


def a_file(root: Path) -> None:
    root.write_bytes(b"not a folder")


def nothing(root: Path) -> None:
    """The data root itself is missing."""


#: Folders no command can use: builder, and the message every command gives.
LAYOUTS = {
    "missing root": (nothing, "does not exist"),
    "root is a file": (a_file, "is a file, not a folder"),
    "empty folder": (folders(), "has no left/ or right/"),
    "missing left/": (folders("right"), "has no left/"),
    "missing right/": (folders("left"), "has no right/"),
    "empty left/ and right/": (folders("left", "right"), "no usable pair found"),
    "no pair": (no_pair, "no usable pair found"),
    "only bad files": (only_bad_files, "no usable pair found"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_unusable_folders_stop_every_command_with_one_message(
    layout: str,
    tmp_path: Path,
    trained_run: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    build, message = LAYOUTS[layout]
    root = tmp_path / "pairs"
    build(root)
    status = 2 if message != "no usable pair found" else 1
    assert main(["data", "check", str(root)]) == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err.splitlines()[0], err

    assert main(["fit", *tiny_args(root, tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err.splitlines()[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()

    assert main(["evaluate", "--ckpt", str(trained_run[2]), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err.splitlines()[0], err
