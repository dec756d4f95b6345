"""Atomic writes: a result appears under its name only when it is complete.

Every writer of the package (images, tables, plots, run files) writes to a hidden
temporary name next to the target and renames it onto the target on success, so a
kill, a full disk or an error never leaves a half-written file under the real name.
"""

import contextlib
import os
import re
import secrets


def part_name(path: str) -> str:
    """The hidden temporary name for `path`: `.STEM.XXXXXXXX.partEXT` in the same folder.
    It ends in the real extension so every writer picks the right format."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.{secrets.token_hex(4)}.part{ext}")


def remove_stale_parts(path: str) -> None:
    """Remove temporary files of `path` left by a killed writer (SIGKILL, power loss): a target
    is written by one process at a time, so any part file of it is stale."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    pattern = re.compile(rf"\.{re.escape(stem)}\.[0-9a-f]{{8}}\.part{re.escape(ext)}")
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if pattern.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)


@contextlib.contextmanager
def atomic_path(path, make_folder: bool = False):
    """Yield a temporary name next to `path`; move it onto `path` only if the block succeeds,
    else remove it and re-raise. Stale part files of `path` from a killed writer go first."""
    path = os.fspath(path)
    if make_folder:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_stale_parts(path)
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
