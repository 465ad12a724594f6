"""`make mutants`: a mutation-testing pass (mutmut) over the core modules, ending with a summary.

What is mutated, and which tests judge it, is mutmut's configuration in pyproject.toml, [tool.mutmut]:
``only_mutate`` lists the modules, ``pytest_add_cli_args_test_selection`` the test files (extend that
list when a test file guards a core module), ``pytest_add_cli_args`` the marker filter (no e2e).
mutmut records which of those tests call each function and runs a mutant only against them, limited
to its module's guard files ([tool.invaders.mutants.guards]) and fastest first (tools/mutants_pytest.py),
stopping at the first failure.

Each pass starts afresh (a mutants/ folder left by an earlier pass may hold stale results);
``--keep`` reuses it, so that only new or changed mutants run. Extra arguments go to ``mutmut run``,
e.g. mutant names or globs: ``make mutants ARGS='invaders.agents.dqn_math*'``.
Afterwards ``.venv/bin/mutmut show NAME`` prints one mutant's diff and ``mutmut browse`` explores them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.format_utils import orig_function_and_class_names_from_key

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
LOG = MUTANTS / "mutmut-run.log"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
PROGRESS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+) 🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)")
COLUMNS = ("killed", "survived", "no tests", "timeout")  # any other status goes to "other"
QUIET = (
    "also copying",
    "Running mutation testing",
    "Mutant results",
    "---",
    *"🎉🙁🫥⏰🤔🔇🧙💥🛑?",
)  # the summary says it
LISTED = ("survived", "no tests", "timeout", "suspicious", "segfault")


def run_mutmut(extra: list[str], workers: int) -> tuple[int, float]:
    """Run ``mutmut run``; its spinner output goes to mutants/mutmut-run.log, a progress line here."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the tests import mutmut's copy, mutants/src (see tools/mutants_pytest.py)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [str(Path(sys.executable).with_name("mutmut")), "run", "--max-children", str(workers), *extra]
    start = time.monotonic()
    MUTANTS.mkdir(exist_ok=True)
    with open(LOG, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        buffer, phase, shown, last_print = "", "", "", 0.0
        for chunk in iter(lambda: os.read(process.stdout.fileno(), 4096), b""):
            text = chunk.decode("utf-8", errors="replace")
            log.write(text)
            buffer += text
            *pieces, buffer = re.split(r"[\r\n]", buffer)
            for piece in pieces:
                piece = piece.strip(SPINNER + " ")
                match = PROGRESS.search(piece)
                if match:
                    done, total, killed, _, timeout, _, survived = match.groups()
                    line = f"  {done}/{total} mutants: {killed} killed, {survived} survived, {timeout} timeout"
                    if line != shown and (time.monotonic() - last_print > 30 or done == total):
                        print(f"{line}  ({time.monotonic() - start:.0f} s)", flush=True)
                        shown, last_print = line, time.monotonic()
                elif piece and piece != phase and not piece.startswith(QUIET):
                    if not piece.startswith(tuple("0123456789")):
                        print(f"  {piece}  ({time.monotonic() - start:.0f} s)", flush=True)
                    phase = piece
        code = process.wait()
    return code, time.monotonic() - start


def function_line(source: str, function: str, cls: str | None) -> tuple[int, int] | None:
    """(def line, last line) of ``function`` (a method of ``cls``) in a module's source."""
    scope = ast.parse(source).body
    if cls:
        classes = [node for node in scope if isinstance(node, ast.ClassDef) and node.name == cls]
        scope = classes[0].body if classes else []
    for node in scope:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            return node.lineno, node.end_lineno
    return None


def describe(name: str, path: str) -> tuple[int | None, list[str], list[str]]:
    """The file line a mutant changes, and its removed and added lines (from mutmut's function diff)."""
    diff = get_diff_for_mutant(name, path=path).splitlines()[2:]
    orig_line, first, removed, added = 0, None, [], []
    for line in diff:
        if line.startswith("@@"):
            orig_line = int(re.match(r"@@ -(\d+)", line).group(1))
        elif line.startswith("-"):
            first = orig_line if first is None else first
            removed.append(line[1:].strip())
            orig_line += 1
        elif line.startswith("+"):
            added.append(line[1:].strip())
        else:
            orig_line += 1
    function, cls = orig_function_and_class_names_from_key(name)
    source = (ROOT / path).read_text(encoding="utf-8")
    span = function_line(source, function.rpartition(".")[2], cls)
    if span is None or first is None:
        return None, removed, added
    # mutmut's diff starts at the function's first line (comments and decorators included) and is
    # dedented; anchor it on the ``def`` line, then check the text against the file.
    lines = source.splitlines()
    def_line, end_line = span
    candidates = [n for n in range(def_line - 20, end_line + 1) if 0 < n <= len(lines)]
    matching = [n for n in candidates if removed and lines[n - 1].strip() == removed[0]]
    if not matching:
        return None, removed, added
    # the removed line can repeat inside the function; take the occurrence the diff's offset points at
    estimate = def_line + first - 1
    return min(matching, key=lambda n: abs(n - estimate)), removed, added


def summary(elapsed: float, workers: int) -> None:
    rows, listed = [], []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        path = str(meta.relative_to(MUTANTS))[: -len(".meta")]
        statuses = [
            (name, status_by_exit_code[code]) for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()
        ]
        if not statuses:
            continue
        counts = {column: sum(status == column for _, status in statuses) for column in COLUMNS}
        unchecked = sum(status == "not checked" for _, status in statuses)
        other = len(statuses) - sum(counts.values()) - unchecked
        rows.append((path, len(statuses), counts, other, unchecked))
        listed += [(path, name, status) for name, status in statuses if status in LISTED]

    width = max([len(row[0]) for row in rows] + [len("total")])
    header = f"{'module':<{width}}  mutants  killed  survived  no tests  timeout  other"
    print("\n" + header + "\n" + "-" * len(header))
    totals = [0] * 6
    for path, total, counts, other, unchecked in rows:
        values = [total, *counts.values(), other]
        totals = [a + b for a, b in zip(totals, values)]
        note = f"  ({unchecked} not run)" if unchecked else ""
        print(
            f"{path:<{width}}  {values[0]:>7}  {values[1]:>6}  {values[2]:>8}  {values[3]:>8}  {values[4]:>7}  {values[5]:>5}{note}"
        )
    print("-" * len(header))
    print(
        f"{'total':<{width}}  {totals[0]:>7}  {totals[1]:>6}  {totals[2]:>8}  {totals[3]:>8}  {totals[4]:>7}  {totals[5]:>5}"
    )
    run = totals[0] - sum(row[4] for row in rows)
    if run and elapsed:
        print(
            f"\n{run} mutants in {elapsed / 60:.1f} min on {workers} workers: {elapsed / run:.1f} s per mutant (wall)"
        )

    if not listed:
        print("\nNo surviving mutant.")
        return
    print("\nMutants the tests did not kill; judge each: an equivalent mutant, or a gap a test should close.")
    print("no tests: no guard test calls the function; timeout: the tests ran 4x longer (mutmut counts it killed).")
    print("A mutant's whole diff: .venv/bin/mutmut show NAME")
    described = [(path, name, status, *describe(name, path)) for path, name, status in listed]
    described.sort(key=lambda row: (row[0], row[3] or 0))
    for path, name, status, line, removed, added in described:
        where = f"{path}:{line}" if line else f"{path} ({name.rpartition('.')[2].partition('__mutmut')[0]})"
        print(f"\n{where}  [{status}]  {name}")
        for text in removed:
            print(f"    - {text}")
        for text in added:
            print(f"    + {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="reuse the results of the previous pass in mutants/")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the previous pass")
    args, extra = parser.parse_known_args()
    os.chdir(ROOT)  # mutmut reads pyproject.toml and writes mutants/ in the current folder
    elapsed = 0.0
    if not args.summary_only:
        if not args.keep and MUTANTS.exists():
            shutil.rmtree(MUTANTS)
        code, elapsed = run_mutmut(extra, args.workers)
        if code != 0:
            lines = [
                line.strip(SPINNER).rstrip()
                for line in LOG.read_text(errors="replace").replace("\r", "\n").splitlines()
            ]
            print("\n".join([line for i, line in enumerate(lines) if line and line != lines[i - 1]][-60:]))
            print(f"mutmut run failed (exit {code}); its whole output: {LOG.relative_to(ROOT)}")
            return code
    summary(elapsed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
