"""What ``--ckpt_path`` names, checked before anything is built.

* The file: ``last`` resolved as Lightning resolves it (the newest ``last*.ckpt`` of the run's
  checkpoint folder), and checked; a truncated one is named with the newest loadable checkpoint
  beside it. ``best`` outside a fit (a new process has no best) is refused with the file the
  run recorded as its best.
* What it can do: resuming a ``fit`` needs the training state, which a weights-only file
  (``wise-ft``'s output) lacks.
* Whether the command line agrees with it: Lightning rebuilds the model from the checkpoint's
  hyper-parameters, so a model option given on the command line would be ignored. A setting of
  the network (:data:`NETWORK`) that contradicts the checkpoint is refused; a setting of how the
  run computes (:data:`RUNTIME`) is used as given; any other contradicting setting is named in a
  warning (the checkpoint's value is the one used).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only

from lightning_siamese.errors import CheckpointError, ConfigError
from lightning_siamese.training.checkpoint_files import check_checkpoint
from lightning_siamese.training.model import SiameseModel

#: ``--ckpt_path`` values that Lightning resolves itself (not file names): ``registry`` may
#: be followed by ``:name:version``.
KEYWORDS = ("last", "best", "hpc", "registry")
#: Model settings that decide what the network computes: refused when they contradict the
#: checkpoint's.
NETWORK = (
    "backbone",
    "head",
    "embedding_dim",
    "normalize",
    "image_size",
    "pool_size",
    "feature_unit",
)
#: Settings of how a run computes, not what: the command line's value is used.
RUNTIME = SiameseModel.RUNTIME_SETTINGS


def checkpoint_folder(config: Mapping[str, Any]) -> Path:
    """``<default_root_dir>/checkpoints``, where the CLI's checkpoints go."""
    trainer = config.get("trainer") or {}
    return Path(trainer.get("default_root_dir") or os.getcwd()) / "checkpoints"


def resolve(subcommand: str, ckpt_path: str, folder: Path) -> Path | None:
    """The checkpoint file ``--ckpt_path`` names, checked; None where Lightning resolves it
    (``hpc``, ``registry``, URLs; ``last`` with nothing there, which Lightning reports; ``best``
    inside ``fit``).

    Raises:
        CheckpointError: the file is missing or unusable (for ``last``: with the newest
            loadable checkpoint in ``folder``).
        ConfigError: ``best`` outside ``fit``.
    """
    keyword = ckpt_path.split(":")[0]  # as Lightning compares them: lower case
    if not ckpt_path.strip():
        raise ConfigError("--ckpt_path is empty: pass a checkpoint file, or last")
    if keyword == "hpc" and not list(folder.parent.glob("hpc_ckpt_*.ckpt")):
        raise CheckpointError(
            f"--ckpt_path hpc: no hpc_ckpt_*.ckpt in {folder.parent} (a SLURM requeue writes "
            "them): pass a checkpoint file, or last"
        )
    if keyword == "best" and subcommand != "fit":
        best = best_recorded(folder)
        where = (
            f"the best checkpoint this run recorded is {best}: pass --ckpt_path {best}"
            if best is not None
            else f"pass one of the checkpoints in {folder}"
        )
        raise ConfigError(
            f"--ckpt_path best means the best checkpoint of a fit in this same process; "
            f"`{subcommand}` runs in a new one, so {where}"
        )
    if keyword == "last":
        files = [path for path in folder.glob("last*.ckpt") if path.is_file()]
        candidates = sorted(files, key=lambda p: p.stat().st_mtime_ns)
        if not candidates and subcommand != "fit":
            # fit starts anew when there is none; the others would use an untrained model
            raise CheckpointError(
                f"--ckpt_path last: no last*.ckpt in {folder} (a fit with "
                "--trainer.default_root_dir here writes them): pass a checkpoint file"
            )
        if not candidates:
            return None
        try:
            check_checkpoint(candidates[-1])
        except CheckpointError as error:
            newest = newest_loadable(folder)
            hint = (
                f"the newest loadable checkpoint there is {newest}: pass --ckpt_path {newest}"
                if newest is not None
                else f"no checkpoint in {folder} loads"
            )
            raise CheckpointError(f"--ckpt_path last: {error}; {hint}") from error
        return candidates[-1]
    if keyword in KEYWORDS or "://" in ckpt_path:
        return None
    check_checkpoint(ckpt_path)
    return Path(ckpt_path)


def newest_loadable(folder: Path) -> Path | None:
    """The most recently written checkpoint in ``folder`` that loads."""
    files = [path for path in folder.glob("*.ckpt") if path.is_file()]
    for path in sorted(files, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        try:
            check_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def best_recorded(folder: Path) -> Path | None:
    """The best checkpoint the run's newest loadable checkpoint recorded (its checkpoint
    callback's ``best_model_path``), when that file is there."""
    newest = newest_loadable(folder)
    if newest is None:
        return None
    content = saved_content(newest)
    for state in (content.get("callbacks") or {}).values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and Path(best).is_file():
            return Path(best)
    return None


def saved_content(path: Path) -> dict[str, Any]:
    """The checkpoint's content, memory-mapped (its tensors are not read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def require_training_state(path: Path, content: Mapping[str, Any]) -> None:
    """A :class:`CheckpointError` unless ``content`` can resume a fit."""
    if "optimizer_states" in content and "loops" in content:
        return
    source = "written by wise-ft" if "wise_ft" in content else "weights only"
    raise CheckpointError(
        f"{path} holds a model but no training state ({source}): it cannot resume a fit. To "
        f"train from it, start a new fit from its backbone: --model.weights {path} without "
        "--ckpt_path (the head starts anew)"
    )


def model_defaults() -> dict[str, Any]:
    """The model's own defaults (its constructor's)."""
    signature = inspect.signature(SiameseModel.__init__)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def reconcile(
    given: Mapping[str, Any],
    saved: Mapping[str, Any],
    data_image_size: int | None,
    warn: Callable[[str], None],
) -> dict[str, Any]:
    """The hyper-parameters to rebuild the model with: ``saved`` (the checkpoint's), with the
    :data:`RUNTIME` settings that ``given`` (the parsed config's model) sets; settings that
    ``given`` sets to other values than the checkpoint's are refused (:data:`NETWORK`) or
    passed to ``warn``. A setting counts as given when it differs from the model's default
    (the image size: when ``data.image_size`` is set): one given at its default value cannot
    be told from one not given, and the checkpoint's value is used without a word.

    Raises:
        ConfigError: naming every network setting that contradicts the checkpoint's.
    """
    defaults = model_defaults()
    hparams = {k: v for k, v in saved.items() if k not in ("_instantiator", "_class_path")}
    refused, ignored = [], []
    for key, value in given.items():
        # (A runtime setting newer than the checkpoint still applies.)
        if key in ("optimizer", "scheduler") or (key not in saved and key not in RUNTIME):
            continue
        if key == "image_size":
            explicit = data_image_size is not None
        else:
            explicit = value != defaults.get(key)
        if not explicit or _same(value, saved.get(key)):
            continue
        if key in RUNTIME:
            hparams[key] = value
        elif key in NETWORK:
            refused.append(f"{key}={value!r} (the checkpoint's: {saved[key]!r})")
        elif key == "weights":
            ignored.append(f"weights={value!r} (the checkpoint's own tensors are used)")
        else:
            ignored.append(f"{key}={value!r} (the checkpoint's {saved[key]!r} is used)")
    if refused:
        raise ConfigError(
            "the model options contradict the checkpoint's network: "
            + "; ".join(refused)
            + ". A checkpoint's model is rebuilt from its own settings; leave these out, or "
            "fit a new model with them"
        )
    if ignored:
        warn(
            "warning: model options the checkpoint overrides: "
            + "; ".join(ignored)
            + " (a checkpoint's model is rebuilt from its own settings)"
        )
    # Callables are not saved (None): the config's optimizer and scheduler stay.
    callables = ("optimizer", "scheduler")
    return {k: v for k, v in hparams.items() if v is not None or k not in callables}


def _same(value: Any, saved: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(saved, (list, tuple)):
        return list(value) == list(saved)
    return bool(value == saved)


@rank_zero_only
def print_warning(text: str) -> None:
    """``text`` on standard error, from the first process only."""
    print(text, file=sys.stderr)
