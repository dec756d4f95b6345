"""README.md's flag tables are generated from the absl flags and must be current."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def flag_reference(*args):
    return subprocess.run([sys.executable, "-m", "n2s_tf.cli.flag_reference", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_readme_flag_tables_are_current():
    result = flag_reference("--check")
    assert result.returncode == 0, (result.stderr + "\nrun: python -m n2s_tf.cli.flag_reference")[-2000:]


def test_a_stale_table_is_found_and_rewritten(tmp_path):
    with open(README, encoding="utf-8") as f:
        current = f.read()
    rows = [line for line in current.splitlines() if line.startswith("| `--tta` |")]
    assert len(rows) == 1, "test_single.py's table should list --tta once"
    stale = tmp_path / "README.md"
    stale.write_text(current.replace(rows[0] + "\n", ""), encoding="utf-8")

    result = flag_reference("--check", f"--readme={stale}")
    assert result.returncode == 1 and "not current" in result.stderr
    assert flag_reference(f"--readme={stale}").returncode == 0
    assert stale.read_text(encoding="utf-8") == current


def test_missing_markers_are_a_one_line_error(tmp_path):
    bare = tmp_path / "README.md"
    bare.write_text("# no tables here\n", encoding="utf-8")
    result = flag_reference("--check", f"--readme={bare}")
    assert result.returncode == 2 and "<!-- flags:train -->" in result.stderr


def test_the_readme_stays_a_five_minute_read():
    """README.md is for users, at most 15 KB (the tables with commands live in docs/)."""
    assert os.path.getsize(os.path.join(ROOT, "README.md")) <= 15_000
