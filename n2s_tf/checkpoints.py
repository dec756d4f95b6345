"""Finding the checkpoint a run resumes from, whatever a kill or a full disk left behind.

tf.train.CheckpointManager trusts its index file (`checkpoints/checkpoint`): a garbage
index makes it see no checkpoint at all, and a truncated newest checkpoint fails to
restore. Here checkpoints are found by their own files (ckpt-N.index and every
ckpt-N.data-K-of-M shard), tried newest first until one restores, and the index is
rewritten to match, so the manager keeps pruning old checkpoints. `ckpt-N_temp` folders
are what an interrupted save leaves (TF writes there, then merges into ckpt-N).
"""

import os
import re
import shutil
import time
from typing import List, Optional, Tuple

import tensorflow as tf

from n2s_tf.errors import ConfigError, one_line

INDEX = "checkpoint"
PREFIX = "ckpt"
_INDEX_FILE = re.compile(rf"{PREFIX}-(\d+)\.index$")
_DATA_FILE = re.compile(rf"{PREFIX}-\d+\.data-(\d+)-of-(\d+)$")
_TEMP_FOLDER = re.compile(rf"{PREFIX}-\d+_temp$")
# What restoring a truncated or garbage checkpoint raises on TF 2.21 (OpError for a bad
# index, IndexError for short data, AssertionError when the variables do not match).
RESTORE_ERRORS = (tf.errors.OpError, IndexError, ValueError, AssertionError, OSError)


def step_of(prefix: str) -> int:
    """The step of a checkpoint prefix `.../ckpt-N`."""
    return int(prefix.rsplit("-", 1)[1])


def complete_checkpoints(directory: str) -> List[str]:
    """Prefixes of the checkpoints whose files are all there, newest first: a non-empty
    ckpt-N.index and the data shards 0..M-1 of M that the shard names announce."""
    names = set(_listdir(directory))
    found = []
    for name in names:
        match = _INDEX_FILE.match(name)
        if not match or os.path.getsize(os.path.join(directory, name)) == 0:
            continue
        stem = name[: -len(".index")]
        shards = [_DATA_FILE.match(n) for n in names if n.startswith(f"{stem}.data-")]
        counts = {int(m.group(2)) for m in shards if m}
        if len(counts) == 1:
            total = counts.pop()
            if all(f"{stem}.data-{k:05d}-of-{total:05d}" in names for k in range(total)):
                found.append(os.path.join(directory, stem))
    return sorted(found, key=step_of, reverse=True)


def index_unreadable(directory: str) -> bool:
    """Whether the index file exists but names no checkpoint (garbage, truncated)."""
    if not os.path.exists(os.path.join(directory, INDEX)):
        return False
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # TF warns in four lines; the caller says it in one
    try:
        return tf.train.get_checkpoint_state(directory) is None
    except ValueError:  # parsed, but without model_checkpoint_path
        return True
    finally:
        logger.setLevel(level)


def remove_temp_folders(directory: str) -> List[str]:
    """Delete the `ckpt-N_temp` folders interrupted saves left; returns their names."""
    names = sorted(n for n in _listdir(directory) if _TEMP_FOLDER.match(n))
    for name in names:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return names


def restore_newest(checkpoint: tf.train.Checkpoint, directory: str) -> Tuple[Optional[str], List[str]]:
    """Restore the newest checkpoint in `directory` that restores; (its prefix, notes).

    The notes are one-line messages for the user (an unreadable index, checkpoints skipped).
    The prefix is None when the directory holds no trace of a checkpoint (a run stopped
    before its first one); ConfigError when it holds some but none restores, since
    starting over would overwrite the run.
    """
    notes, failures = [], []
    if index_unreadable(directory):
        notes.append(f"the checkpoint index {os.path.join(directory, INDEX)} is unreadable: "
                     f"looking for checkpoints by their files")
    for prefix in complete_checkpoints(directory):
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except RESTORE_ERRORS as error:
            failures.append(f"{os.path.basename(prefix)} does not restore ({one_line(error)[:200]})")
            continue
        if failures:
            notes.append(f"{'; '.join(failures)}: resuming from {os.path.basename(prefix)}, "
                         f"the newest checkpoint that restores")
        return prefix, notes
    if failures:
        raise ConfigError(f"--resume: no checkpoint in {directory} restores: {'; '.join(failures)}; "
                          f"remove the folder to start over")
    traces = [n for n in _listdir(directory) if n == INDEX or n.startswith(f"{PREFIX}-")]
    if traces:
        raise ConfigError(f"--resume: no complete checkpoint in {directory} (found only "
                          f"{', '.join(sorted(traces)[:4])}); remove the folder to start over")
    return None, notes


def rewrite_index(directory: str, restored: str) -> None:
    """An index listing the complete checkpoints up to `restored` (oldest first), with
    their file times, so that the CheckpointManager prunes them as it would its own."""
    step = step_of(restored)
    kept = sorted((p for p in complete_checkpoints(directory) if step_of(p) <= step), key=step_of)
    times = [os.path.getmtime(f"{p}.index") for p in kept]
    lines = [f'model_checkpoint_path: "{os.path.basename(restored)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    # The manager only prunes checkpoints newer than this.
    lines.append(f"last_preserved_timestamp: {min(times + [time.time()]) - 1.0!r}")
    path = os.path.join(directory, INDEX)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _listdir(directory: str) -> List[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
