"""WiSE-FT: the fine-tuned backbone's weights interpolated with its pretrained ones. Pure torch.

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): a weight-space mix
``(1 - alpha) * pretrained + alpha * fine-tuned`` keeps much of the pretrained model's quality on
data unlike the fine-tuning set, at a small cost on data like it. Here the mix is over the
backbone (its frozen units are equal in both anyway, BatchNorm statistics included); the head,
which has no pretrained counterpart, stays as trained. ``lightning-siamese wise-ft`` writes the
mixed model as a checkpoint that every command loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_siamese.errors import CheckpointError, ConfigError, OutputExistsError
from lightning_siamese.files import atomic_write
from lightning_siamese.models import backbones
from lightning_siamese.models.weights_file import BACKBONE_PREFIX
from lightning_siamese.outputs import claim_file


def pretrained_state(hparams: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's pretrained tensors, for a model built with these hyper-parameters."""
    if hparams["weights"] == "none":
        raise ConfigError("WiSE-FT mixes with pretrained weights; this model started from none")
    backbone = backbones.create(hparams["backbone"], hparams["weights"], hparams["image_size"])
    return backbone.state_dict()


def check_alpha(alpha: float) -> None:
    """A :class:`ConfigError` unless ``0 <= alpha <= 1``."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the WiSE-FT alpha must be in [0, 1], got {alpha}")


@torch.no_grad()
def interpolate(
    tuned: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor], alpha: float
) -> int:
    """Mix the floating-point tensors of ``tuned`` in place with those of the same name in
    ``pretrained``: ``lerp(pretrained, tuned, alpha)``; returns how many changed.

    BatchNorm running statistics are mixed like the weights: an approximation (the statistics
    of the mixed network's activations are not the mix of the two), as in WiSE-FT's own code.
    """
    check_alpha(alpha)
    changed = 0
    for key, tensor in tuned.items():
        start = pretrained.get(key)
        if start is None or not tensor.is_floating_point() or torch.equal(start, tensor):
            continue
        if start.shape != tensor.shape:
            raise ConfigError(f"WiSE-FT: {key} is {tuple(tensor.shape)} here, "
                              f"{tuple(start.shape)} in the pretrained weights")  # fmt: skip
        tensor.copy_(torch.lerp(start.to(tensor), tensor, alpha))
        changed += 1
    return changed


def interpolate_backbone(net: nn.Module, hparams: dict[str, Any], alpha: float) -> int:
    """WiSE-FT on an :class:`~lightning_siamese.models.embedding.EmbeddingNet` in place (its
    state dict's tensors share the parameters' storage)."""
    tuned = net.get_submodule("backbone").state_dict()
    return interpolate(tuned, pretrained_state(hparams), alpha)


def written_here(path: Path) -> bool:
    """Whether ``path`` is a checkpoint that :func:`mix_checkpoint` wrote (its ``wise_ft``
    record), which a later mix may replace."""
    content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return isinstance(content, dict) and "wise_ft" in content


def claim_output(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """``out``, free to be written: not the checkpoint it is mixed from, and missing or an
    earlier mix (:func:`written_here`), unless ``force``.

    Raises:
        OutputExistsError: ``out`` is ``checkpoint``, or a file that is not an earlier mix.
    """
    out = Path(out)
    if out.exists() and Path(checkpoint).exists() and out.samefile(checkpoint) and not force:
        raise OutputExistsError(
            f"--out {out} is the checkpoint being mixed: the trained checkpoint would be "
            "replaced by the mixed one. Leave --out out (the default is "
            "<run>/wise-ft/<name>-alpha<alpha>.ckpt), choose another path, or pass --force"
        )
    return claim_file(out, "the mixed checkpoint", force, written_here)


def mix_checkpoint(
    checkpoint: str | Path, alpha: float, out: str | Path, force: bool = False
) -> dict[str, Any]:
    """Write ``out``: ``checkpoint`` with its backbone mixed with the pretrained weights.

    The optimizer and loop states are left out (the file is a model to evaluate, search or
    export, not a run to resume); ``wise_ft`` records the alpha and the source. Returns that
    record with the number of tensors mixed. ``out`` is claimed first
    (:func:`claim_output`; ``force`` replaces any file, the checkpoint itself included).
    """
    check_alpha(alpha)  # before anything is loaded or downloaded
    claim_output(checkpoint, out, force)
    source = Path(checkpoint)
    try:
        content = torch.load(source, map_location="cpu", weights_only=True)
        hparams, state = content["hyper_parameters"], content["state_dict"]
    except Exception as error:  # OSError, unpickling, truncation, another kind of file
        raise CheckpointError(
            f"{source}: not a readable checkpoint of `lightning-siamese fit` ({error})"
        ) from error
    if "wise_ft" in content:  # mixing again would mix a mix: the alpha recorded would lie
        earlier = content["wise_ft"]
        raise CheckpointError(
            f"{source} is already a WiSE-FT mix (alpha {earlier.get('alpha')} of "
            f"{earlier.get('source')}): mix the fine-tuned checkpoint itself"
        )
    tuned = {
        key.removeprefix(BACKBONE_PREFIX): value
        for key, value in state.items()
        if key.startswith(BACKBONE_PREFIX)
    }
    changed = interpolate(tuned, pretrained_state(hparams), alpha)
    record = {"alpha": alpha, "source": str(source), "tensors": changed}
    kept = ("epoch", "global_step", "pytorch-lightning_version", "hyper_parameters")
    mixed = {key: content[key] for key in (*kept, "datamodule_hyper_parameters") if key in content}
    mixed.update(state_dict=state, wise_ft=record)
    with atomic_write(out) as file:
        torch.save(mixed, file)
    return record
