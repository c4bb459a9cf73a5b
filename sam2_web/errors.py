"""Exception types, one per kind of user mistake.

Each carries a message that tells the user what to do. They subclass the built-in type a caller
would naturally catch (``ValueError`` for bad arguments, ``FileNotFoundError`` for missing files),
so code written against the reference, which raised those, keeps working.
"""

from __future__ import annotations

import re


class Sam2WebError(Exception):
    """Base class of every error sam2_web raises on purpose."""


class ConfigNotFoundError(Sam2WebError, FileNotFoundError):
    """A config name or path that does not exist; the message lists the configs that do."""


class ConfigError(Sam2WebError, ValueError):
    """A setting that does not exist, or is given in the wrong section; the message names the right one."""


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


class MissingExtraError(Sam2WebError, ImportError):
    """An optional feature whose packages are not installed; the message gives the pip command."""


class CancelledError(Sam2WebError):
    """Work stopped on request; finished frames are kept and the job can be resumed."""


# An absolute POSIX path of at least one folder (``/tmp/x/source.mp4``, ``file:/srv/a.mp4``), or a
# Windows one (``C:\\Users\\me\\x.pt``); not URLs (``http://h/p``), not ``/track``, not ``1/2``.
_POSIX_PATH = re.compile(r"(?:\bfile:|(?<![\w:/.~-]))/(?:[^\s/'\"`]+/)+([^\s/'\"`,;:()]*)")
_HOME_PATH = re.compile(r"(?<![\w/])~/(?:[^\s/'\"`]+/)*([^\s/'\"`,;:()]*)")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"`]+\\)+([^\s\\'\"`,;:()]*)")


def public_message(error: BaseException | str) -> str:
    """An error's message fit for a remote user: every server path shortened to its file name.

    Messages name files so a local user can find them; a user of a public server must not learn
    its folders (session folders and ids, the checkpoint and Hub cache paths).
    """
    text = str(error)
    for pattern in (_POSIX_PATH, _HOME_PATH, _WINDOWS_PATH):
        text = pattern.sub(lambda m: m.group(1) or "…", text)
    return text


class MattingError(Sam2WebError, ValueError):
    """A frame/mask pair or option that soft edges cannot use: sizes that differ, NaN, unknown method."""


class MattingUnavailableError(Sam2WebError, RuntimeError):
    """The learned matting method cannot run here: ``transformers`` is missing or its weights cannot be had."""
