"""The ``invaders`` command: its overview lists every job without importing TensorFlow, and each job tells a
bad argument in one line with exit code 2, before any work."""

import re
import subprocess
import sys

import pytest
from conftest import REPO

from invaders.cli import BENCHMARKS, JOBS, main

# Every command of `invaders server` (invaders.tracking.server's, and import).
SERVER_COMMANDS = (
    "start stop status add-user users reset-password remove-user passwd backup restore upgrade supervise unit import"
).split()


def test_the_overview_lists_every_job_and_imports_nothing_heavy():
    code = (
        "import sys; from invaders.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit as exit: assert exit.code == 0, exit.code\n"
        "print(sorted({'tensorflow', 'mlflow', 'ray', 'pandas'} & set(sys.modules)))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.splitlines()[-1] == "[]", "imported before a job was chosen"
    for name in ("train", "evaluate", "report", "ship", "serve", "ui", "sweep", "server", "bench", "experiment"):
        assert f"\n  {name} " in shown, name


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fly"],
        ["baseline", "--bogus"],
        ["build-model", "--bogus"],
        ["train", "--bogus"],
        ["evaluate", "--agent", "shipped/dqn-1m"],  # without --output
        ["report", "extra"],
        ["experiment", "-S", "train.steps"],  # no value
        ["ship"],  # no name
        ["serve", "--port", "0"],
        ["serve", "--agent", "weights.npz"],
        ["sweep"],  # no sweep file
        ["server"],  # no server command
        ["server", "start", "--port", "many"],
        ["server", "restore"],  # no archive
        ["server", "backup", "--keep", "all"],
        ["server", "add-user", "alice"],  # no access
        ["server", "import"],  # no store
        ["server", "import", "/nonexistent/mlflow.db"],
        ["server", "--login", "alice.env", "import", "mlflow.db"],  # import copies as the admin or the env's user
        ["ui", "--port", "0"],
        ["ui", "extra"],
        ["bench", "fly"],  # no such benchmark
    ],
    ids=" ".join,
)
def test_a_bad_argument_is_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and not out
    assert len(err.splitlines()) == 1 and "error" in err, err


def test_every_job_answers_help_under_its_own_name(capsys):
    for name in JOBS:
        with pytest.raises(SystemExit) as exit:
            main([name, "--help"])
        assert exit.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: invaders {name} "), name


@pytest.mark.parametrize(
    "argv",
    [["server", *command.split()] for command in SERVER_COMMANDS] + [["server", "--dir", "elsewhere", "import"]],
    ids=" ".join,
)
def test_every_server_command_answers_help(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: invaders server {argv[-1]} ")


def test_the_servers_help_names_every_command_with_import(capsys):
    with pytest.raises(SystemExit):
        main(["server", "--help"])
    shown = capsys.readouterr().out
    for command in SERVER_COMMANDS:
        assert command in shown, command
    assert shown.rstrip().splitlines()[-1].startswith("and: import DB ")


@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_every_benchmark_of_the_checkout_answers_help_and_tells_a_bad_argument_in_one_line(
    benchmark, monkeypatch, capsys
):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the job puts benchmarks/ first, as python does
    with pytest.raises(SystemExit) as exit:
        main(["bench", benchmark, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: invaders bench {benchmark} ")
    with pytest.raises(SystemExit) as exit:
        main(["bench", benchmark, "--bogus"])
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and not out
    assert err.startswith(f"invaders bench {benchmark}: error: ") and len(err.splitlines()) == 1, err


def test_bench_is_the_speed_benchmark_without_a_name(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--capacity", "many"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.startswith("invaders bench speed: error: argument --capacity")


def test_the_makefile_runs_its_jobs_through_the_one_command():
    """A Make target that runs a job calls `invaders JOB`, not a module, a script of benchmarks/ or an older
    console command."""
    makefile = (REPO / "Makefile").read_text()
    server = re.search(r"^SERVER = (.+)$", makefile, re.MULTILINE).group(1)
    recipes = [line.strip().replace("$(SERVER)", server) for line in makefile.splitlines() if line.startswith("\t")]
    older = ("python -m invaders", "python benchmarks/", "invaders-", "mlflow server", "mlflow models serve")
    assert not [line for line in recipes if any(command in line for command in older)]
    jobs = {line.split()[1] for line in recipes if line.startswith("invaders ")}
    assert {"ui", "server", "serve", "sweep", "bench", "ship"} <= jobs <= set(JOBS)


def test_bench_outside_a_checkout_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["bench"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
