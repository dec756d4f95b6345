"""What every command shares: flag parsing and user errors as one line with exit code 2."""

import os
import signal
import sys
import warnings

# Before TensorFlow is imported: keep its C++ start-up chatter off the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from n2s_tf.errors import ConfigError, RepairedPixelsWarning, UserError  # noqa: E402

# User mistakes print as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError)
_show_warning = warnings.showwarning


def _show_user_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings about the user's data as one `warning: ...` line, without source location."""
    if issubclass(category, RepairedPixelsWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def run_main(main):
    """app.run(main), with flag errors and user mistakes printed as one line, exit code 2."""

    def guarded(argv):
        logging.set_verbosity(logging.WARNING)
        warnings.showwarning = _show_user_warning
        warnings.simplefilter("always", RepairedPixelsWarning)  # every image that had them, not the first only
        # SIGTERM (kill, a batch scheduler) ends a command as cleanly as Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
        if len(argv) > 1:
            print(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)", file=sys.stderr)
            sys.exit(2)
        try:
            return main(argv)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as error:  # its message, if any, says what is left to resume
            print(f"interrupted{': ' if str(error) else ''}{error}", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, flags_parser=_parse_flags)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def parse_ints(text: str, flag: str) -> tuple:
    """'64' or '16,64,64' -> a tuple of positive ints."""
    return _parse_positive(text, flag, int, "integers")


def parse_floats(text: str, flag: str) -> tuple:
    """'0.05,1.0' -> a tuple of positive (finite) floats."""
    return _parse_positive(text, flag, float, "numbers")


def _parse_positive(text, flag, kind, what):
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < float("inf") for v in values):
        raise ConfigError(f"--{flag}={text!r} must be positive {what} separated by commas")
    return values


def parse_network_args(text: str) -> dict:
    """'depth=3,base_filters=48,n2v2=true' -> {'depth': 3, 'base_filters': 48, 'n2v2': True}."""
    import json

    if text.strip().startswith("{"):
        try:
            return dict(json.loads(text))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise ConfigError(f"--network_args is not a JSON object: {error}") from None
    args = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--network_args item {item!r} is not key=value")
        try:
            text = value.strip()
            args[key.strip()] = json.loads(text.lower() if text.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            args[key.strip()] = value.strip()
    return args
