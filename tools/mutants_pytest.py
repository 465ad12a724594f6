"""pytest plugin for the mutation pass (`make mutants`), loaded by mutmut from pyproject's [tool.mutmut].

pyproject's [tool.invaders.mutants.guards] names, for each mutated module, the test files that judge
its mutants. In mutmut's runs this plugin

- collects only those test files (the others are not even imported: some need the whole repository,
  which mutmut's copy, mutants/, does not hold);
- runs a mutant (MUTANT_UNDER_TEST names one) only against its own module's guard files (among the
  tests that mutmut saw calling the mutated function; a module not in the table keeps them all, and a
  mutant left with none reports "no tests");
- runs those tests fastest first, by the durations mutmut recorded on the clean code, so that a mutant
  that a unit test kills dies in a fraction of a second instead of after the slow training tests;
- puts the mutated copy on the PYTHONPATH of the Python processes that tests start, so that they run
  the same mutant as the test (mutmut names it in MUTANT_UNDER_TEST, which they inherit) instead of
  the original code that the editable install points at; in mutmut's stats run, the functions such a
  process calls count as called by the test that started it (mutants_site/sitecustomize.py).
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from pathlib import Path

import pytest


@functools.cache
def guards(rootpath: Path) -> dict[str, list[str]]:
    try:
        return tomllib.loads((rootpath / "pyproject.toml").read_text())["tool"]["invaders"]["mutants"]["guards"]
    except (OSError, KeyError, ValueError):
        return {}


def pytest_configure(config):
    if "MUTANT_UNDER_TEST" in os.environ:  # set here, in mutmut's test processes, once mutants/src exists
        root = Path(config.rootpath)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root / "tools" / "mutants_site")])
        os.environ["MUTANTS_CHILD_HITS"] = str(root / f"child-hits.{os.getpid()}")


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook, which files the test's functions
def pytest_runtest_teardown(item, nextitem):
    hits_file = Path(os.environ.get("MUTANTS_CHILD_HITS", "-"))
    if os.environ.get("MUTANT_UNDER_TEST") == "stats" and hits_file.exists():
        from mutmut.state import state

        state()._stats.update(hits_file.read_text().split())
        hits_file.unlink()


def pytest_ignore_collect(collection_path: Path, config):
    table = guards(Path(config.rootpath))
    if table and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        path = collection_path.relative_to(config.rootpath).as_posix()
        if all(path not in files for files in table.values()):
            return True
    return None


def pytest_collection_modifyitems(session, config, items):
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if "__mutmut_" not in mutant:
        return  # mutmut's stats, clean and forced-fail runs
    rootpath = Path(config.rootpath)
    module = mutant.partition("__mutmut_")[0].rpartition(".")[0]  # package.module.x_function__mutmut_3
    allowed = guards(rootpath).get("src/" + module.replace(".", "/") + ".py")
    if allowed is not None:
        dropped = [item for item in items if item.nodeid.partition("::")[0] not in allowed]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if item.nodeid.partition("::")[0] in allowed]
    try:
        durations = json.loads((rootpath / "mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
