"""The package installs: pyproject.toml declares what src/invaders imports, at ranges that admit the lock's pins
(what `make setup` installs), and its wheel holds the whole package and the console commands."""

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "invaders"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    """Every requirement of pyproject.toml, core and extras, but the extras that name the project itself."""
    extras = [text for group in PROJECT["optional-dependencies"].values() for text in group]
    requirements = [Requirement(text) for text in [*PROJECT["dependencies"], *extras]]
    return [requirement for requirement in requirements if canonicalize_name(requirement.name) != "invaders"]


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, separator, version = line.partition("==")
        if separator and not line.startswith("#"):
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_declared_package_is_pinned_in_the_lock_within_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{requirement}: the lock has {pins[name]}"
        for extra in requirement.extras:  # what mlflow[auth], ray[tune], psycopg[binary] add is locked too
            environment = {**default_environment(), "extra": extra}
            for text in importlib.metadata.requires(requirement.name) or ():
                added = Requirement(text)
                if added.marker and "extra" in str(added.marker) and added.marker.evaluate(environment):
                    assert canonicalize_name(added.name) in pins, f"{requirement} needs {added.name}: not locked"


def third_party_imports() -> set[str]:
    """The top-level names src/invaders imports, at any depth, that are neither the stdlib nor the package."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"invaders"}


def test_every_package_the_code_imports_is_declared():
    distributions = importlib.metadata.packages_distributions()
    names = {canonicalize_name(requirement.name) for requirement in declared()}
    imported = third_party_imports()
    assert {"tensorflow", "mlflow", "yaml"} <= imported, "the imports were read"
    undeclared = sorted(
        module
        for module in imported
        if not {canonicalize_name(distribution) for distribution in distributions.get(module, [module])} & names
    )
    assert not undeclared, f"imported by src/invaders, declared nowhere in pyproject.toml: {undeclared}"


def test_the_wheel_holds_the_package_and_its_commands(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside pyproject.toml
    shutil.copytree(PACKAGE, source / "src" / "invaders", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    subprocess.run([*command, "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("invaders-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        info = next(name.split("/")[0] for name in files if name.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    expected = {f"invaders/{path.relative_to(PACKAGE).as_posix()}" for path in PACKAGE.rglob("*.py")}
    assert not expected - files, f"missing from the wheel: {sorted(expected - files)}"
    for command_name in PROJECT["scripts"]:
        assert f"\n{command_name} = " in entry_points, command_name
    assert "Requires-Dist: tensorflow-cpu" in metadata and 'extra == "server"' in metadata

    # The wheel's own code, ahead of the editable install: `invaders --help` runs from it.
    code = "import invaders, invaders.cli; print(invaders.__file__); invaders.cli.main(['--help'])"
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(wheel)}
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(str(wheel)) and "\n  evaluate " in shown.stdout
