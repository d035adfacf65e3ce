"""What an exported file is: its formats, names, default tolerance and the preprocessing its
sidecar documents. Plain Python (the command line reads it without importing torch)."""

from __future__ import annotations

from pathlib import Path

#: ``onnx``: ONNX through torch's ``torch.export``-based exporter, run by ONNX Runtime;
#: ``pt2``: a ``torch.export`` ExportedProgram, run by ``torch.export.load(path).module()``.
FORMATS = ("onnx", "pt2")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2"}
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
#: Largest max |exported - PyTorch| a check accepts by default.
TOLERANCE = 1e-4
#: At most this many images from a folder of check images.
CHECK_IMAGES = 8
INSTALL_HINT = "pip install 'lightning-siamese[export]'"
RESIZE = "bilinear, antialiased, square, aspect ratio not kept"
SCALE = "pixels / 255"


def default_output(checkpoint: str | Path, fmt: str) -> Path:
    """Next to the checkpoint: ``<stem>.onnx`` or ``<stem>.pt2``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIXES[fmt])


def sidecar_path(out: str | Path) -> Path:
    """The JSON file that documents an exported file: ``<out>.json``."""
    out = Path(out)
    return out.with_name(out.name + ".json")
