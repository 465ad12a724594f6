"""The package's shape: its parts import each other without a circle, and only the tracking module
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


def test_only_the_tracking_module_imports_mlflow():
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "mlflow" for name in imports_of(path))
    )
    assert importers == ["tracking/mlflow_tracking.py"]
