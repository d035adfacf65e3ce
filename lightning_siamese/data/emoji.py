"""The emoji look-alike demo set: the same emoji drawn by Google (Noto) and by Twitter (Twemoji).

Same concept, different artist: a real "totally looks like" pair. The PNGs come from the npm
packages of the emoji-datasource project, fetched with the ``npm`` client (so the user's npm
registry and proxy settings apply). A third designer, Microsoft's Fluent (flat), comes as SVG
from the ``@iconify-json/fluent-emoji-flat`` package and is rendered with cairosvg: pairs of
Google or Twitter against Fluent test a model on a designer it never trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from lightning_siamese.data.built_sets import building
from lightning_siamese.data.pairs_csv import write_pairs_csv
from lightning_siamese.errors import ConfigError, NpmError
from lightning_siamese.files import user_cache_dir

VERSION = "16.0.0"
Designer = Literal["google", "twitter", "fluent"]
#: Each designer's npm package at its pinned version.
PACKAGES = {
    "google": f"emoji-datasource-google@{VERSION}",
    "twitter": f"emoji-datasource-twitter@{VERSION}",
    "fluent": "@iconify-json/fluent-emoji-flat@1.2.6",
}
IMAGE_SIZE = 64

# Code points that make a variant of a base emoji rather than a new one: ZWJ, variation selector,
# skin tones, gender signs, the man/woman/person bases and the "facing right" arrow.
_VARIANT_PARTS = {
    "200D", "FE0F", "1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF",
    "2640", "2642", "1F468", "1F469", "1F9D1", "27A1",
}  # fmt: skip
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)

CREDITS = {
    "google": "Noto Emoji by Google, Apache License 2.0, https://github.com/googlefonts/noto-emoji"
    " (packaged by the emoji-datasource project, MIT)",
    "twitter": "Twemoji by Twitter, Inc and other contributors, graphics licensed under CC-BY 4.0,"
    " https://creativecommons.org/licenses/by/4.0/ (https://github.com/twitter/twemoji;"
    " packaged by the emoji-datasource project, MIT)",
    "fluent": "Fluent Emoji (flat) by Microsoft, MIT License,"
    " https://github.com/microsoft/fluentui-emoji (packaged by Iconify, rendered from SVG)",
}

ATTRIBUTION = """\
# Emoji look-alike pairs

left/  : {left}
right/ : {right}

npm packages: {packages}.
Built by `lightning-siamese data emoji`: {pairs} pairs, {size}x{size} RGBA PNG, file name = the
emoji's code points. pairs.csv gives each pair's name, description, category and a `group` that
keeps skin-tone and gender variants of one base emoji in one split.
"""


def emoji_group(unified: str) -> str:
    """The base emoji a code point sequence is a variant of (skin tone, gender, direction).

    Flags are their own group: different flags that look alike (Chad and Romania) are real
    look-alikes to keep, not variants.
    """
    parts = unified.upper().split("-")
    if any(int(part, 16) in _REGIONAL_INDICATORS for part in parts):
        return unified.upper()
    base = [part for part in parts if part not in _VARIANT_PARTS]
    return "-".join(base) if base else "1F9D1"


def npm_pack(specs: list[str], destination: Path, timeout: float = 600) -> list[Path]:
    """Download package tarballs with ``npm pack`` (reused when already in ``destination``).

    npm writes into a temporary folder inside ``destination``; each whole tarball is then
    renamed into place, so a download cut short is never taken for a package later."""
    destination.mkdir(parents=True, exist_ok=True)
    # npm's own file names: @scope/name@1.0 -> scope-name-1.0.tgz
    names = [spec.removeprefix("@").replace("/", "-").replace("@", "-") for spec in specs]
    tarballs = [destination / f"{name}.tgz" for name in names]
    missing = [spec for spec, path in zip(specs, tarballs, strict=True) if not path.is_file()]
    if not missing:
        return tarballs
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(
            "the emoji data set is fetched with npm, which is not installed: install Node.js and "
            "npm (e.g. `apt-get install npm`), or use `lightning-siamese data glyphs` instead"
        )
    with tempfile.TemporaryDirectory(dir=destination, prefix=".npm-pack-") as folder:
        command = [npm, "pack", *missing, "--pack-destination", folder, "--silent"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise NpmError(
                f"`npm pack` gave no answer in {timeout:.0f} s: is the registry reachable?"
            ) from error
        if result.returncode == 0:
            for path in tarballs:
                if (Path(folder) / path.name).is_file():
                    os.replace(Path(folder) / path.name, path)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise NpmError(
            f"`npm pack {' '.join(missing)}` failed (exit {result.returncode}): the npm registry "
            f"is not reachable or refused the request. Check `npm config get registry` and your "
            f"proxy settings.\n{tail}"
        )
    absent = [path.name for path in tarballs if not path.is_file()]
    if absent:
        raise NpmError(f"`npm pack` did not write {', '.join(absent)} into {destination}")
    return tarballs


def _extract(tarball: Path, artist: str, out: Path, wanted: dict[str, str]) -> dict[str, Path]:
    """The emoji-datasource PNGs of ``wanted`` (file name -> code points) into ``out``."""
    prefix = f"package/img/{artist}/{IMAGE_SIZE}/"
    written: dict[str, Path] = {}
    with tarfile.open(tarball) as archive:
        for member in archive:
            name = member.name.removeprefix(prefix)
            if not member.isfile() or name == member.name or name not in wanted:
                continue
            source = archive.extractfile(member)
            if source is None:
                continue
            target = out / name
            target.write_bytes(source.read())
            written[name] = target
    return written


def _render_fluent(tarball: Path, out: Path, wanted: dict[str, str]) -> dict[str, Path]:
    """Fluent's SVG of each wanted emoji (by its code points, with or without the FE0F
    variation selector), rendered to a PNG of ``IMAGE_SIZE`` pixels."""
    try:
        import cairosvg
    except (ImportError, OSError) as error:  # OSError: the cairo library itself is missing
        raise NpmError(
            "Fluent emoji are SVG, rendered with cairosvg: pip install cairosvg (it needs the "
            f"cairo library, e.g. apt-get install libcairo2) ({error})"
        ) from error
    with tarfile.open(tarball) as archive:
        catalogue = {}
        for part in ("icons", "chars"):
            member = archive.extractfile(f"package/{part}.json")
            if member is None:
                raise NpmError(f"{tarball} holds no package/{part}.json")
            catalogue[part] = json.load(member)
    icons, chars = catalogue["icons"], catalogue["chars"]
    aliases = icons.get("aliases", {})
    written: dict[str, Path] = {}
    for name, unified in wanted.items():
        code = unified.lower()
        icon = chars.get(code) or chars.get(code.replace("-fe0f", ""))
        icon = aliases.get(icon, {}).get("parent", icon)  # an alias draws its parent icon
        if icon is None or icon not in icons["icons"]:
            continue
        drawing = icons["icons"][icon]
        width = drawing.get("width", icons.get("width", 16))
        height = drawing.get("height", icons.get("height", 16))
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="0 0 {width} {height}">{drawing["body"]}</svg>'
        )
        target = out / name
        png = cairosvg.svg2png(
            bytestring=svg.encode(), output_width=IMAGE_SIZE, output_height=IMAGE_SIZE
        )
        target.write_bytes(png)
        written[name] = target
    return written


def _read_catalogue(tarball: Path) -> list[dict[str, Any]]:
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/emoji.json")
        if member is None:
            raise NpmError(f"{tarball} holds no package/emoji.json")
        return json.load(member)


def build_emoji(
    out: str | Path,
    skin_tones: bool = False,
    cache_dir: str | Path | None = None,
    left: Designer = "google",
    right: Designer = "twitter",
    force: bool = False,
) -> dict[str, float]:
    """Build ``out/left``, ``out/right``, ``out/pairs.csv`` and ``out/NOTICE.md``, beside
    ``out`` and swapped in whole (:mod:`~lightning_siamese.data.built_sets`).

    Args:
        skin_tones: also add the skin-tone variants (3,786 pairs instead of 1,911 for Google
            and Twitter); they share the group of their base emoji.
        cache_dir: where the npm tarballs are kept (default ``~/.cache/lightning-siamese/npm``).
        left: the designer of ``left/``: ``google`` (Noto), ``twitter`` (Twemoji) or
            ``fluent`` (Microsoft's Fluent, flat, rendered from SVG; needs cairosvg).
        right: the designer of ``right/``, another of the three. The names and groups come
            from emoji-datasource's catalogue either way.
        force: replace an ``out`` that holds other files (everything in it is deleted);
            without it only a missing or empty folder, or a set built here, is replaced.

    Returns:
        ``pairs`` and ``seconds``.
    """
    start = time.perf_counter()
    if left == right:
        raise ConfigError(f"left and right must be two designers, got {left!r} twice")
    with building(out, "emoji", force) as record:
        pairs, specs = _build(record["folder"], skin_tones, cache_dir, left, right)
        record.update(pairs=pairs, left=left, right=right, skin_tones=skin_tones, packages=specs)
    return {"pairs": pairs, "seconds": time.perf_counter() - start}


def _build(
    out: Path, skin_tones: bool, cache_dir: str | Path | None, left: Designer, right: Designer
) -> tuple[int, list[str]]:
    """Build the set into ``out``: how many pairs, and the npm packages used."""
    cache = Path(cache_dir) if cache_dir else user_cache_dir() / "npm"
    designers = {"left": left, "right": right}
    # emoji-datasource's catalogue (in either of its packages) names every emoji.
    catalogue_owner = left if left != "fluent" else right
    specs = sorted({PACKAGES[catalogue_owner], *(PACKAGES[d] for d in designers.values())})
    tarballs = dict(zip(specs, npm_pack(specs, cache), strict=True))

    rows: dict[str, dict[str, str]] = {}
    codes: dict[str, str] = {}
    for entry in _read_catalogue(tarballs[PACKAGES[catalogue_owner]]):
        variants = [entry]
        if skin_tones:
            variants += list(entry.get("skin_variations", {}).values())
        for variant in variants:
            drawn = (d == "fluent" or variant.get(f"has_img_{d}") for d in designers.values())
            if all(drawn):
                codes[variant["image"]] = variant["unified"]
                rows[variant["image"]] = {
                    "name": Path(variant["image"]).stem,
                    "group": emoji_group(variant["unified"]),
                    "description": (entry.get("name") or entry.get("short_name") or "").lower(),
                    "category": entry.get("category") or "",
                }

    written = {}
    for side, designer in designers.items():
        (out / side).mkdir(parents=True, exist_ok=True)
        tarball = tarballs[PACKAGES[designer]]
        if designer == "fluent":
            written[side] = _render_fluent(tarball, out / side, codes)
        else:
            written[side] = _extract(tarball, designer, out / side, codes)
    complete = sorted(set(written["left"]) & set(written["right"]))
    for side, other in (("left", "right"), ("right", "left")):
        for name in set(written[side]) - set(written[other]):
            written[side][name].unlink()
    columns = ["name", "group", "description", "category"]
    write_pairs_csv(out / "pairs.csv", (rows[name] for name in complete), columns)
    notice = ATTRIBUTION.format(
        left=CREDITS[left],
        right=CREDITS[right],
        packages=", ".join(specs),
        pairs=len(complete),
        size=IMAGE_SIZE,
    )
    (out / "NOTICE.md").write_text(notice, encoding="utf-8")
    return len(complete), specs
