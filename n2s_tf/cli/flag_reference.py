"""The flag tables in README.md, generated from the programs' own absl flags.

    python -m n2s_tf.cli.flag_reference            # rewrite the tables in README.md
    python -m n2s_tf.cli.flag_reference --check    # exit 1 if a table is not current

Each table sits between `<!-- flags:NAME -->` and `<!-- /flags:NAME -->` in the README and
lists the flags that n2s_tf's modules define for that program (absl's own are left out):
name, default and help, in the order they are defined. Runs in about a second.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from absl import app, flags

# Marker name -> the module whose import defines that program's flags.
PROGRAMS = {"train": "n2s_tf.cli.train", "test_single": "n2s_tf.cli.denoise"}
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

flags.DEFINE_string("readme", str(PACKAGE_ROOT / "README.md"), "the Markdown file holding the tables")
flags.DEFINE_boolean("check", False, "only compare: exit 1 if a table differs from the flags")
FLAGS = flags.FLAGS

# Run in a fresh interpreter per program: train.py and test_single.py both define --model,
# so their flags cannot live in one process's absl registry.
_COLLECT = """
import importlib, json, sys
from absl import flags
importlib.import_module(sys.argv[1])
rows = []
for module, defined in flags.FLAGS.flags_by_module_dict().items():
    if module.split(".")[0] == "n2s_tf":
        for flag in defined:
            rows.append(dict(name=flag.name, default=flag.default, boolean=flag.boolean, help=flag.help))
print(json.dumps(rows))
"""


def program_flags(module: str) -> list:
    """[{name, default, boolean, help}] of the flags that importing `module` defines."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                     os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _COLLECT, module], capture_output=True, text=True, env=env,
                            cwd=PACKAGE_ROOT)
    if result.returncode:
        raise RuntimeError(f"importing {module} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def _cell(text: str) -> str:
    """One table cell: one line, with the characters Markdown would read as markup escaped."""
    text = " ".join(str(text).split())
    for char, escaped in (("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def _default(flag: dict) -> str:
    value = flag["default"]
    if value is None:  # unset: the help says what that means
        return ""
    if flag["boolean"]:
        return f"`{str(bool(value)).lower()}`"
    code = " ".join(str(value).split()).replace("|", "\\|")  # a code span: only the pipe is markup
    return "`\"\"`" if value == "" else f"`{code}`"


def table(module: str) -> str:
    """The Markdown table of one program's flags."""
    lines = ["| flag | default | what it does |", "|---|---|---|"]
    for flag in program_flags(module):
        lines.append(f"| `--{flag['name']}` | {_default(flag)} | {_cell(flag['help'])} |")
    return "\n".join(lines)


def _section(name: str):
    return re.compile(rf"(<!-- flags:{name} -->\n)(.*?)(<!-- /flags:{name} -->)", re.DOTALL)


def updated(text: str) -> str:
    """`text` with every program's table replaced by the current one."""
    for name, module in PROGRAMS.items():
        section = _section(name)
        if not section.search(text):
            raise ValueError(f"no <!-- flags:{name} --> ... <!-- /flags:{name} --> markers")
        text = section.sub(lambda m, module=module: m.group(1) + table(module) + "\n" + m.group(3), text, count=1)
    return text


def main(argv):
    del argv
    path = Path(FLAGS.readme)
    text = path.read_text(encoding="utf-8")
    try:
        new = updated(text)
    except ValueError as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.check:
        if new != text:
            print(f"{path}: the flag tables are not current; run python -m n2s_tf.cli.flag_reference",
                  file=sys.stderr)
            sys.exit(1)
        print(f"{path}: the flag tables are current")
        return
    if new != text:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: flag tables of {', '.join(PROGRAMS)} {'rewritten' if new != text else 'already current'}")


if __name__ == "__main__":
    app.run(main)
