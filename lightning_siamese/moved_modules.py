"""The module paths of lightning-siamese 0.1, before the package was grouped into wings.

A run's saved ``config.yaml`` names classes by module path
(``lightning_siamese.checkpoints.AtomicCheckpointIO``, ``lightning_siamese.media.LogMedia``),
and scripts import from the old modules. Each old path still imports: as a module whose names
are looked up in the modules they moved to, with a :class:`MovedModuleWarning` naming the new
path of each name used, so old configs and scripts keep working and say what to change.
Pure Python; installed by ``import lightning_siamese``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

_P = "lightning_siamese"
#: Old module -> the modules its names live in now, in the order they are looked up.
MOVED: dict[str, tuple[str, ...]] = {
    f"{_P}.{old}": tuple(f"{_P}.{new}" for new in news)
    for old, news in {
        "images": ("data.images", "data.folders", "data.image_files", "files"),
        "pairs": ("data.pairs", "data.pairs_csv", "files"),
        "splits": ("data.splits",),
        "transforms": ("data.transforms",),
        "triplets": ("data.triplets", "data.negatives", "data.sampling"),
        "emoji": ("data.emoji",),
        "glyphs": ("data.glyphs",),
        "backbones": ("models.backbones", "models.weights"),
        "embedding": ("models.embedding", "models.pooling"),
        "losses": ("models.losses", "models.distances"),
        "wise_ft": ("models.wise_ft",),
        "frozen_graph": ("models.frozen_graph",),
        "ann_index": ("retrieval.ann_index", "retrieval.index_settings"),
        "metrics": ("retrieval.metrics",),
        "report": ("retrieval.report", "retrieval.plots"),
        "viz": ("retrieval.plots",),
        "model": ("training.model",),
        "feature_cache": ("training.feature_cache",),
        "random_state": ("training.random_state",),
        "checkpoints": ("training.checkpoints", "training.checkpoint_files"),
        "callbacks": ("training.prediction_writer",),
        "media": ("training.media",),
        "inference": ("applications.inference",),
        "gallery": ("applications.gallery",),
        "search": ("applications.search",),
        "evaluate": ("applications.evaluate",),
        "export": ("applications.export", "applications.export_format"),
        "export_check": ("applications.export_check", "applications.export_format"),
        "lightning_cli": ("cli.lightning_cli", "cli.run_config"),
        "commands": ("cli.registry",),
        "commands.data": ("cli.data_command",),
        "commands.evaluate": ("cli.evaluate_command",),
        "commands.search": ("cli.search_command",),
        "commands.export": ("cli.export_command",),
        "commands.wise_ft": ("cli.wise_ft_command",),
    }.items()
}


class MovedModuleWarning(FutureWarning):
    """A name was used by its lightning-siamese 0.1 module path; the message gives the new one."""


def find_moved(old: str, name: str, targets: Sequence[str]) -> tuple[str, Any]:
    """``(new module, value)`` of ``name``, looked up in ``targets``; an ``AttributeError``
    that names them when none has it."""
    for target in targets:
        module = importlib.import_module(target)
        if hasattr(module, name):
            value = getattr(module, name)
            home = getattr(value, "__module__", None)  # where a class or function is defined
            return (home if isinstance(home, str) and home.startswith(f"{_P}.") else target), value
    raise AttributeError(
        f"{old} has no {name!r}: {old} moved to {', '.join(targets)}, none of which has it (it "
        "was removed or renamed in 0.2: docs/architecture.md lists every module)"
    )


def moved_name(old: str, name: str, targets: Sequence[str]) -> Any:
    """``old.name``, found in ``targets``, with a :class:`MovedModuleWarning` that names its
    new path (an ``AttributeError`` naming ``targets`` when none has it)."""
    if name.startswith("__"):
        raise AttributeError(name)
    target, value = find_moved(old, name, targets)
    warnings.warn(
        f"{old}.{name} is now {target}.{name}: {old} was the module's path before "
        "lightning-siamese 0.2; update the config or import that names it",
        MovedModuleWarning,
        stacklevel=3,
    )
    return value


class MovedModule(types.ModuleType):
    """An old module path: each name used is looked up where it moved, with a warning."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Moved to {', '.join(targets)}.")
        self.__moved_to__ = tuple(targets)

    def __getattr__(self, name: str) -> Any:
        return moved_name(self.__name__, name, self.__moved_to__)


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` (after every real module: a module of that name,
    were one to come back, wins)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = MovedModule(spec.name, MOVED[spec.name])
        if any(old.startswith(f"{spec.name}.") for old in MOVED):  # commands.data, ...
            module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module looks its names up as they are used."""


def install() -> None:
    """Put :class:`MovedModuleFinder` at the end of ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
