"""Batch runs (n2s_tf/batch.py): planning checks, shards, per-file failures, resuming, RELION star files.

In-process where the logic allows; the few subprocess runs of test_single.py are at the end.
"""

import io as pyio
import os
import signal
import subprocess
import sys
import types

import mrcfile
import numpy as np
import pytest
import starfile

from n2s_tf import batch, io
from n2s_tf.errors import ConfigError, ImageFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# ----------------------------------------------------------------------------- planning


def test_plan_puts_many_inputs_in_the_output_folder(tmp_path):
    inputs = [touch(tmp_path / "in" / n) for n in ("a.mrc", "b.mrc")]
    jobs = batch.plan(inputs, str(tmp_path / "out"), str(tmp_path / "views"))
    assert [j.target for j in jobs] == [str(tmp_path / "out" / n) for n in ("a.mrc", "b.mrc")]
    assert [j.preview for j in jobs] == [str(tmp_path / "views" / n) for n in ("a.png", "b.png")]
    one = batch.plan(inputs[:1], str(tmp_path / "one.tif"))
    assert one[0].target == str(tmp_path / "one.tif")


def test_plan_refuses_collisions_and_bad_outputs_before_any_work(tmp_path):
    same = [touch(tmp_path / d / "t.npy") for d in ("x", "y")]
    with pytest.raises(ConfigError, match="would both be"):
        batch.plan(same, str(tmp_path / "out") + "/")
    single = same[:1]
    with pytest.raises(ConfigError, match="the preview .* would both be"):
        batch.plan(single, str(tmp_path / "o.png"), str(tmp_path / "o.png"))
    with pytest.raises(ConfigError, match="would overwrite its input"):
        batch.plan(single, same[0])
    with pytest.raises(ConfigError, match="overwrite the input"):  # a preview onto another input
        batch.plan([touch(tmp_path / "p" / "a.tif"), touch(tmp_path / "p" / "a.png")],
                   str(tmp_path / "out") + "/", str(tmp_path / "p"))
    with pytest.raises(ConfigError, match="names one file, but there are 2 inputs"):
        batch.plan(same, str(tmp_path / "one.npy"))
    assert not (tmp_path / "one.npy").exists()
    with pytest.raises(ConfigError, match="unsupported file type '.jp2'"):
        batch.plan(single, str(tmp_path / "out.jp2"))
    with pytest.raises(ConfigError, match="does not exist"):
        batch.plan(single, str(tmp_path / "missing" / "out.npy"))
    with pytest.raises(ConfigError, match="--input is empty"):
        batch.list_inputs("")


def test_existing_outputs_are_refused_unless_replaced_or_kept(tmp_path):
    jobs = batch.plan([touch(tmp_path / "a.npy"), touch(tmp_path / "b.npy")], str(tmp_path / "out") + "/")
    batch.check_existing(jobs, overwrite=False, skip_existing=False)
    touch(jobs[1].target)
    with pytest.raises(ConfigError, match="--overwrite .* --skip_existing"):
        batch.check_existing(jobs, overwrite=False, skip_existing=False)
    batch.check_existing(jobs, overwrite=True, skip_existing=False)
    batch.check_existing(jobs, overwrite=False, skip_existing=True)
    with pytest.raises(ConfigError, match="contradict"):
        batch.check_existing(jobs, overwrite=True, skip_existing=True)


# ----------------------------------------------------------------------------- sharding


def test_shards_cover_every_input_exactly_once():
    items = [f"m{i:03d}.mrc" for i in range(23)]
    for count in (1, 2, 5, 30):
        parts = [batch.shard(items, index, count) for index in range(count)]
        flat = [item for part in parts for item in part]
        assert sorted(flat) == items and len(flat) == len(set(flat))
    assert batch.shard(items, 1, 5) == items[1::5]


@pytest.mark.parametrize("text,env,expected", [
    (None, {}, (0, 1)),
    ("2/4", {}, (2, 4)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (3, 4)),
    # --array=1-4: ids from 1
    ("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (0, 4)),
    # --array=0-10:5 -> ids 0, 5, 10
    ("auto", {"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_STEP": "5"}, (2, 3)),
    ("auto", {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "3", "SLURM_NTASKS": "3"}, (1, 3)),
    # an array task running 2 srun tasks: each array task's shard split again
    ("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "1",
              "SLURM_STEP_NUM_TASKS": "2"}, (3, 4)),
])
def test_parse_shard(text, env, expected):
    assert batch.parse_shard(text, env) == expected


@pytest.mark.parametrize("text,env,words", [
    ("2/2", {}, "0 <= I < N"),
    ("1-2", {}, "must be I/N"),
    ("auto", {}, "no Slurm array task"),
    # a batch script of a --ntasks=4 job, not started through srun, is not task 0 of 4
    ("auto", {"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, "not an srun task"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, "array range"),
])
def test_parse_shard_refuses(text, env, words):
    with pytest.raises(ConfigError, match=words):
        batch.parse_shard(text, env)


def test_worker_environments_pin_gpus_and_split_threads():
    envs = batch.worker_environments(3, environ={"PATH": "/bin"}, gpus=["0", "1"], cpus=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert all(e["TF_NUM_INTRAOP_THREADS"] == "5" and e["OMP_NUM_THREADS"] == "5" for e in envs)
    cpu_only = batch.worker_environments(2, environ={}, gpus=[], cpus=2)
    assert all("CUDA_VISIBLE_DEVICES" not in e and e["TF_NUM_INTRAOP_THREADS"] == "1" for e in cpu_only)
    assert batch.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert batch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


# ----------------------------------------------------------------------------- running


def steps(read=None, compute=None, write=None):
    return batch.Steps(read=read or (lambda job: job.source), compute=compute or (lambda job, data: data),
                       write=write or (lambda job, result: touch(job.target)))


@pytest.mark.parametrize("overlap", [False, True])
def test_run_reports_bad_files_in_one_line_and_goes_on(tmp_path, overlap):
    jobs = batch.plan([touch(tmp_path / f"{n}.npy") for n in "abcde"], str(tmp_path / "out") + "/")
    batch.make_folders(jobs)

    def read(job):
        if job.source.endswith("b.npy"):
            raise ImageFileError(f"cannot read '{job.source}': truncated data")
        return job.source

    def write(job, result):
        if job.source.endswith("c.npy"):
            raise PermissionError(13, "Permission denied", job.target)
        touch(job.target)

    out, err = pyio.StringIO(), pyio.StringIO()
    summary = batch.run(jobs, steps(read=read, write=write), overlap=overlap, out=out, err=err)
    assert (summary.done, summary.skipped, len(summary.failed)) == (3, 0, 2)
    lines = err.getvalue().splitlines()
    assert lines[0] == f"[2/5] failed: cannot read '{jobs[1].source}': truncated data"
    assert lines[1].startswith(f"[3/5] failed: {jobs[2].source}: PermissionError: Permission denied")
    assert lines[2].startswith("done 3, skipped 0, failed 2 of 5 in ")
    written = out.getvalue().splitlines()
    assert [line.split("]")[0] for line in written] == ["[1/5", "[4/5", "[5/5"]
    assert written[0].startswith(f"[1/5] wrote {jobs[0].target} (") and "s/file" in written[0] and "left)" in written[0]

    # A rerun that keeps what exists computes only the rest, its lines in job order.
    seen, out = [], pyio.StringIO()
    summary = batch.run(jobs, steps(compute=lambda job, data: seen.append(job.source)), skip_existing=True,
                        overlap=overlap, out=out, err=pyio.StringIO())
    assert seen == [jobs[1].source, jobs[2].source] and summary.skipped == 3 and summary.done == 2
    assert [line.split()[0] for line in out.getvalue().splitlines()] == [f"[{n}/5]" for n in range(1, 6)]


@pytest.mark.parametrize("overlap", [False, True])
def test_run_lets_programming_errors_and_single_file_errors_through(tmp_path, overlap):
    jobs = batch.plan([touch(tmp_path / "a.npy"), touch(tmp_path / "b.npy")], str(tmp_path / "out") + "/")

    def broken(job, data):
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        batch.run(jobs, steps(compute=broken), overlap=overlap, out=pyio.StringIO(), err=pyio.StringIO())

    def unreadable(job):
        raise ImageFileError("cannot read it")

    with pytest.raises(ImageFileError):
        batch.run(jobs[:1], steps(read=unreadable), keep_going=False, out=pyio.StringIO(), err=pyio.StringIO())


def test_overlap_reads_the_next_file_while_this_one_computes(tmp_path):
    import threading

    jobs = batch.plan([touch(tmp_path / f"{n}.npy") for n in "abc"], str(tmp_path / "out") + "/")
    batch.make_folders(jobs)
    events, lock = [], threading.Lock()

    def log(what, job):
        with lock:
            events.append((what, os.path.basename(job.source)))

    def compute(job, data):
        log("compute", job)
        if job.source.endswith("a.npy"):
            for _ in range(500):  # until b's read has started, at most 5 s
                if ("read", "b.npy") in events:
                    break
                threading.Event().wait(0.01)
        log("computed", job)
        return data

    batch.run(jobs, steps(read=lambda job: log("read", job), compute=compute), overlap=True,
              out=pyio.StringIO(), err=pyio.StringIO())
    assert events.index(("read", "b.npy")) < events.index(("computed", "a.npy"))  # read while a computed
    assert sorted(os.listdir(tmp_path / "out")) == ["a.npy", "b.npy", "c.npy"]


def test_sigterm_while_writing_leaves_no_file_and_stale_parts_are_removed(tmp_path):
    from n2s_tf.cli import common

    target = str(tmp_path / "a.npy")
    previous = signal.signal(signal.SIGTERM, common._terminate)
    try:
        with pytest.raises(common.Terminated):
            with io._atomic_target(target, overwrite=False) as temporary:
                touch(temporary)
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == []
    # A signal during TensorFlow's import arrives wrapped by the C extension's initialization.
    try:
        try:
            raise common.Terminated()
        except common.Terminated as terminated:
            raise ImportError("initialization failed") from terminated
    except ImportError as wrapped:
        assert isinstance(common._interruption(wrapped), common.Terminated)
    assert common._interruption(ImportError("no module")) is None
    # What SIGKILL leaves: a hidden part file of the target; the next write of it removes it,
    # and leaves other targets' part files alone.
    stale, other = touch(tmp_path / ".a.0badc0de.part.npy"), touch(tmp_path / ".b.0badc0de.part.npy")
    io.write_image(target, np.zeros((4, 4), np.float32))
    assert os.path.exists(target) and not os.path.exists(stale) and os.path.exists(other)


# ----------------------------------------------------------------------------- RELION


def write_mrc(path, seed=0, shape=(40, 48)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    return str(path)


def relion_project(root, names=("a", "b", "c")):
    """A RELION project: MotionCorr/job002/corrected_micrographs.star naming micrographs
    relative to the project directory."""
    import pandas as pd

    movies = root / "MotionCorr" / "job002" / "Movies"
    for i, name in enumerate(names):
        write_mrc(movies / f"{name}.mrc", seed=i)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographPixelSize": [0.854]})
    micrographs = pd.DataFrame({"rlnMicrographName": [f"MotionCorr/job002/Movies/{n}.mrc" for n in names],
                                "rlnOpticsGroup": [1] * len(names), "rlnCtfPowerSpectrum": ["x"] * len(names)})
    star = root / "MotionCorr" / "job002" / "corrected_micrographs.star"
    starfile.write({"optics": optics, "micrographs": micrographs}, star)
    return str(star)


def test_star_names_resolve_from_the_project_dir_whatever_the_cwd(tmp_path, monkeypatch):
    star_path = relion_project(tmp_path / "project")
    for cwd in (tmp_path / "project", tmp_path):
        monkeypatch.chdir(cwd)
        inputs, star = batch.list_inputs(star_path)
        assert [os.path.realpath(p) for p in inputs] == [
            os.path.realpath(tmp_path / "project" / "MotionCorr" / "job002" / "Movies" / f"{n}.mrc") for n in "abc"]
        assert star.block == "micrographs"
    # The current folder wins over the star's folders when the name exists there too.
    monkeypatch.chdir(tmp_path)
    write_mrc(tmp_path / "MotionCorr" / "job002" / "Movies" / "a.mrc")
    assert batch.list_inputs(star_path)[0][0] == "MotionCorr/job002/Movies/a.mrc"
    touch(tmp_path / "broken.star", b"data_\nloop_\n_rlnSomething #1\n1\n")
    with pytest.raises(ImageFileError, match="no block has a rlnMicrographName column"):
        batch.list_inputs(str(tmp_path / "broken.star"))


def test_star_of_the_denoised_micrographs(tmp_path, monkeypatch):
    star_path = relion_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    inputs, star = batch.list_inputs(star_path)
    jobs = batch.plan(inputs, "Denoise/job010/")
    path = batch.star_output_path(star, jobs)
    assert path == os.path.join("Denoise", "job010", "corrected_micrographs_denoised.star")
    batch.make_folders(jobs)
    for job in (jobs[0], jobs[2]):  # b failed
        touch(job.target)
    assert batch.write_star(star, jobs, path) == 2
    tables = starfile.read(path, always_dict=True)
    assert list(tables["micrographs"]["rlnMicrographName"]) == ["Denoise/job010/a.mrc", "Denoise/job010/c.mrc"]
    assert list(tables["micrographs"]["rlnCtfPowerSpectrum"]) == ["x", "x"]
    assert float(tables["optics"]["rlnMicrographPixelSize"][0]) == pytest.approx(0.854)


# ----------------------------------------------------------------------------- CLI pieces


def test_images_a_model_cannot_take_are_refused_with_a_hint():
    def image(kind, shape):
        return types.SimpleNamespace(kind=kind, data=np.zeros(shape, np.float32), source="x.png")

    volume_model = types.SimpleNamespace(ndim=3, channels=1)
    with pytest.raises(ImageFileError, match="is a 2D image, but the model denoises 3D volumes"):
        batch.check_fits(image("image", (8, 8, 1)), volume_model)
    with pytest.raises(ImageFileError, match="is a stack of 2D images"):
        batch.check_fits(image("stack", (2, 8, 8, 1)), volume_model)
    plane_model = types.SimpleNamespace(ndim=2, channels=1)
    with pytest.raises(ImageFileError, match="convert it to grayscale"):
        batch.check_fits(image("image", (8, 8, 3)), plane_model)
    with pytest.raises(ImageFileError, match=r"name the file \.mrcs"):
        batch.check_fits(image("volume", (4, 8, 8, 1)), plane_model)
    batch.check_fits(image("stack", (2, 8, 8, 1)), plane_model)


# ----------------------------------------------------------------------------- test_single.py


def start(*args, cwd=None):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "test_single.py"), *args], cwd=cwd or ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run(*args, cwd=None):
    return finish(start(*args, cwd=cwd))


@pytest.mark.parametrize("args,words", [
    (["--tile=0"], "flag --tile=0: must be a positive number of pixels"),
    (["--tile=-5"], "flag --tile=-5"),
    (["--max_memory=0"], "flag --max_memory=0.0: must be a positive number of GB"),
    (["--max_memory=nan"], "flag --max_memory=nan"),
    (["--input="], "--input is empty"),
    (["--output=out.jp2"], "unsupported file type '.jp2'"),
    (["--output=same.png", "--preview=same.png"], "would both be"),
    (["--shard=3/3"], "--shard='3/3' must be I/N"),
    (["--overwrite", "--skip_existing"], "contradict"),
])
def test_denoise_flags_fail_in_one_line_before_loading_anything(tmp_path, args, words):
    result = run(*args, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and words in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []


def test_the_package_and_the_commands_import_without_tensorflow():
    """TensorFlow's C++ start-up lines are silenced by TF_CPP_MIN_LOG_LEVEL only when it is set
    before TensorFlow loads: cli/common.py sets it, so nothing before it may import TensorFlow."""
    code = "import sys, n2s_tf, n2s_tf.cli.denoise; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_help_shows_the_commands_own_flags():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "--skip_existing" in result.stdout and "--shard" in result.stdout and "Try --helpfull" not in result.stdout


def wrote(result):
    return [line.split(" wrote ")[1].split(" (")[0] for line in result.stdout.splitlines() if " wrote " in line]


def test_two_shards_of_a_star_file_with_a_corrupt_micrograph(tmp_path, tiny_export):
    star_path = relion_project(tmp_path, names=("a", "b", "c", "d", "e"))
    bad = tmp_path / "MotionCorr" / "job002" / "Movies" / "c.mrc"
    bad.write_bytes(b"not an MRC file at all" * 100)
    args = [f"--input={star_path}", "--output=Denoise/", f"--model={tiny_export}"]
    # As two Slurm array tasks would: at the same time.
    first, second = start(*args, "--shard=0/2", cwd=str(tmp_path)), start(*args, "--shard=1/2", cwd=str(tmp_path))
    first, second = finish(first), finish(second)  # shard 0: a, c, e; shard 1: b, d
    assert first.returncode == 1, first.stderr[-2000:]
    assert "Traceback" not in first.stderr
    failed = [line for line in first.stderr.splitlines() if "failed:" in line]
    assert len(failed) == 1 and "c.mrc" in failed[0]
    assert "shard 0/2 done 2, skipped 0, failed 1 of 3" in first.stderr
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(wrote(first) + wrote(second)) == [f"Denoise/{n}.mrc" for n in "abde"]
    # Each shard rewrites the star file of the outputs at its end; a rerun with --skip_existing
    # computes only what is missing (and tries the corrupt file again) and writes the complete one.
    rerun = run(*args, "--skip_existing", cwd=str(tmp_path))
    assert rerun.returncode == 1 and "done 0, skipped 4, failed 1 of 5" in rerun.stderr, rerun.stderr[-2000:]
    tables = starfile.read(tmp_path / "Denoise" / "corrected_micrographs_denoised.star", always_dict=True)
    assert sorted(tables["micrographs"]["rlnMicrographName"]) == [f"Denoise/{n}.mrc" for n in "abde"]
    assert "tiles" not in first.stderr  # tiny images: no periodic progress lines
    assert not [name for name in os.listdir(tmp_path / "Denoise") if name.startswith(".")]


def test_two_local_workers_resume_a_folder(tmp_path, tiny_export):
    for i in range(5):
        write_mrc(tmp_path / "mics" / f"m{i}.mrc", seed=i)
    (tmp_path / "out").mkdir()
    with mrcfile.new(str(tmp_path / "out" / "m0.mrc")) as mrc:  # done by a killed run
        mrc.set_data(np.zeros((40, 48), np.float32))
    touch(tmp_path / "out" / ".m3.1234abcd.part.mrc", b"")  # and what it left half-written
    with open(tmp_path / "mics" / "m4.mrc", "r+b") as f:  # old software's file: no map ID
        f.seek(208)
        f.write(b"    ")
    result = run(f"--input={tmp_path / 'mics'}", f"--output={tmp_path / 'out'}", f"--model={tiny_export}",
                 "--workers=2", "--skip_existing", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(wrote(result)) == [str(tmp_path / "out" / f"m{i}.mrc") for i in range(1, 5)]
    assert "skipped" in result.stdout and "exit codes 0, 0" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "m4.mrc" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "permissive mode" in warnings[0]
    assert "cpu_feature_guard" not in result.stderr and "InitializeLog" not in result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == [f"m{i}.mrc" for i in range(5)]
    with mrcfile.open(str(tmp_path / "out" / "m0.mrc")) as mrc:
        assert not mrc.data.any()  # kept, not computed again
