"""Out-of-sample checks: do trained demo models beat frozen ImageNet features on look-alike
pairs unlike their training data?

    .venv/bin/python benchmarks/generalisation.py runs/demo-results/demo-seed0 [more runs]
    .venv/bin/python benchmarks/generalisation.py RUN --wise 0.5 0.75
    .venv/bin/python benchmarks/generalisation.py RUN --csls 1 10 --only glyphs

A run is a ``fit`` folder of the demo config (``benchmarks/demo_results.py`` leaves one per data
seed): its best checkpoint and its ``split.csv``. The checks, left -> right retrieval by cosine:

- ``fluent/google``, ``fluent/twitter``: Google's (or Twitter's) emoji against Microsoft's
  Fluent, a designer the model never saw, on the emoji of the run's test split (concepts it
  never trained on either); and on all of Fluent's emoji (``all``);
- ``glyphs``: one character in two fonts (matplotlib's), a kind of drawing it never saw; each
  of the 8 font pairs is its own gallery of 62 characters (a character's other fonts would be
  near-identical distractors), and recall@1 is the mean over the 8.

Printed per check: recall@1 of the frozen backbone (the same backbone with its ImageNet weights,
at its pretrained input size, global average of its last feature map, as in
``demo_results.py``), of the features the trained model's head starts from, frozen (its
``feature_unit`` pooled to its grid, at its input size: what it would be without training),
of the trained model, and of the trained model with its backbone mixed
with the pretrained one (WiSE-FT, ``--wise``); the mean over the runs at the end. The data sets
are built on first use (``data/emoji-fluent*`` need npm and cairosvg).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_siamese.applications.inference import embed_paths, load_model  # noqa: E402
from lightning_siamese.data.image_files import ImageFilesDataset  # noqa: E402
from lightning_siamese.data.pairs import Pair, discover_pairs  # noqa: E402
from lightning_siamese.data.splits import read_split  # noqa: E402
from lightning_siamese.data.transforms import eval_transform  # noqa: E402
from lightning_siamese.models.backbones import input_size, normalization  # noqa: E402
from lightning_siamese.models.embedding import EmbeddingNet  # noqa: E402
from lightning_siamese.models.pooling import GridPool  # noqa: E402
from lightning_siamese.models.wise_ft import interpolate_backbone  # noqa: E402
from lightning_siamese.retrieval.ranks import rank_metrics, retrieval_ranks  # noqa: E402
from lightning_siamese.retrieval.reranking import gallery_offset  # noqa: E402

DATA = REPO / "data"


def build_sets(only: list[str] | None = None) -> dict[str, Path]:
    """The check folders (``only`` these), built where missing."""
    from lightning_siamese.data.emoji import build_emoji
    from lightning_siamese.data.glyphs import build_glyphs

    folders = {
        "fluent/google": DATA / "emoji-fluent",
        "fluent/twitter": DATA / "emoji-twitter-fluent",
        "glyphs": DATA / "glyphs",
    }
    folders = {name: path for name, path in folders.items() if not only or name in only}
    for name, folder in folders.items():
        if (folder / "left").is_dir():
            continue
        if name == "glyphs":
            build_glyphs(folder)
        else:
            build_emoji(folder, left=name.split("/")[1], right="fluent")
    return folders


def recall_at_1(embeddings: torch.Tensor, csls: int | None = None) -> float:
    """Left -> right recall@1 of interleaved (left, right) embeddings, by cosine (re-ranked by
    CSLS with k = ``csls``)."""
    left, right = embeddings[0::2], embeddings[1::2]
    offset = gallery_offset("csls", left, right, min(csls, len(left))) if csls else None
    return float(rank_metrics(retrieval_ranks(left, right, 1024, offset))["recall@1"])


@torch.inference_mode()
def frozen_embeddings(
    backbone: str, files: list[Path], hp: dict[str, Any] | None = None
) -> torch.Tensor:
    """Frozen ImageNet features: global average of the last feature map at the pretrained
    input size; with ``hp`` (a model's settings), the features that model's head starts from
    (its ``feature_unit``, pooled to its grid, at its input size), without the trained head."""
    options = {"feature_unit": hp["feature_unit"], "image_size": hp["image_size"]} if hp else {}
    weights = hp["weights"] if hp else "imagenet"  # what the run started from
    net = EmbeddingNet(backbone, weights, "all", "pooled", **options).eval()
    mean, std = normalization(backbone)
    size = hp["image_size"] if hp else input_size(backbone)
    pool = GridPool(hp["pool_size"] if hp else 1)
    loader = DataLoader(ImageFilesDataset(files, eval_transform(size, mean, std)), batch_size=64)
    return torch.cat([pool(net.to_map(net.forward_frozen(b["image"]))).flatten(1) for b in loader])


def checks(run: Path, folders: dict[str, Path]) -> dict[str, list[list[Pair]]]:
    """Each check's galleries: the run's test-split emoji, all Fluent emoji, the glyphs of
    each font pair."""
    split = read_split(run / "split.csv")
    chosen: dict[str, list[list[Pair]]] = {}
    for name, folder in folders.items():
        pairs = discover_pairs(folder).pairs
        if name.startswith("fluent/"):
            chosen[f"{name} test"] = [[p for p in pairs if split.get(p.name) == "test"]]
            chosen[f"{name} all"] = [pairs]
        else:  # glyph pair names end in -<font pair>
            fonts = sorted({p.name.rsplit("-", 1)[1] for p in pairs})
            chosen[name] = [[p for p in pairs if p.name.endswith(f"-{f}")] for f in fonts]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="fit folders of the demo config")
    parser.add_argument("--wise", type=float, nargs="*", default=[0.5], help="WiSE-FT alphas")
    parser.add_argument(
        "--csls", type=int, nargs="*", default=[], help="also the trained model re-ranked, these k"
    )
    parser.add_argument(
        "--only", nargs="*", help="these checks (fluent/google, fluent/twitter, glyphs)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    folders = build_sets(args.only)
    columns = ["frozen", "frozen, its features", "trained", *(f"wise {a:g}" for a in args.wise)]
    columns += [f"trained, CSLS k={k}" for k in args.csls]
    results: dict[str, dict[str, list[float]]] = {}
    for run in args.runs:
        (checkpoint,) = sorted((run / "checkpoints").glob("epoch*-recall1-*.ckpt"))
        model = load_model(checkpoint, "cpu")
        hp = model.hparams
        mixed = {}
        for alpha in args.wise:
            mixed[alpha] = copy.deepcopy(model)
            mixed[alpha].net.eval()
            interpolate_backbone(mixed[alpha].net, dict(hp), alpha)
        for name, galleries in checks(run, folders).items():
            pairs = [pair for gallery in galleries for pair in gallery]
            files = [path for pair in pairs for path in (pair.left, pair.right)]
            embeddings = {
                "frozen": frozen_embeddings(hp["backbone"], files),
                "frozen, its features": frozen_embeddings(hp["backbone"], files, dict(hp)),
                "trained": embed_paths(model, files),
                **{f"wise {a:g}": embed_paths(other, files) for a, other in mixed.items()},
            }
            rankings = {column: (values, None) for column, values in embeddings.items()}
            for k in args.csls:
                rankings[f"trained, CSLS k={k}"] = (embeddings["trained"], k)
            row = {}
            for column, (values, csls) in rankings.items():
                recalls, start = [], 0
                for gallery in galleries:  # the pairs' rows, gallery by gallery
                    rows = values[2 * start : 2 * (start + len(gallery))]
                    recalls.append(recall_at_1(rows, csls))
                    start += len(gallery)
                row[column] = statistics.mean(recalls)
            sizes = "+".join(str(len(g)) for g in galleries)
            print(f"{run.name} {name} ({sizes} pairs): {row}", flush=True)
            for column, value in row.items():
                results.setdefault(name, {}).setdefault(column, []).append(value)
    print(f"\nrecall@1, mean over {len(args.runs)} run(s): {', '.join(r.name for r in args.runs)}")
    print("| check | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in results.items():
        figures = " | ".join(f"{statistics.mean(row[c]):.3f}" for c in columns)
        print(f"| {name} | {figures} |")


if __name__ == "__main__":
    main()
