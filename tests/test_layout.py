"""The package's shape: its parts import each other without a circle, and only the tracking package
talks to MLflow (the RL code returns numbers and never knows where they go)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "invaders"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports at run time, at any depth of the file (not those for type hints only)."""
    tree = ast.parse(path.read_text())
    hints_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "invaders":
                names.update(f"invaders.{alias.name}" for alias in node.names)
    return names


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to: ``invaders.agents.dqn`` -> ``agents``."""
    return module.split(".")[1]


def test_parts_of_the_package_import_each_other_without_a_circle():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("invaders", *path.relative_to(PACKAGE).with_suffix("").parts))
        if module.endswith("__init__") or module == "invaders.__main__":
            continue
        part = part_of(module)
        used = {part_of(name) for name in imports_of(path) if name.startswith("invaders.")}
        graph.setdefault(part, set()).update(used - {part})

    def circle_through(start: str, node: str, seen: list[str]) -> list[str] | None:
        for following in sorted(graph.get(node, ())):
            if following == start:
                return [*seen, following]
            if following not in seen:
                found = circle_through(start, following, [*seen, following])
                if found:
                    return found
        return None

    circles = [circle for part in sorted(graph) if (circle := circle_through(part, part, [part]))]
    assert not circles, f"import circles: {circles}"
    assert "agents" in graph["resume"] or "checkpoints" in graph["agents"], "the graph was read"


def test_only_the_tracking_package_imports_mlflow():
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "mlflow" for name in imports_of(path))
    )
    assert "tracking/mlflow_tracking.py" in importers
    assert all(importer.startswith("tracking/") for importer in importers), importers


def module_file(module: str) -> Path | None:
    """The file of an ``invaders`` module or package, None for anything else."""
    if module != "invaders" and not module.startswith("invaders."):
        return None
    base = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def files_run_by(script: Path) -> set[Path]:
    """The script and every package file it imports, directly or not, at any depth of each file."""
    seen, pending = set(), [script]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path):
            found = module_file(name)
            if found:
                pending.append(found)
    return seen


def test_every_stage_depends_on_the_code_it_runs():
    """dvc.yaml lists, for each stage, every module its script runs: a change there reruns the stage."""
    import yaml

    repo = PACKAGE.parents[1]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        script = repo / next(word for word in stage["cmd"].split() if word.startswith("stages/"))
        deps = [repo / dep for dep in stage["deps"] if "${" not in dep]
        missing = sorted(
            str(path.relative_to(repo))
            for path in files_run_by(script)
            if path.name != "__init__.py" and not any(path == dep or dep in path.parents for dep in deps)
        )
        assert not missing, f"dvc.yaml stage {name} runs these without depending on them: {missing}"
