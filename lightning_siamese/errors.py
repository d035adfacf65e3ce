"""The errors a user can fix: bad settings, bad data, unusable checkpoints, export problems.

Each is a :class:`UserError`, whose message says what is wrong and what to do. ``cli.main`` (and
only it) prints such an error as one ``error: <message>`` line and exits with status 2; anything
else, such as a ``ValueError`` from a shape mismatch deep in torch, is a bug and keeps its
traceback. Each kind also derives from the built-in exception it used to be, so code that
catches ``ValueError`` or ``OSError`` around the library keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work: an unknown backbone, a negative margin, bad split fractions."""


class PairDataError(UserError, ValueError):
    """A pair folder is missing or unusable, has no usable pair, or has problems (``strict``)."""


class InputError(UserError, ValueError):
    """A file or folder given to a command is missing, or holds no usable image."""


class CheckpointError(UserError, ValueError):
    """The file is not a readable checkpoint of this project's model."""


class WeightsError(UserError, OSError):
    """Pretrained weights could not be downloaded or loaded."""


class WeightsFileError(WeightsError, ValueError):
    """A weights file that cannot be used: unreadable, not a state dict of tensors, holding NaN
    or Inf, or not a state dict of the backbone. Also a ``ValueError``, as its
    not-the-backbone's case was a ``ConfigError`` before."""


class ExportError(UserError, RuntimeError):
    """The export or its check could not be done."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""

    @classmethod
    def at(
        cls, loss: float, epoch: int | str, step: int | str, pairs: list[int], last_checkpoint: str
    ) -> NonFiniteLossError:
        """The error for a non-finite ``loss`` at this point of training: what happened, the
        likely causes and what to do, and whether a good checkpoint exists."""
        saved = (
            f"the last checkpoint written, {last_checkpoint}, holds good weights"
            if last_checkpoint
            else "no checkpoint was written yet"
        )
        return cls(
            f"non-finite training loss ({loss}) at epoch {epoch}, global step {step} "
            f"(pairs {pairs}...); the weights were not updated with it and {saved}. Likely "
            "causes: a learning rate too high for this model (lower it: --model.optimizer "
            "torch.optim.Adam --model.optimizer.lr 1e-5, or your config's optimizer with "
            "--model.optimizer.lr), unnormalised embeddings with a squared-L2 "
            "distance growing without bound (try --model.normalize true), or corrupt inputs. "
            "Resume with --ckpt_path last after changing the setting."
        )


class CacheMemoryError(UserError, MemoryError):
    """The frozen-feature cache would not fit in the available memory."""


class NpmError(UserError, RuntimeError):
    """npm is missing or cannot fetch the emoji packages."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named in a setting does not exist."""


class OutputExistsError(UserError, FileExistsError):
    """An output path holds a file or folder that this package did not write (``--force``)."""


class OutputError(UserError, OSError):
    """An output folder cannot be created or written."""


class DeviceError(UserError, RuntimeError):
    """A device asked for is not on this machine (``--device cuda`` without a GPU)."""
