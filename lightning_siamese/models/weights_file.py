"""A weights file read and checked whole before anything is loaded: its format told by its
first bytes, a training checkpoint's wrapper taken off (a checkpoint of this package gives its
backbone), every tensor finite, its keys and shapes the backbone's but for the classifier. Each
problem is a :class:`~lightning_siamese.errors.WeightsFileError` naming the file. Pure torch."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from lightning_siamese.errors import WeightsFileError

#: Where the backbone's tensors sit in the state dict of this package's checkpoints.
BACKBONE_PREFIX = "net.backbone."
#: Keys of a training checkpoint whose value is the model's state dict (timm's, DINO's, ...).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
#: How many tensors an error names of each kind.
SHOWN = 5
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"  # the older torch.save format: a pickle (protocol 2)
# What torch.load raises on a damaged or foreign file (the zip reader's RuntimeError, the
# unpickler's many errors); only the torch.load call is guarded.
_TORCH_READ_ERRORS = (
    RuntimeError, EOFError, pickle.UnpicklingError, KeyError, IndexError, ValueError, TypeError
)  # fmt: skip


def read_file(path: Path) -> Any:
    """What a torch file (``torch.load``, ``weights_only``) or a safetensors file holds, the
    format told by the file's first bytes; a :class:`WeightsFileError` for a missing, empty,
    truncated or foreign file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(64)
    except OSError as error:
        raise WeightsFileError(f"{path}: cannot read the weights file ({error})") from error
    if size == 0:
        raise WeightsFileError(f"{path}: the weights file is empty")
    if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        try:  # from an open file: torch.load would take a path named .safetensors for one
            with path.open("rb") as file:
                return torch.load(file, map_location="cpu", weights_only=True)
        except _TORCH_READ_ERRORS as error:
            raise WeightsFileError(_torch_read_problem(path, error)) from error
    if _is_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(path)
        except SafetensorError as error:
            raise WeightsFileError(
                f"{path}: cannot be read as a safetensors file ({error}): truncated or damaged"
            ) from error
    raise WeightsFileError(
        f"{path}: not a torch (.pth/.pt) or safetensors weights file ({_describe(head)})"
    )


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file's start: its JSON header's length (8 bytes, little-endian, under
    safetensors' 100 MB limit; text has a larger number there), then the header's ``{``."""
    return len(head) > 8 and int.from_bytes(head[:8], "little") < 10**8 and head[8:9] == b"{"


def _torch_read_problem(path: Path, error: Exception) -> str:
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" such as {found.group(1)}" if found else ""
        return (
            f"{path}: holds pickled Python objects{what}, not only tensors, and these are not "
            "loaded (unpickling them can run code); save the model's state_dict() instead"
        )
    first = text.strip().split(". ")[0].splitlines()[0] if text.strip() else ""
    detail = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return (
        f"{path}: cannot be read as a torch file ({detail}): truncated, damaged, or not "
        "written by torch.save"
    )


def _describe(head: bytes) -> str:
    """What the first bytes of a file that is no weights file look like."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if not all(char.isprintable() or char.isspace() for char in text):
        return f"it starts with the bytes {head[:8]!r}"
    if text.startswith("version https://git-lfs"):
        return "it is a Git LFS pointer, not the file: fetch it with git lfs pull"
    if text.lstrip().startswith("<"):
        return "it is HTML: a web page saved in place of the file?"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"it is text: {first!r}"


def state_dict_of(path: Path, content: Any) -> dict[str, torch.Tensor]:
    """``content`` as a state dict of tensors, a training checkpoint's wrapper taken off; of a
    checkpoint of this package (``fit``, ``wise-ft``), the backbone's tensors."""
    while isinstance(content, dict) and not all(
        isinstance(v, torch.Tensor) for v in content.values()
    ):
        key = next((k for k in WRAPPER_KEYS if isinstance(content.get(k), dict)), None)
        if key is None:
            break
        content = content[key]
    if isinstance(content, torch.Tensor):
        raise WeightsFileError(
            f"{path}: holds a single tensor of shape {tuple(content.shape)}, not a state dict "
            "(a dict of parameter names to tensors, as model.state_dict() gives)"
        )
    if not isinstance(content, dict):
        raise WeightsFileError(
            f"{path}: holds a {type(content).__name__}, not a state dict (a dict of parameter "
            "names to tensors, as model.state_dict() gives)"
        )
    if not content:
        raise WeightsFileError(f"{path}: holds an empty state dict: no tensors")
    others = [
        f"{key!r} ({type(value).__name__})"
        for key, value in content.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if others:
        raise WeightsFileError(
            f"{path}: not a state dict of tensors: {len(others)} of its {len(content)} entries "
            f"{'is not a tensor' if len(others) == 1 else 'are not tensors'}: {_few(others)}"
        )
    if any(key.startswith(BACKBONE_PREFIX) for key in content):
        content = {
            key.removeprefix(BACKBONE_PREFIX): value
            for key, value in content.items()
            if key.startswith(BACKBONE_PREFIX)
        }
    return cast(dict[str, torch.Tensor], content)


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors of ``state`` that hold NaN or Inf, in order."""
    return [
        key
        for key, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
        and (tensor.is_floating_point() or tensor.is_complex())
        and not bool(torch.isfinite(tensor).all())
    ]


def check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    bad = []
    for key in nonfinite_tensors(state):
        counts = {
            "NaN": int(torch.isnan(state[key]).sum()),
            "infinite": int(torch.isinf(state[key]).sum()),
        }
        bad.append(f"{key} ({', '.join(f'{n} {kind}' for kind, n in counts.items() if n)})")
    if bad:
        raise WeightsFileError(
            f"{path}: {len(bad)} of its {len(state)} tensors "
            f"{'holds' if len(bad) == 1 else 'hold'} values that are not finite: "
            f"{_few(bad)}; the file is damaged or was saved from a run that diverged"
        )


def fitted(
    path: Path,
    backbone: str,
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    classifier: Sequence[str],
) -> dict[str, torch.Tensor]:
    """``state`` without its classifier, once its keys and shapes are exactly ``target``'s (a
    BatchNorm counter the file lacks is the model's own)."""

    def is_classifier(key: str) -> bool:
        return any(key == name or key.startswith(f"{name}.") for name in classifier)

    missing = [k for k in target if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in target and not is_classifier(k)]
    reshaped = [
        f"{key} {tuple(state[key].shape)} in the file, {tuple(tensor.shape)} here"
        for key, tensor in target.items()
        if key in state and state[key].shape != tensor.shape
    ]
    if missing or unexpected or reshaped:
        problems = []
        if missing:
            problems.append(f"it lacks {_count(missing)} of {backbone} ({_few(missing)})")
        if unexpected:
            problems.append(f"it has {_count(unexpected)} {backbone} has not "
                            f"({_few(unexpected)})")  # fmt: skip
        if reshaped:
            problems.append(f"{_count(reshaped)} of another shape ({_few(reshaped, '; ')})")
        raise WeightsFileError(
            f"{path} is not a {backbone} state dict: {'; '.join(problems)}. Only the classifier "
            f"({', '.join(classifier)}) may differ or be absent: pass weights of {backbone}'s "
            "architecture" + _prefix_hint(backbone, state, target)
        )
    return {key: state.get(key, tensor) for key, tensor in target.items()}


def _prefix_hint(
    backbone: str, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> str:
    """A hint when the file's names are the model's behind a prefix (a whole model's state
    dict, ``net.backbone.``, ``module.``): most of the model's tensors found under it."""
    first = next(iter(target))
    for key in state:
        prefix = key[: -len(first)]
        if key.endswith(first) and prefix.endswith("."):
            found = sum(f"{prefix}{name}" in state for name in target)
            if 2 * found > len(target):
                return (
                    f"; {found} of its tensors are {backbone}'s behind the prefix {prefix!r}: "
                    f"the state dict of a whole model? save its {prefix}state_dict() instead"
                )
    return ""


def _count(items: Sequence[str]) -> str:
    return f"{len(items)} tensor{'' if len(items) == 1 else 's'}"


def _few(items: Sequence[str], separator: str = ", ") -> str:
    """The first few ``items`` and how many more."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return separator.join(items[:SHOWN]) + more
