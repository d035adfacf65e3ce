"""The frozen-trunk feature cache: same losses and weights as without it, no image read while
training, in memory or memory-mapped, off for freshly augmented training images and holding every
view of them under fixed augmented views."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import lightning_siamese.data.triplets as triplets
from conftest import tiny_args, tiny_model, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.data.datamodule import SiameseDataModule
from lightning_siamese.training.feature_cache import FeatureCache, format_bytes


def fit(root: Path, run: Path, *extra: str) -> list[dict[str, str]]:
    args = [
        *tiny_args(root, run),
        "--model.freeze=layer3.0",
        "--model.mining=batch_hard",
        "--trainer.max_epochs=2",
        "--validate_before_fit=false",
        "--trainer.deterministic=true",
        *extra,
    ]
    assert main(["fit", *args]) == 0
    log = next(run.glob("lightning_logs/version_*/metrics.csv"))
    return list(csv.DictReader(log.open()))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


def assert_same_training(
    tmp_path: Path, plain: list[dict[str, str]], cached: list[dict[str, str]], keys: tuple[str, ...]
) -> None:
    """The logged ``keys`` and the last weights of runs ``plain`` and ``cached`` agree to 1e-5."""
    for key in keys:
        torch.testing.assert_close(
            torch.tensor(column(cached, key)), torch.tensor(column(plain, key)), rtol=0, atol=1e-5
        )
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in (tmp_path / "plain", tmp_path / "cached")
    ]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-5, msg=name)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every image file the triplet datasets open (the loaders run in this process)."""
    seen: list[Path] = []
    original = triplets.load_image

    def counting(path: str | Path):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return original(path)

    monkeypatch.setattr(triplets, "load_image", counting)
    return seen


@pytest.mark.parametrize(
    "on_disk",
    [
        pytest.param(False, marks=pytest.mark.slow, id="memory-compiled"),
        pytest.param(True, id="memmap"),
    ],
)
def test_cache_gives_the_same_training_without_reading_images(
    tmp_path: Path, reads: list[Path], on_disk: bool, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, 40)
    plain = fit(root, tmp_path / "plain")
    assert reads, "without the cache the loaders read the images"
    reads.clear()

    # In memory through a compiled graph of the trunk (slow), memory-mapped eager: both exact.
    # (auto's folded batch norms move a logged distance by ~1e-4 relative here, past the 1e-5
    # this comparison allows: tests/test_folding.py checks the folded features themselves.)
    extra = [
        "--model.cache_frozen_features=true",
        f"--model.frozen_graph={'eager' if on_disk else 'inductor'}",
    ]
    if on_disk:
        extra.append(f"--model.feature_cache_dir={tmp_path / 'features'}")
    with caplog.at_level(logging.INFO):
        cached = fit(root, tmp_path / "cached", *extra)
    assert reads == [], "with the cache the loaders send indices only"
    log = caplog.text
    split = [row["split"] for row in csv.DictReader((tmp_path / "cached" / "split.csv").open())]
    for name in ("train", "val"):  # every distinct image of the split, sized up front
        assert f"{name}: frozen-feature cache: {2 * split.count(name)} images x" in log
    assert ("memory-mapped at" in log) == on_disk
    assert ("frozen graph: inductor graph built" in log) == (not on_disk)
    if on_disk:
        assert list((tmp_path / "features").iterdir()) == [], "the mapped files are removed"

    keys = ("train/loss_step", "val/loss", "val/recall@1", "val/distance_positive")
    assert_same_training(tmp_path, plain, cached, keys)


def test_cached_views_give_the_same_training_as_reading_them(
    tmp_path: Path, reads: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Fixed augmented views, 2 per image over 3 epochs (a second cycle): the cache of every
    view trains as the loaders reading and augmenting the images do."""
    root = tmp_path / "pairs"
    write_pairs(root, 40)
    views = ["--data.augment=true", "--data.augment_views=2", "--trainer.max_epochs=3"]
    plain = fit(root, tmp_path / "plain", *views)
    assert reads, "without the cache the loaders read the images"
    reads.clear()
    cache = ["--model.cache_frozen_features=true", "--model.frozen_graph=eager"]
    with caplog.at_level(logging.INFO):
        cached = fit(root, tmp_path / "cached", *views, *cache)
    assert reads == [], "every view of every training image came from the cache"
    train = list(csv.DictReader((tmp_path / "cached" / "split.csv").open()))
    images = 2 * sum(row["split"] == "train" for row in train)
    assert (
        f"train: frozen-feature cache: 2 views of each image, {2 * images} views x" in caplog.text
    )
    assert f"train: frozen-feature cache: {2 * images} views (2 per image) in" in caplog.text
    assert len(column(plain, "train/loss_step")) >= 3
    assert_same_training(tmp_path, plain, cached, ("train/loss_step", "val/loss", "val/recall@1"))


def test_cache_is_off_for_augmented_training_images(
    tmp_path: Path, reads: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "pairs"
    write_pairs(root, 40)
    with caplog.at_level(logging.INFO):
        fit(root, tmp_path / "run", "--model.cache_frozen_features=true", "--data.augment=true")
    assert "off for training images (augmentation is on;" in caplog.text
    assert "val: frozen-feature cache" in caplog.text and "train: frozen-feature" not in caplog.text
    # auto: timm's test ResNet's frozen part runs with its batch norms folded (tests/test_folding)
    assert "batch norms folded into their convolutions" in caplog.text
    rows = list(csv.DictReader((tmp_path / "run" / "split.csv").open()))
    val = {row["name"] for row in rows if row["split"] == "val"}
    train = {row["name"] for row in rows if row["split"] == "train"}
    read = {path.stem for path in reads}
    assert read and read <= train and not read & val  # training images read, val ones cached


def test_sizes_and_memmap(tmp_path: Path) -> None:
    assert FeatureCache.size_of(10, (2048, 7, 7)) == 10 * 2048 * 49 * 4
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
    cache = FeatureCache(4, (2, 3), directory=tmp_path)
    assert cache.path is not None and cache.path.is_file()
    cache.features[1] = torch.ones(2, 3)
    assert torch.equal(cache.gather([1, 1]), torch.ones(2, 2, 3))
    assert "memory-mapped" in cache.describe() and "4 images x 2x3 float32" in cache.describe()
    path = cache.path
    cache.close()
    assert not path.exists()
    half = FeatureCache(3, (4,), dtype=torch.bfloat16, directory=tmp_path)  # bf16-mixed runs
    half.features[2] = torch.tensor([1.5, -2.0, 0.25, 3.0])
    assert half.gather([2]).dtype == torch.bfloat16
    assert half.gather([2])[0].tolist() == [1.5, -2.0, 0.25, 3.0]
    half.close()


def test_cache_follows_bf16_true_precision(
    tmp_path: Path, reads: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Under bf16-true the network is held in bfloat16: the cache's inputs are converted as
    Lightning converts every batch, and the features kept are bfloat16."""
    root = tmp_path / "pairs"
    write_pairs(root, 40)
    extra = ["--trainer.precision=bf16-true", "--model.cache_frozen_features=true"]
    with caplog.at_level(logging.INFO):
        rows = fit(root, tmp_path / "run", *extra)
    assert "train: frozen-feature cache: " in caplog.text and " bfloat16 = " in caplog.text
    assert "folded" not in caplog.text  # float32 runs only
    assert reads == []
    losses = column(rows, "train/loss_step")
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["state_dict"]["net.head.2.weight"].dtype == torch.bfloat16


def test_cache_files_and_memory_check_count_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import lightning_siamese.training.feature_cache as feature_cache
    from lightning_siamese.data.transforms import eval_transform
    from lightning_siamese.errors import CacheMemoryError

    write_pairs(tmp_path / "pairs", 4)
    paths = sorted((tmp_path / "pairs").glob("*/*"))
    frozen = torch.nn.Conv2d(3, 2, 3)  # 2 x 14 x 14 float32 per 16 px image: 1,568 bytes
    size = FeatureCache.size_of(len(paths), (2, 14, 14))
    messages: list[str] = []
    with torch.no_grad():
        one = feature_cache.build_feature_cache(
            frozen, paths, eval_transform(16), torch.device("cpu"), log=messages.append,
            directory=tmp_path / "shared", processes=3,
        )  # fmt: skip
    assert one.path is not None and one.path.name.startswith(f"features-{socket.gethostname()}")
    assert (
        f"in each of the 3 processes on this host, {format_bytes(3 * size)} in all" in (messages[0])
    )
    # Room for two copies, not three: refused, naming the whole.
    monkeypatch.setattr(feature_cache, "available_memory", lambda: int(2.5 * size / 0.8))
    with pytest.raises(CacheMemoryError, match=r"in each of the 3 processes .* in all"):
        feature_cache.build_feature_cache(
            frozen, paths, eval_transform(16), torch.device("cpu"), processes=3
        )
    with torch.no_grad():  # one process fits
        feature_cache.build_feature_cache(
            frozen, paths, eval_transform(16), torch.device("cpu"), processes=1, log=print
        ).close()
    one.close()


class FailAt(pl.Callback):
    """Fail at the second training batch (after the caches were built)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
        if batch_idx == 1:
            raise RuntimeError("stopped on purpose")


def test_the_cache_is_dropped_on_every_exit_and_later_stages_read_images(
    tmp_path: Path, reads: list[Path]
) -> None:
    """A fit that fails leaves no memory-mapped file and a data module serving images again;
    after a fit that ends, validate reads the images (the caches belong to fit alone)."""
    write_pairs(tmp_path / "pairs", 40)
    folder = tmp_path / "features"
    model = tiny_model(cache_frozen_features=True, feature_cache_dir=str(folder))
    data = SiameseDataModule(str(tmp_path / "pairs"), 32, batch_size=8, num_workers=0,
                             split_fractions=(0.6, 0.2, 0.2))  # fmt: skip
    options = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    failing = pl.Trainer(default_root_dir=tmp_path / "a", callbacks=[FailAt()], **options)
    with pytest.raises(RuntimeError, match="stopped on purpose"):
        failing.fit(model, data)
    assert list(folder.iterdir()) == [] and data._features == {}
    trainer = pl.Trainer(default_root_dir=tmp_path / "b", max_epochs=1, **options)
    trainer.fit(model, data)
    assert list(folder.iterdir()) == [] and data._features == {}
    reads.clear()
    (metrics,) = trainer.validate(model, data)
    assert reads and 0 <= metrics["val/recall@1"] <= 1
