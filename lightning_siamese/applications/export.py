"""``lightning-siamese export``: the embedding network as ONNX or a ``torch.export`` program.

Only the embedding network (``model.net``, in eval mode) is exported: a float32 batch of
preprocessed images (B, 3, S, S) in, embeddings (B, D) out, with a dynamic batch dimension. Both
formats go through ``torch.export`` (the ONNX file through torch's exporter built on it, the
one torch recommends). The preprocessing stays outside the file and is written down in a JSON
sidecar (``<out>.json``), so the file can be used without this package. After exporting, the
file is run on real (``--check DIR_OR_IMAGE``) or random images and compared with the PyTorch
network. The sidecar holds the file's digest: a re-export replaces a file only while it is
the one exported, and a sidecar never describes another file (:mod:`.export_files`).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lightning_siamese.applications.export_check import (
    check_inputs,
    compare,
    example_inputs,
    load_exported,
)
from lightning_siamese.applications.export_files import claim_outputs, move_into_place
from lightning_siamese.applications.export_format import (
    FORMATS,
    INPUT_NAME,
    INSTALL_HINT,
    OUTPUT_NAME,
    RESIZE,
    SCALE,
    TOLERANCE,
    default_output,
)
from lightning_siamese.applications.inference import load_model
from lightning_siamese.errors import ExportError
from lightning_siamese.files import (
    LOCK_FILE,
    PARTIAL_SUFFIX,
    content_digest,
    hold,
    remove_stale_partials,
)
from lightning_siamese.models.backbones import normalization
from lightning_siamese.training.model import SiameseModel

#: Modules the ONNX export (``onnx``, ``onnxscript``) and its check (``onnxruntime``) need.
ONNX_MODULES = ("onnx", "onnxscript")
ONNX_CHECK_MODULES = ("onnxruntime",)
#: Above this many bytes of weights, ONNX weights go to an external ``<out>.data`` file (the
#: protobuf limit of one file is 2 GiB).
ONNX_INLINE_LIMIT = 1_800_000_000


def missing_modules(fmt: str, check: bool) -> list[str]:
    """The optional modules the format (and its check) needs that are not installed."""
    if fmt != "onnx":
        return []
    needed = ONNX_MODULES + (ONNX_CHECK_MODULES if check else ())
    return [name for name in needed if not _installed(name)]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def preprocessing_info(model: SiameseModel) -> dict[str, Any]:
    """How to turn an image file into the network's input, without this package."""
    size = int(model.hparams["image_size"])
    mean, std = normalization(model.hparams["backbone"])
    return {
        "image_size": size,
        "color": "RGB, 8 bits per channel (EXIF orientation applied, transparency on white)",
        "channel_order": "RGB",
        "resize": RESIZE,
        "resize_to": [size, size],
        "resize_note": (
            "torchvision v2.Resize((S, S), antialias=True) on the uint8 image; PIL's "
            "image.resize((S, S), Image.BILINEAR) gives the same pixels within 1 grey level"
        ),
        "scale": SCALE,
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
        "formula": "(resize(rgb_uint8) / 255 - mean[c]) / std[c], per channel c",
        "layout": "NCHW",
        "dtype": "float32",
    }


def describe(
    model: SiameseModel, fmt: str, out: Path, checkpoint: str | Path, exporter: str
) -> dict[str, Any]:
    """The sidecar's content: input, output, preprocessing and provenance of an exported file."""
    size = int(model.hparams["image_size"])
    dim = int(model.hparams["embedding_dim"])
    normalized = bool(model.hparams["normalize"])
    return {
        "format": fmt,
        "file": out.name,
        "exporter": exporter,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "channel_order": "RGB",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", dim],
            "dim": dim,
            "dtype": "float32",
            "l2_normalized": normalized,
        },
        "preprocessing": preprocessing_info(model),
        "similarity": "cosine",
        "similarity_note": (
            "cosine similarity of two embeddings; higher is more alike"
            + (" (a dot product, as the embeddings are L2-normalised)" if normalized else "")
        ),
        "training_distance": str(model.hparams.get("distance", "squared_l2")),
        "backbone": str(model.hparams["backbone"]),
        "head": str(model.hparams["head"]),
        "embedding_dim": dim,
        "checkpoint": str(Path(checkpoint).resolve()),
        "torch_version": torch.__version__,
    }


class ExportedFile(NamedTuple):
    """A file an exporter wrote, and the exporter used."""

    path: Path
    exporter: str


def _batch_dimension() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1)}


def export_onnx(
    net: nn.Module, path: str | Path, image_size: int, batch_size: int = 2
) -> ExportedFile:
    """Write ``net`` as ONNX (input ``images``, output ``embeddings``, dynamic batch) with
    torch's ``torch.export``-based exporter."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    try:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (example_inputs(image_size, batch_size),),
                str(path),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(_batch_dimension(),),
                external_data=weights > ONNX_INLINE_LIMIT,
            )
    except Exception as error:  # torch.export and onnxscript fail in many classes
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ExportError(
            f"ONNX export failed ({type(error).__name__}: {first}); --format pt2 may still work"
        ) from error
    return ExportedFile(path, "torch.onnx.export(dynamo=True)")


def export_program(
    net: nn.Module, path: str | Path, image_size: int, batch_size: int = 2
) -> ExportedFile:
    """Write ``net`` as a ``torch.export`` ExportedProgram (``.pt2``, dynamic batch), which
    ``torch.export.load(path).module()`` runs without this package."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(
                net, (example_inputs(image_size, batch_size),), dynamic_shapes=(_batch_dimension(),)
            )
        torch.export.save(program, str(path))
    except Exception as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ExportError(f"torch.export failed: {type(error).__name__}: {first}") from error
    return ExportedFile(path, "torch.export")


EXPORTERS = {"onnx": export_onnx, "pt2": export_program}


def export_model(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    check: bool = True,
    check_images: str | Path | None = None,
    tolerance: float = TOLERANCE,
    batch_size_hint: int = 2,
    force: bool = False,
) -> dict[str, Any]:
    """Export the embedding network of ``checkpoint`` and write its sidecar (``<out>.json``).

    The file is exported and checked beside ``out`` and moved into place only then; ``out`` is
    claimed before anything is loaded (``force`` replaces a file that is not an earlier,
    unchanged export). See :mod:`.export_files`.

    Args:
        fmt: ``onnx`` or ``pt2``.
        out: the file to write; default :func:`default_output`.
        check: run the exported file and compare it with PyTorch.
        check_images: an image or a folder to check with (up to :data:`CHECK_IMAGES`); default:
            random inputs.
        tolerance: the largest max |exported - PyTorch| the check accepts.
        batch_size_hint: batch size of the example input to export with (the batch stays
            dynamic).

    Returns:
        the sidecar's content, with ``path`` (the file) and ``sidecar``; with a check,
        ``check.passed`` says whether the file is within ``tolerance``.

    Raises:
        ExportError: a needed module is missing, the check images cannot be read, or the export
            failed.
        OutputExistsError: ``out`` or its sidecar is a file of somebody else's.
        CheckpointError: the checkpoint cannot be used.
    """
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ExportError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    missing = missing_modules(fmt, check)
    if missing:
        raise ExportError(
            f"--format {fmt} needs {', '.join(missing)}, not installed; run: {INSTALL_HINT}"
        )
    out = Path(out or default_output(checkpoint, fmt))
    claim_outputs(out, force)  # before the model is loaded
    model = load_model(checkpoint, device="cpu")
    # Read the check images first: a wrong path should not cost an export.
    skipped: list[tuple[str, str]] = []
    inputs, source = check_inputs(model, check_images, skipped=skipped) if check else (None, "")
    net = model.net.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out.parent, f".{out.name}.")  # what a killed export left
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
    lock = (staging / LOCK_FILE).open("wb")
    hold(lock)  # a second export meanwhile leaves this one alone
    try:
        exported = EXPORTERS[fmt](
            net, staging / out.name, int(model.hparams["image_size"]), batch_size_hint
        )
        info = describe(model, fmt, out, checkpoint, exported.exporter)
        if fmt == "onnx":
            info["onnx_opset"] = _onnx_opset(exported.path)
        if inputs is not None:
            info["check"] = _check(net, exported.path, fmt, inputs, source, skipped, tolerance, out)
        info["digest"] = content_digest(exported.path)
        sidecar = move_into_place(staging, out, info)
    finally:
        lock.close()
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "path": str(out), "sidecar": str(sidecar)}


def _check(
    net: nn.Module,
    path: Path,
    fmt: str,
    inputs: torch.Tensor,
    source: str,
    skipped: list[tuple[str, str]],
    tolerance: float,
    out: Path,
) -> dict[str, Any]:
    """The check of the exported file at ``path`` (still beside ``out``) against PyTorch."""
    try:
        difference = compare(net, load_exported(path, fmt), inputs)
    except Exception as error:  # the runtime refuses the file: the export is not usable
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ExportError(
            f"the export to {out} could not be run to check it ({type(error).__name__}: "
            f"{first}); nothing was written. Pass --no-check to write it unchecked"
        ) from error
    return {
        "inputs": source,
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "passed": difference <= tolerance,
    }


def _onnx_opset(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
