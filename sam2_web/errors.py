"""Exception types, one per kind of user mistake.

Each carries a message that tells the user what to do. They subclass the built-in type a caller
would naturally catch (``ValueError`` for bad arguments, ``FileNotFoundError`` for missing files),
so code written against the reference, which raised those, keeps working.
"""

from __future__ import annotations


class Sam2WebError(Exception):
    """Base class of every error sam2_web raises on purpose."""


class ConfigNotFoundError(Sam2WebError, FileNotFoundError):
    """A config name or path that does not exist; the message lists the configs that do."""


class UnknownModelError(Sam2WebError, KeyError):
    """A model name that is not in the registry; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(Sam2WebError, RuntimeError):
    """A checkpoint file that is missing, truncated/corrupt, or does not fit the model config."""


class HubUnavailableError(Sam2WebError, ConnectionError):
    """The Hub cannot be reached (or offline mode is on) and the file is not in the local cache."""


class PromptError(Sam2WebError, ValueError):
    """Points, labels, boxes or masks that are malformed or do not fit the image/clip."""


class VideoReadError(Sam2WebError, ValueError):
    """A clip that cannot be decoded: unreadable, corrupt, zero frames, or no video stream."""


class FrameIndexError(Sam2WebError, IndexError):
    """A frame index outside the clip."""


class UnknownObjectError(Sam2WebError, KeyError):
    """An object id that the session does not track."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LimitExceededError(Sam2WebError, ValueError):
    """An input over a configured limit (upload size, duration, resolution, object count)."""


class ExportError(Sam2WebError, OSError):
    """An export that could not be written (unwritable folder, encoder failure, bad option)."""


class CancelledError(Sam2WebError):
    """Work stopped on request; finished frames are kept and the job can be resumed."""
