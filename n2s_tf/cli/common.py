"""What every command shares: flag parsing, --help, user errors as one line with exit code 2,
warnings as one line, and Ctrl-C / SIGTERM unwinding so that no partial file is left.

The package imports TensorFlow lazily (n2s_tf/__init__.py), so this module runs before it
whatever imports the command, and its C++ start-up lines (cpu_feature_guard, "All log
messages before absl::InitializeLog()", oneDNN's notice) stay off the terminal: the log level
below silences most, and the rest, which abseil prints before any level applies, are taken out
of what the import writes to stderr (`_import_tensorflow_quietly`).
"""

import os
import re
import signal
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from n2s_tf.errors import ConfigError, RepairedPixelsWarning, Terminated, UserError  # noqa: E402

# User mistakes print as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError)
HELP_ARGUMENTS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


def _terminate(signum, frame):
    raise Terminated()


def _interruption(error):
    """The KeyboardInterrupt or Terminated that caused `error`, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (KeyboardInterrupt, Terminated)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _exit_interrupted(error):
    """One line, with what is left to resume when the stopped code said so (a training run
    names its last checkpoint); 143 for SIGTERM, 130 for Ctrl-C, as a shell reports them."""
    word, code = ("terminated", 143) if isinstance(error, Terminated) else ("interrupted", 130)
    print(f"{word}{': ' if str(error) else ''}{error}", file=sys.stderr)
    sys.exit(code)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _print_help(main, argv):
    """The command's docstring and its own flags on stdout (absl's short help shows only the
    flags of __main__, which for these thin scripts has none)."""
    module = sys.modules[main.__module__]
    if "--helpfull" in argv:
        listing = flags.FLAGS.get_help()
    else:
        key = sys.argv[0] if main.__module__ == "__main__" else main.__module__
        listing = flags.FLAGS.module_help(key) + "\n\n(--helpfull: also absl's own flags)"
    try:
        print((module.__doc__ or "").strip() + "\n\nflags:\n" + listing, flush=True)
    except BrokenPipeError:  # `--help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _flags_parser(main):
    def parse(argv):
        if any(arg in HELP_ARGUMENTS for arg in argv[1:]):
            _print_help(main, argv)
            sys.exit(0)
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return parse


# What TensorFlow's import prints on some CPUs whatever TF_CPP_MIN_LOG_LEVEL says.
_START_UP_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|"
                             r"\] oneDNN custom operations are on|cpu_feature_guard\.cc|"
                             r"^To enable the following instructions:")


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 caught, then write back every line of it but
    the start-up notices, so that a real problem of the import still shows."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines()
    kept = [line for line in lines if not _START_UP_NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


def run_main(main):
    """app.run(main), with flag errors and user mistakes printed as one line, exit code 2;
    Ctrl-C exits 130, SIGTERM 143, both after removing partial files."""

    def guarded(argv):
        logging.set_verbosity(logging.WARNING)
        warnings.showwarning = _one_line_warning
        warnings.simplefilter("always", RepairedPixelsWarning)  # every image that had them, not the first only
        signal.signal(signal.SIGTERM, _terminate)
        if len(argv) > 1:
            print(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags are --name=value)", file=sys.stderr)
            sys.exit(2)
        try:
            _import_tensorflow_quietly()
            return main(argv)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            # Ctrl-C or SIGTERM while a C extension initializes (TensorFlow's import) arrives
            # wrapped, e.g. as ImportError("initialization failed"); anything else is a bug.
            cause = _interruption(error)
            if cause is None:
                raise
            _exit_interrupted(cause)
        except (KeyboardInterrupt, Terminated) as error:
            _exit_interrupted(error)

    app.run(guarded, flags_parser=_flags_parser(main))


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


def auto_if_unset(value):
    """A boolean flag whose default is None (unset): "auto", else its value; for the API's
    True / False / "auto" options (api.denoise's calibrate)."""
    return "auto" if value is None else value
