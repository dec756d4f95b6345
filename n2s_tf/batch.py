"""Many files in one run: the job list, a shard of it, what to skip, one line per file, a summary.

A data collection is thousands of micrographs, denoised on a cluster or a multi-GPU
workstation, often straight from a RELION job's star file. The steps, in order:

- `list_inputs`: a file, folder or glob (sorted), or a RELION `*.star` (its micrographs in
  row order, see `read_star`).
- `plan`: one `Job` per input (its output, preview, Noise2Noise other half). Refuses,
  before any work, what would lose data or fail late: two inputs writing one file, an
  output that is an input or another output, a file name given for many outputs, an
  unsupported output extension, a missing output folder.
- `shard`: the I-th of N interleaved slices (inputs I, I+N, I+2N, ... of the list), so N
  Slurm array tasks, srun tasks or local `run_workers` cover every input exactly once;
  interleaving gives every shard the same mix of early and late files.
- `run`: the jobs in order, each read, computed and written (`Steps`; with overlap the
  next file is read and the last one written in threads while one computes). A file that
  cannot be read, written or denoised (a user error or an OSError) is reported in one
  line and the run goes on; a programming error still stops it with its traceback. One
  line per file (count, time, rate, time left), also when stderr is not a terminal, and
  a summary at the end.
- `run_workers`: K local processes of the command, one shard each, one GPU each.
Outputs are written atomically (n2s_tf.io): a killed run leaves only complete outputs,
so a rerun with skip_existing resumes where it stopped. Messages name the flags of
test_single.py, whose engine this is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from n2s_tf import files, io
from n2s_tf.errors import ConfigError, ImageFileError, UserError, one_line

STAR_NAME_COLUMN = "rlnMicrographName"
STAR_SUFFIX = "_denoised"  # <star stem>_denoised.star lists the denoised micrographs


@dataclass
class Job:
    """One input and the files it becomes."""

    source: str
    target: str
    preview: Optional[str] = None
    half: Optional[str] = None  # Noise2Noise: the other half of `source` (--input_b)

    @property
    def outputs(self) -> list[str]:
        return [path for path in (self.target, self.preview) if path]

    def complete(self) -> bool:
        """Whether every output exists; outputs are written atomically, so they are whole."""
        return all(os.path.exists(path) for path in self.outputs)


# ----------------------------------------------------------------------------- inputs


@dataclass
class StarList:
    """A RELION star file read as an input list: its tables, and the micrographs of one."""

    path: str
    tables: dict  # block name -> pandas DataFrame, every block of the file
    block: str  # the block with the micrograph names
    inputs: list[str]  # the micrographs, resolved (see read_star), in row order


def list_inputs(spec: str) -> tuple[list[str], Optional[StarList]]:
    """The input files of --input, and the StarList when it names a RELION star file."""
    if not spec or not spec.strip():
        raise ConfigError("--input is empty; give an image file, a folder, a glob or a RELION .star file")
    if spec.lower().endswith(".star"):
        star = read_star(spec)
        return star.inputs, star
    return io.list_inputs(spec), None


def read_star(path: str) -> StarList:
    """The micrographs of a RELION star file (the `rlnMicrographName` column of the block
    `micrographs`, else of the first block that has one).

    RELION writes names relative to its project directory, the folder it runs in, which
    holds the job folders (e.g. MotionCorr/job002/corrected_micrographs.star). A name is
    looked up, first found wins: as it is (absolute, or relative to the current folder:
    RELION's own rule, when run from the project directory); then relative to the star
    file's folder, its parent and its grandparent (the project directory of a job's
    output). A name found nowhere is kept as it is, and fails when read.
    """
    import starfile

    if not os.path.isfile(path):
        raise ImageFileError(f"cannot read '{path}': no such file")
    try:
        tables = starfile.read(path, always_dict=True)
    except Exception as error:  # the parser raises many kinds on a damaged file
        raise ImageFileError(f"cannot read '{path}' as a star file: {one_line(error)}") from error
    names = [name for name, table in tables.items() if STAR_NAME_COLUMN in getattr(table, "columns", ())]
    if not names:
        raise ImageFileError(f"cannot read '{path}': no block has a {STAR_NAME_COLUMN} column "
                             f"(a RELION micrographs star file has one)")
    block = "micrographs" if "micrographs" in names else names[0]
    folder = os.path.dirname(os.path.abspath(path))
    bases = [folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder))]
    inputs = [_resolve(str(name), bases) for name in tables[block][STAR_NAME_COLUMN]]
    if not inputs:
        raise ImageFileError(f"cannot read '{path}': its {block} block lists no micrographs")
    return StarList(path=path, tables=tables, block=block, inputs=inputs)


def _resolve(name, bases):
    if os.path.isabs(name) or os.path.exists(name):
        return name
    for base in bases:
        candidate = os.path.join(base, name)
        if os.path.exists(candidate):
            return candidate
    return name


def star_output_path(star: StarList, jobs: list[Job]) -> str:
    """Where the star file of the denoised micrographs goes: beside the first output, named
    <input star's stem>_denoised.star (so never the input star itself)."""
    stem = os.path.splitext(os.path.basename(star.path))[0]
    return os.path.join(os.path.dirname(jobs[0].target), f"{stem}{STAR_SUFFIX}.star")


def write_star(star: StarList, jobs: list[Job], path: str) -> int:
    """Write `star`'s tables to `path` with the micrograph names pointing at the denoised
    files; rows whose output does not exist (failed, or another shard's still running)
    are left out. Names are relative to the current folder (RELION's project directory)
    when the outputs are inside it, else absolute. Replaces an older star of a previous
    run (atomically); returns the number of micrographs listed."""
    import starfile

    table = star.tables[star.block]
    targets = [job.target for job in jobs]
    done = [os.path.exists(target) for target in targets]
    rows = table[done].copy()
    rows[STAR_NAME_COLUMN] = [_relative_to_cwd(t) for t, ok in zip(targets, done) if ok]
    tables = dict(star.tables, **{star.block: rows})
    with files.atomic_path(path) as temporary:
        starfile.write(tables, temporary)
    return len(rows)


def _relative_to_cwd(path):
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


# ----------------------------------------------------------------------------- planning


def plan(inputs: list[str], output: Optional[str] = None, preview: Optional[str] = None,
         input_b: Optional[str] = None) -> list[Job]:
    """The jobs for `inputs`, checked before any work (see the module docstring).

    output / preview: a file for one input; a folder (existing, or ending in '/') for
    many. Without output: <name>_denoised<ext> in the current folder. Previews are PNG.
    """
    many = len(inputs) > 1
    targets = _paths(inputs, output, many, "_denoised", "--output")
    previews = ([str(os.path.splitext(p)[0]) + ".png" for p in _paths(inputs, preview, many, "_preview", "--preview")]
                if preview else [None] * len(inputs))
    halves = [os.path.join(input_b, os.path.basename(source)) for source in inputs] if input_b else [None] * len(inputs)
    jobs = [Job(s, t, p, h) for s, t, p, h in zip(inputs, targets, previews, halves)]
    _check_collisions(jobs)
    for target in targets:
        extension = os.path.splitext(target)[1].lower()
        if extension not in io.SUPPORTED_EXTENSIONS:
            raise ConfigError(f"--output: cannot write '{target}': unsupported file type '{extension}' "
                              f"(supported: {', '.join(io.SUPPORTED_EXTENSIONS)})")
    return jobs


def _paths(inputs, output, many, suffix, flag):
    """Where each input's result goes for one of --output / --preview."""
    if output is None:
        return [os.path.join(os.getcwd(), f"{stem}{suffix}{ext}")
                for stem, ext in (os.path.splitext(os.path.basename(p)) for p in inputs)]
    folder = many or output.endswith(os.sep) or os.path.isdir(output)
    if folder:
        if many and not output.endswith(os.sep) and not os.path.isdir(output) \
                and os.path.splitext(output)[1].lower() in io.SUPPORTED_EXTENSIONS:
            raise ConfigError(f"{flag}={output} names one file, but there are {len(inputs)} inputs; "
                              f"give a folder (ending in '/')")
        return [os.path.join(output, os.path.basename(p)) for p in inputs]
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise ConfigError(f"{flag}={output}: the folder {parent} does not exist")
    return [output]


def _check_collisions(jobs):
    """No two files of a run may be one file, and no output may be an input."""
    owners = {}
    for job in jobs:
        for path in (job.source, job.half):
            if path:
                owners.setdefault(os.path.realpath(path), ("input", path))
    for job in jobs:
        for kind, path in (("output", job.target), ("preview", job.preview)):
            if path is None:
                continue
            key = os.path.realpath(path)
            if key in owners:
                other_kind, other = owners[key]
                if other_kind == "input":
                    whose = "its input" if other == job.source else f"the input {other}"
                    raise ConfigError(f"the {kind} {path} would overwrite {whose}; choose another --{kind}")
                if other == job.source:
                    raise ConfigError(f"the {kind} and the {other_kind} of {job.source} would both be {path}; "
                                      f"choose another --{kind}")
                raise ConfigError(f"the {kind} of {job.source} and the {other_kind} of {other} would both be "
                                  f"{path}; choose other --output/--preview (inputs of the same file name "
                                  f"need separate runs or folders)")
            owners[key] = (kind, job.source)


def check_existing(jobs: list[Job], overwrite: bool, skip_existing: bool) -> None:
    """Refuse existing outputs unless they are to be replaced or kept."""
    if overwrite and skip_existing:
        raise ConfigError("--overwrite and --skip_existing contradict each other; choose one")
    if overwrite or skip_existing:
        return
    existing = [path for job in jobs for path in job.outputs if os.path.exists(path)]
    if existing:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]} exists{more}; pass --overwrite to replace, "
                          f"or --skip_existing to keep what is done")


def make_folders(jobs: list[Job]) -> None:
    for folder in {os.path.dirname(path) for job in jobs for path in job.outputs}:
        if folder:
            os.makedirs(folder, exist_ok=True)


# ----------------------------------------------------------------------------- sharding


def parse_shard(text: Optional[str], environ=None) -> tuple[int, int]:
    """--shard as (index, count): "I/N" (0-based), "auto" (from Slurm) or empty (0, 1).

    auto: a Slurm job array task (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN in
    steps of SLURM_ARRAY_TASK_STEP, of SLURM_ARRAY_TASK_COUNT), or a task of `srun`
    (SLURM_PROCID of SLURM_STEP_NUM_TASKS); an array task that runs several srun tasks
    splits its shard again among them.
    """
    environ = os.environ if environ is None else environ
    if not text:
        return 0, 1
    if text.strip() == "auto":
        return _slurm_shard(environ)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match[1]) < int(match[2]):
        raise ConfigError(f"--shard={text!r} must be I/N with 0 <= I < N (0-based), or auto")
    return int(match[1]), int(match[2])


def _slurm_shard(env):
    def number(name, default=None):
        value = env.get(name, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--shard=auto: {name}={value!r} is not a number") from None

    index, count, source = 0, 1, None
    if "SLURM_ARRAY_TASK_ID" in env:
        task, low, step = number("SLURM_ARRAY_TASK_ID"), number("SLURM_ARRAY_TASK_MIN", 0), \
            number("SLURM_ARRAY_TASK_STEP", 1)
        if "SLURM_ARRAY_TASK_COUNT" in env:
            count = number("SLURM_ARRAY_TASK_COUNT")
        else:
            count = (number("SLURM_ARRAY_TASK_MAX", task) - low) // step + 1
        index, source = (task - low) // step, f"SLURM_ARRAY_TASK_ID={task}"
        if (task - low) % step or not 0 <= index < count:
            raise ConfigError(f"--shard=auto: array task {task} is not one of {count} tasks from {low} in "
                              f"steps of {step}; use an array range such as --array=0-{count - 1}")
    # srun sets SLURM_STEP_NUM_TASKS; a batch script alone has SLURM_PROCID=0 of SLURM_NTASKS
    # too, and must not take itself for task 0 of several.
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        tasks, rank = number("SLURM_STEP_NUM_TASKS"), number("SLURM_PROCID")
        index, count = index * tasks + rank, count * tasks
        source = (source + ", " if source else "") + f"SLURM_PROCID={rank} of {tasks}"
    elif source is None and number("SLURM_NTASKS", 1) > 1:
        raise ConfigError("--shard=auto: this job has several tasks but this is not an srun task; "
                          "start the command with srun, or give --shard=I/N")
    if source is None:
        raise ConfigError("--shard=auto: no Slurm array task or srun task here "
                          "(SLURM_ARRAY_TASK_ID, SLURM_PROCID unset); give --shard=I/N")
    return index, count


def shard(items: list, index: int, count: int) -> list:
    """Items index, index + count, index + 2 count, ...: the index-th of count disjoint slices."""
    return items[index::count]


def visible_gpus(environ=None) -> list[str]:
    """The GPUs a worker can be pinned to: CUDA_VISIBLE_DEVICES when set, else what
    `nvidia-smi -L` lists; none on a machine without NVIDIA GPUs. Imports no TensorFlow
    (which would take the GPUs for this process)."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def worker_environments(workers: int, environ=None, gpus=None, cpus=None) -> list[dict]:
    """One environment per local worker: pinned to one GPU each (round robin) where there
    are GPUs, and the CPU threads split between workers (TensorFlow's and OpenMP's pools)."""
    environ = dict(os.environ if environ is None else environ)
    gpus = visible_gpus(environ) if gpus is None else gpus
    cpus = cpus or len(os.sched_getaffinity(0))
    threads = str(max(1, cpus // workers))
    envs = []
    for k in range(workers):
        env = dict(environ, TF_NUM_INTRAOP_THREADS=threads, OMP_NUM_THREADS=threads,
                   TF_NUM_INTEROP_THREADS=str(min(2, int(threads))))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        envs.append(env)
    return envs


def run_workers(arguments: list[str], workers: int, index: int = 0, count: int = 1,
                module: str = "n2s_tf.cli.denoise") -> int:
    """Run `workers` processes of `python -m module *arguments --shard=...`, worker k on
    sub-shard k of shard index/count (interleaved slices compose: shard index + count*k of
    count*workers), and wait for all. Returns 0 if all succeeded, else 1 (2 if every
    failing worker stopped on a user error). Interrupting the parent stops the workers."""
    import n2s_tf

    root = os.path.dirname(os.path.dirname(os.path.abspath(n2s_tf.__file__)))
    envs = worker_environments(workers)
    processes = []
    try:
        for k, env in enumerate(envs):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            command = [sys.executable, "-m", module, *arguments,
                       f"--shard={index + count * k}/{count * workers}", "--workers=1"]
            processes.append(subprocess.Popen(command, env=env))
        codes = [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    failing = [code for code in codes if code]
    print(f"workers: {workers} finished, exit codes {', '.join(map(str, codes))}", file=sys.stderr, flush=True)
    if not failing:
        return 0
    return 2 if all(code == 2 for code in failing) else 1


# ----------------------------------------------------------------------------- running


def check_fits(image: io.Image, model) -> None:
    """Refuse, naming the file and what to do, an image the model (an export.LoadedModel) cannot take."""
    if model.ndim == 3 and image.kind != "volume":
        what = "a stack of 2D images" if image.kind == "stack" else "a 2D image"
        raise ImageFileError(f"{image.source} is {what}, but the model denoises 3D volumes; "
                             f"use a 2D model (--model)")
    if model.ndim == 2 and image.kind == "volume":
        raise ImageFileError(f"{image.source} is a 3D volume, but the model denoises 2D images; use a 3D model "
                             f"(--model), or name the file .mrcs to denoise it plane by plane")
    channels = image.data.shape[-1]
    if channels != model.channels:
        hint = (" (colour): convert it to grayscale first, or train a model on colour images with train.py"
                if channels in (3, 4) and model.channels == 1 else "")
        raise ImageFileError(f"{image.source} has {channels} channels{hint}; the model takes "
                             f"{model.channels} channel(s)")


@dataclass
class Summary:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (source, reason)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} of {self.total} "
                f"in {self.seconds:.1f} s")


@dataclass
class Steps:
    """What `run` does with a job, in three steps so that reading, computing and writing
    of consecutive files can overlap: read(job) -> data, compute(job, data) -> result,
    write(job, result)."""

    read: Callable[[Job], object]
    compute: Callable[[Job, object], object]
    write: Callable[[Job, object], None]


def run(jobs: list[Job], steps: Steps, skip_existing: bool = False, label: str = "", keep_going: bool = True,
        overlap: bool = False, out=None, err=None, clock=time.monotonic) -> Summary:
    """Read, compute and write each job (see Steps).

    skip_existing: jobs whose outputs all exist are skipped (counted, not processed).
    keep_going: a job whose step raises a UserError or an OSError is reported on `err` in
    one line and counted as failed; other exceptions, and all when not keep_going (a run
    of one file), propagate. One line per job on `out`, in job order, with its time, the
    mean time per processed file and the time left; with keep_going, a summary line at
    the end, also when interrupted.
    overlap: read the next file in a thread while this one computes, and write in
    another thread while the next computes (a job's line then comes when the next job's
    computation ends). Writes stay atomic; at most three files are in memory at once.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    summary = Summary(total=len(jobs))
    start = clock()
    prefix = f"{label} " if label else ""
    skipped = [skip_existing and job.complete() for job in jobs]
    work = [i for i, skip in enumerate(skipped) if not skip]
    reader, writer = (ThreadPoolExecutor(1), ThreadPoolExecutor(1)) if overlap else (_Inline(), _Inline())
    reads = {}

    def prefetch(position):
        if position < len(work):
            i = work[position]
            reads[i] = (clock(), reader.submit(steps.read, jobs[i]))

    def report(i, began, written):
        """The line of job i, whose last step is the future `written`."""
        tag = f"{prefix}[{i + 1}/{len(jobs)}]"
        try:
            written.result()
        except (UserError, OSError) as error:
            if not keep_going:
                raise
            reason = one_line(error) if isinstance(error, UserError) else \
                f"{type(error).__name__}: {one_line(error)}{_filename(error)}"
            summary.failed.append((jobs[i].source, reason))
            named = reason if jobs[i].source in reason else f"{jobs[i].source}: {reason}"
            print(f"{tag} failed: {named}", file=err, flush=True)
            return
        summary.done += 1
        per_file = (clock() - start) / (summary.done + len(summary.failed))
        wrote = f"wrote {' and '.join(jobs[i].outputs)} ({clock() - began:.1f} s"
        if keep_going:
            left = per_file * (len(jobs) - i - 1)
            print(f"{tag} {wrote}; {per_file:.1f} s/file, {_duration(left)} left)", file=out, flush=True)
        else:
            print(f"{wrote})", file=out, flush=True)

    writing = None  # (i, began, future) of the write in flight
    try:
        prefetch(0)
        for position, i in enumerate(work):
            for k in range(work[position - 1] + 1 if position else 0, i):  # the skipped jobs before this one
                if writing:  # keep the lines in job order
                    report(*writing)
                    writing = None
                summary.skipped += 1
                print(f"{prefix}[{k + 1}/{len(jobs)}] skipped {jobs[k].source}: {jobs[k].target} exists",
                      file=out, flush=True)
            began, read = reads.pop(i)
            if overlap:
                prefetch(position + 1)
            try:
                result = steps.compute(jobs[i], read.result())
                written = writer.submit(steps.write, jobs[i], result)
            except (UserError, OSError) as error:
                written = _failed(error)
            if writing:
                report(*writing)
            writing = (i, began, written)
            if not overlap:
                report(*writing)
                writing = None
                prefetch(position + 1)
        if writing:
            report(*writing)
            writing = None
        for k in range(work[-1] + 1 if work else 0, len(jobs)):
            summary.skipped += 1
            print(f"{prefix}[{k + 1}/{len(jobs)}] skipped {jobs[k].source}: {jobs[k].target} exists",
                  file=out, flush=True)
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)  # a write in flight completes: outputs stay whole
        summary.seconds = clock() - start
        stopped = summary.done + summary.skipped + len(summary.failed) < summary.total
        if keep_going:
            print(f"{prefix}{'stopped: ' if stopped else ''}{summary.line()}", file=err, flush=True)
    return summary


class _Inline:
    """The executor interface, running each call at once (run without overlap)."""

    def submit(self, function, *args):
        future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as error:
            if not isinstance(error, (UserError, OSError)):
                raise
            future.set_exception(error)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _failed(error):
    future = Future()
    future.set_exception(error)
    return future


def _filename(error):
    return f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
