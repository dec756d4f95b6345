"""Atomic writes: a result appears under its name only when it is complete.

Every writer of the package (images, tables, plots, run files) writes to a hidden
temporary name next to the target and renames it onto the target on success, so a
kill, a full disk or an error never leaves a half-written file under the real name.
"""

import contextlib
import os
import secrets


def part_name(path: str) -> str:
    """The hidden temporary name for `path`: `.STEM.XXXXXXXX.partEXT` in the same folder.
    It ends in the real extension so every writer picks the right format."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.part{ext}")


@contextlib.contextmanager
def atomic_path(path, make_folder: bool = False):
    """Yield a temporary name next to `path`; move it onto `path` only if the block succeeds,
    else remove it and re-raise."""
    path = os.fspath(path)
    if make_folder:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = part_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def write_text(path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        f.write(text)
