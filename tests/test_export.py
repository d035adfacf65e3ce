"""``lightning-siamese export``: ONNX and torch.export files that match the PyTorch network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import pattern_image
from lightning_siamese.applications import export
from lightning_siamese.applications.export_check import max_difference
from lightning_siamese.applications.export_format import default_output, sidecar_path
from lightning_siamese.applications.inference import load_model
from lightning_siamese.cli.main import main
from lightning_siamese.data.images import load_image

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model(trained_run: tuple[Path, Path, Path]) -> Any:
    return load_model(trained_run[2], device="cpu")


def real_images(model: Any, folder: Path, count: int) -> torch.Tensor:
    """``count`` images of the pair folder, preprocessed as the model expects."""
    paths = sorted(folder.glob("*"))[:count]
    assert len(paths) == count
    transform = model.transform()
    return torch.stack([transform(load_image(path)) for path in paths])


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> np.ndarray:
    """Run the file without the package's helpers: ONNX Runtime or ``torch.export.load``."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"]
        assert [o.name for o in session.get_outputs()] == ["embeddings"]
        return session.run(["embeddings"], {"images": images.numpy()})[0]
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(images).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_matches_pytorch(
    fmt: str,
    trained_run: tuple[Path, Path, Path],
    model: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pairs, _, ckpt = trained_run
    out = tmp_path / f"net.{fmt}"
    args = ["--ckpt", str(ckpt), "--format", fmt, "--out", str(out)]
    code = main(["export", *args, "--check", str(pairs / "left")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert out.is_file()
    assert f"8 image(s) from {pairs / 'left'}" in printed.out
    assert "max |" in printed.out
    assert "MB" in printed.out
    assert "pixels / 255" in printed.out

    # Dynamic batch: the file runs on 1 and on 3 real images, as model.net does.
    images = real_images(model, pairs / "right", 3)
    for batch in (images[:1], images):
        with torch.no_grad():
            expected = model.net(batch).numpy()
        actual = run_exported(out, fmt, batch)
        assert actual.shape == (len(batch), model.hparams.embedding_dim)
        assert np.abs(actual - expected).max() <= TOLERANCE

    info = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert sidecar_path(out) == tmp_path / f"net.{fmt}.json"
    assert info["format"] == fmt
    assert info["input"] == {
        "name": "images",
        "shape": ["batch", 3, 32, 32],
        "dtype": "float32",
        "layout": "NCHW",
        "channel_order": "RGB",
    }
    assert info["output"]["name"] == "embeddings"
    assert info["output"]["dim"] == model.hparams.embedding_dim
    assert info["output"]["l2_normalized"] is bool(model.hparams.normalize)
    pre = info["preprocessing"]
    assert pre["image_size"] == model.hparams.image_size == 32
    # The backbone's own normalisation, from timm's config of the tiny test model.
    cfg = timm.get_pretrained_cfg("test_resnet")
    assert pre["mean"] == pytest.approx(cfg.mean) and pre["std"] == pytest.approx(cfg.std)
    assert pre["resize"] == "bilinear, antialiased, square, aspect ratio not kept"
    assert pre["scale"] == "pixels / 255"
    assert pre["channel_order"] == "RGB"
    assert pre["layout"] == "NCHW"
    assert info["similarity"] == "cosine"
    assert info["backbone"] == "timm/test_resnet"
    assert info["checkpoint"] == str(ckpt.resolve())
    assert info["torch_version"] == torch.__version__
    assert info["check"]["passed"] is True
    assert info["check"]["max_abs_difference"] <= TOLERANCE


def test_sidecar_preprocessing_reproduces_the_transform(model: Any) -> None:
    """The documented steps, done with PIL and numpy only, give the model's input."""
    pre = export.preprocessing_info(model)
    picture = pattern_image(7, size=50)
    size = pre["image_size"]
    resized = np.asarray(picture.resize((size, size), Image.BILINEAR), dtype=np.float32)
    manual = (resized / 255 - np.array(pre["mean"])) / np.array(pre["std"])
    manual = manual.transpose(2, 0, 1)
    expected = model.transform()(picture).numpy()
    # PIL and torchvision round the resized pixels apart by at most one grey level.
    assert np.abs(manual - expected).max() <= 1.5 / 255 / min(pre["std"])


def test_default_output_next_to_checkpoint_without_check(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "best.ckpt"
    shutil.copy(trained_run[2], ckpt)
    assert main(["export", "--ckpt", str(ckpt), "--format", "pt2", "--no-check"]) == 0
    assert (tmp_path / "best.pt2").is_file()
    info = json.loads((tmp_path / "best.pt2.json").read_text(encoding="utf-8"))
    assert "check" not in info
    assert "check:" not in capsys.readouterr().out
    assert default_output(ckpt, "onnx") == tmp_path / "best.onnx"


def test_check_says_what_it_ran_on(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs, _, ckpt = trained_run
    args = ["export", "--ckpt", str(ckpt), "--format", "pt2", "--out", str(tmp_path / "n")]
    assert main(args) == 0
    assert "random inputs" in capsys.readouterr().out
    image = sorted((pairs / "right").glob("*.png"))[0]
    assert main([*args, "--check", str(image)]) == 0
    assert f"1 image(s) from {image}" in capsys.readouterr().out


def test_check_failure_returns_1(
    trained_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = export.load_exported

    def drifting(path: Path, fmt: str):
        run = real(path, fmt)
        return lambda images: run(images) + 1e-3

    monkeypatch.setattr(export, "load_exported", drifting)
    out = tmp_path / "net.pt2"
    args = ["export", "--ckpt", str(trained_run[2]), "--format", "pt2"]
    assert main([*args, "--out", str(out)]) == 1
    assert "differs from PyTorch" in capsys.readouterr().err
    info = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert info["check"]["passed"] is False


@pytest.mark.parametrize("content", [b"# not a checkpoint\n", b"", None])
def test_not_a_checkpoint(
    content: bytes | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    code = main(["export", "--ckpt", str(path), "--format", "onnx", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ")
    assert "checkpoint" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_torch_file_that_is_not_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert main(["export", "--ckpt", str(path), "--format", "pt2"]) == 2
    assert "not a Lightning checkpoint of a SiameseModel" in capsys.readouterr().err


def test_unknown_format_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt, message in [("tflite", "choose one of onnx, pt2"), ("torchscript", "use pt2")]:
        with pytest.raises(SystemExit) as error:
            main(["export", "--ckpt", str(tmp_path / "a.ckpt"), "--format", fmt])
        assert error.value.code == 2
        assert message in capsys.readouterr().err


def test_check_path_without_images(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    for check in (tmp_path / "empty", tmp_path / "missing"):
        args = ["export", "--ckpt", str(trained_run[2]), "--format", "pt2"]
        assert main([*args, "--out", str(tmp_path / "x.pt"), "--check", str(check)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: --check ") and str(check) in error
    assert not (tmp_path / "x.pt").exists()


def test_missing_onnx_packages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "_installed", lambda module: module != "onnxruntime")
    args = ["export", "--ckpt", str(tmp_path / "a.ckpt"), "--format", "onnx"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err
    assert "pip install 'lightning-siamese[export]'" in err
    # Without the check, ONNX Runtime is not needed.
    assert export.missing_modules("onnx", check=False) == []
    assert export.missing_modules("pt2", check=True) == []


@pytest.fixture
def dynamo_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's ONNX exporter fails."""

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated torch.export failure")

    monkeypatch.setattr(torch.onnx, "export", failing)


def test_max_difference() -> None:
    assert max_difference(torch.zeros(2, 3), np.full((2, 3), 0.5)) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        max_difference(torch.zeros(2, 3), torch.zeros(3, 2))


@pytest.mark.usefixtures("dynamo_fails")
def test_a_failed_export_ends_with_one_line(
    trained_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["export", "--ckpt", str(trained_run[2]), "--format", "onnx", "--no-check"]
    assert main([*args, "--out", str(tmp_path / "net.onnx")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ONNX export failed (RuntimeError: simulated torch.export")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated export failure")

    monkeypatch.setattr(torch.export, "export", broken)
    args = ["export", "--ckpt", str(trained_run[2]), "--format", "pt2"]
    assert main([*args, "--out", str(tmp_path / "net.pt2")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: torch.export failed: RuntimeError: simulated export failure"
    assert not (tmp_path / "net.pt2").exists()


def test_check_images_skip_unreadable_files(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs, _, checkpoint = trained_run
    folder = tmp_path / "check"
    folder.mkdir()
    (folder / "a-broken.png").write_text("not an image")
    shutil.copy(sorted((pairs / "right").glob("*.png"))[0], folder / "b-good.png")
    out = tmp_path / "net.pt2"
    args = ["export", "--ckpt", str(checkpoint), "--format", "pt2", "--out", str(out)]
    assert main([*args, "--check", str(folder)]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {folder / 'a-broken.png'}: unreadable" in captured.err
    assert f"1 image(s) from {folder}" in captured.out
    check = json.loads(sidecar_path(out).read_text(encoding="utf-8"))["check"]
    assert [item["path"] for item in check["skipped"]] == [str(folder / "a-broken.png")]
    (folder / "b-good.png").unlink()
    assert main([*args, "--check", str(folder)]) == 2
    assert "no readable image to check with" in capsys.readouterr().err
