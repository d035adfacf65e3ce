"""``lightning-siamese export``: the embedding network as ONNX or TorchScript, for use elsewhere.

Only the embedding network (``model.net``, in eval mode) is exported: a float32 batch of
preprocessed images (B, 3, S, S) in, embeddings (B, D) out, with a dynamic batch dimension. The
preprocessing stays outside the file and is written down in a JSON sidecar (``<out>.json``), so
the file can be used without this package. After exporting, the file is run on real (``--check
DIR_OR_IMAGE``) or random images and compared with the PyTorch network.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_siamese.errors import ExportError
from lightning_siamese.images import IMAGE_EXTENSIONS, load_image

if TYPE_CHECKING:
    from lightning_siamese.model import SiameseModel

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
#: Largest max |exported - PyTorch| a check accepts by default.
TOLERANCE = 1e-4
#: At most this many images from ``--check DIR``.
CHECK_IMAGES = 8
#: Modules the ONNX export (``onnx``, ``onnxscript``) and its check (``onnxruntime``) need.
ONNX_MODULES = ("onnx", "onnxscript")
ONNX_CHECK_MODULES = ("onnxruntime",)
INSTALL_HINT = "pip install 'lightning-siamese[export]'"
#: Above this many bytes of weights, ONNX weights go to an external ``<out>.data`` file (the
#: protobuf limit of one file is 2 GiB).
ONNX_INLINE_LIMIT = 1_800_000_000

RESIZE = "bilinear, antialiased, square, aspect ratio not kept"
SCALE = "pixels / 255"


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """Next to the checkpoint: ``<stem>.onnx`` or ``<stem>.torchscript.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIXES[fmt])


def sidecar_path(out: str | Path) -> Path:
    """The JSON file that documents an exported file: ``<out>.json``."""
    out = Path(out)
    return out.with_name(out.name + ".json")


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
    from lightning_siamese.embedding import normalization

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


def _example(image_size: int, batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(max(batch_size, 1), 3, image_size, image_size, generator=generator)


def export_onnx(
    net: nn.Module, path: str | Path, image_size: int, batch_size: int = 2
) -> tuple[Path, str]:
    """Write ``net`` as ONNX (input ``images``, output ``embeddings``, dynamic batch).

    Uses the ``torch.export``-based exporter and falls back to the legacy TorchScript-based one
    when that fails. Returns the path and the exporter used (``dynamo`` or ``legacy``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    example = (_example(image_size, batch_size),)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    try:
        batch = torch.export.Dim("batch", min=1)
        with torch.no_grad():
            torch.onnx.export(
                net,
                example,
                str(path),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                external_data=weights > ONNX_INLINE_LIMIT,
            )
        return path, "dynamo"
    except Exception as error:  # any failure of torch.export / onnxscript: try the old way
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
        print(
            f"note: the torch.export-based ONNX exporter failed ({reason}); "
            "falling back to the legacy TorchScript-based exporter",
            file=sys.stderr,
        )
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                net,
                example,
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as error:
        raise ExportError(f"ONNX export failed: {type(error).__name__}: {error}") from error
    return path, "legacy"


def export_torchscript(
    net: nn.Module, path: str | Path, image_size: int, batch_size: int = 2
) -> tuple[Path, str]:
    """Write ``net`` traced with ``torch.jit.trace``; the batch dimension stays free.

    The input side is fixed, so shape arithmetic the tracer bakes in (e.g. TF-style "same"
    padding) stays right; only the batch varies. Returns the path and ``torch.jit.trace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            _quiet_jit()
            traced = torch.jit.trace(net, _example(image_size, batch_size))
            torch.jit.save(traced, str(path))
    except Exception as error:
        raise ExportError(f"TorchScript export failed: {type(error).__name__}: {error}") from error
    return path, "torch.jit.trace"


def _quiet_jit() -> None:
    """Silence the tracer's constant-shape notes and TorchScript's deprecation notices."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning
    )


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function preprocessed images (B, 3, S, S) -> embeddings (B, D) running the exported file
    (ONNX Runtime on the CPU, or ``torch.jit.load``)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(images: torch.Tensor) -> torch.Tensor:
            array = images.detach().cpu().float().numpy()
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])

        return run_onnx
    if fmt == "torchscript":
        with warnings.catch_warnings():
            _quiet_jit()
            module = torch.jit.load(str(path), map_location="cpu").eval()

        def run_torchscript(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(images.cpu().float())

        return run_torchscript
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


def max_difference(a: torch.Tensor | Any, b: torch.Tensor | Any) -> float:
    """max |a - b| over all elements (tensors or arrays of the same shape)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a - b).abs().max()) if a.numel() else 0.0


def _walk_images(folder: Path) -> Iterator[Path]:
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(current) / name


def find_images(path: str | Path, limit: int = CHECK_IMAGES) -> list[Path]:
    """Up to ``limit`` image files: ``path`` itself, or the first ones (sorted) under a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ExportError(f"{path}: no such file or folder of images to check with")
    images = []
    for image in _walk_images(path):
        images.append(image)
        if len(images) == limit:
            break
    if not images:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ExportError(f"{path}: no image files ({extensions}) to check with")
    return images


def check_inputs(
    model: SiameseModel, source: str | Path | None, count: int = 3
) -> tuple[torch.Tensor, str]:
    """A batch to check with: images under ``source`` preprocessed by ``model.transform()``, or
    without ``source``, ``count`` random inputs of the right shape. Also says which it is."""
    if source is None:
        size = int(model.hparams["image_size"])
        return _example(size, count), f"{count} random inputs (no --check images given)"
    paths = find_images(source)
    transform = model.transform()
    tensors = []
    for path in paths:
        try:
            tensors.append(transform(load_image(path)))
        except OSError as error:
            raise ExportError(f"{path}: cannot read the image: {error}") from error
    return torch.stack(tensors), f"{len(paths)} image(s) from {source}"


def compare(
    net: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
) -> float:
    """max |exported - PyTorch| over the batch and, to exercise the dynamic batch, its first
    image alone."""
    batches = [images] if len(images) == 1 else [images, images[:1]]
    net = net.eval()
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = net(batch)
        worst = max(worst, max_difference(run(batch), expected))
    return worst


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}


def _onnx_opset(path: Path) -> int | None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
