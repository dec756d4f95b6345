"""User errors: the mistakes a caller can fix, raised by every layer of the package,
and the one warning about the caller's data (RepairedPixelsWarning).

The bottom of the package: it imports nothing from n2s_tf. Messages are one line in the
caller's terms (an argument name such as `patch_size`); the command-line programs print
them as `error: ...` with exit code 2, naming flags where a flag was the cause.
"""


class UserError(ValueError):
    """A mistake the caller can fix; printed as one line, no traceback."""


class ConfigError(UserError):
    """An impossible option or combination of options."""


class ImageFileError(UserError):
    """A file that cannot be read or written; the message is one line naming the file."""


class ModelFileError(UserError):
    """An exported model that is missing or cannot be loaded; one line naming its folder."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """No exported model where one was named (still a FileNotFoundError for older callers)."""


class RepairedPixelsWarning(UserWarning):
    """Non-finite pixels (NaN, Inf) of an image were replaced before denoising; one line
    saying how many. The command-line programs print it as `warning: ...`."""


class Terminated(BaseException):
    """SIGTERM (kill, a scheduler's time limit) raised in Python by the command-line programs,
    so that it unwinds like Ctrl-C: files being written are removed (writes go through
    temporary names) and a training run names its last checkpoint."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (library messages may span several); for an
    OSError its reason alone, since the path is already named by the caller."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return " ".join(reason.split()) or type(error).__name__
