"""WiSE-FT: ``lightning-siamese wise-ft`` mixes a trained backbone with its pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_args, write_pairs
from lightning_siamese.applications.inference import embed_paths, load_model
from lightning_siamese.cli.main import main


def test_wise_ft_mixes_the_trained_units_with_the_pretrained_file(tmp_path: Path) -> None:
    """A run that started from a state-dict file, mixed at alpha 0.25: every trained backbone
    tensor is 0.75 file + 0.25 trained, the frozen ones and the head are as trained, and the
    file loads in evaluate and embeds like a model holding those tensors."""
    import timm

    start = timm.create_model("test_resnet", num_classes=0).state_dict()
    weights = tmp_path / "start.pth"
    torch.save(start, weights)
    root, run = tmp_path / "pairs", tmp_path / "run"
    write_pairs(root, 24)
    args = [*tiny_args(root, run), f"--model.weights={weights}", "--model.freeze=layer3.0",
            "--model.loss=infonce"]  # fmt: skip
    assert main(["fit", *args, "--trainer.max_epochs=1", "--trainer.logger=false"]) == 0
    trained = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "mixed.ckpt"
    assert main(["wise-ft", "--ckpt", str(trained), "--alpha", "0.25", "--out", str(out)]) == 0

    before = torch.load(trained, weights_only=True)["state_dict"]
    mixed_file = torch.load(out, weights_only=True)
    after = mixed_file["state_dict"]
    assert mixed_file["wise_ft"]["alpha"] == 0.25 and "optimizer_states" not in mixed_file
    moved = 0
    for key, value in after.items():
        name = key.removeprefix("net.backbone.")
        if key.startswith("net.backbone.layer4") and value.is_floating_point():
            expected = 0.75 * start[name] + 0.25 * before[key]
            torch.testing.assert_close(value, expected)
            moved += not torch.equal(value, before[key])
        else:  # frozen units, counters, the head: untouched
            assert torch.equal(value, before[key]), key
    assert moved >= 5  # layer4 did train

    model = load_model(out, "cpu")
    files = sorted((root / "left").iterdir())[:4]
    reference = load_model(trained, "cpu")
    reference.load_state_dict(after)
    torch.testing.assert_close(embed_paths(model, files), embed_paths(reference, files))
    assert (
        main(["evaluate", "--ckpt", str(out), "--root", str(root), "--out", str(tmp_path / "e")])
        == 0
    )
    # By default the file goes beside the run's checkpoints, not among them.
    assert main(["wise-ft", "--ckpt", str(trained), "--alpha", "0.5"]) == 0
    assert (run / "wise-ft" / "last-alpha0.5.ckpt").is_file()
    assert not [p for p in (run / "checkpoints").iterdir() if "alpha" in p.name]
    # A checkpoint holds every tensor: it loads without the file it started from.
    weights.unlink()
    assert torch.equal(load_model(trained, "cpu").state_dict()[key], before[key])


def test_wise_ft_refuses_random_starts_and_bad_alphas(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, checkpoint = trained_run  # trained from weights: none
    assert main(["wise-ft", "--ckpt", str(checkpoint), "--alpha", "0.5"]) == 2
    assert "started from none" in capsys.readouterr().err
    assert main(["wise-ft", "--ckpt", str(tmp_path / "missing.ckpt"), "--alpha", "0.5"]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert main(["wise-ft", "--ckpt", str(tmp_path / "junk.ckpt"), "--alpha", "0.5"]) == 2
    assert "junk.ckpt" in capsys.readouterr().err
    assert main(["wise-ft", "--ckpt", str(checkpoint), "--alpha", "2"]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    from lightning_siamese.models.wise_ft import interpolate

    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate({}, {}, 1.5)
