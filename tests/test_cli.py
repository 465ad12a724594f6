"""The ``invaders`` command: its overview lists every job without importing TensorFlow, and each job tells a
bad argument in one line with exit code 2, before any work."""

import subprocess
import sys

import pytest

from invaders.cli import JOBS, main


def test_the_overview_lists_every_job_and_imports_nothing_heavy():
    code = (
        "import sys; from invaders.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit as exit: assert exit.code == 0, exit.code\n"
        "print(sorted({'tensorflow', 'mlflow', 'ray', 'pandas'} & set(sys.modules)))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.splitlines()[-1] == "[]", "imported before a job was chosen"
    for name in ("train", "evaluate", "report", "ship", "serve", "sweep", "server", "bench", "experiment"):
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
    ],
    ids=" ".join,
)
def test_a_bad_argument_is_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and not out
    assert len(err.splitlines()) == 1 and "error" in err, err


def test_every_job_answers_help(capsys):
    for name in JOBS:
        if name == "bench":  # the checkout's script: its options need its imports (TensorFlow)
            continue
        with pytest.raises(SystemExit) as exit:
            main([name, "--help"])
        assert exit.value.code == 0, name
        assert capsys.readouterr().out.startswith("usage: "), name  # the server's parser names its module


def test_bench_outside_a_checkout_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["bench"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
