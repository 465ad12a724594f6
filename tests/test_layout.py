"""The package's shape: its modules and its parts import each other without a circle, and only the tracking package
talks to MLflow (the RL code returns numbers and never knows where they go)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "invaders"


def imports_of(path: Path, type_hints: bool = False, in_functions: bool = True) -> set[str]:
    """Every module ``path`` imports at run time, at any depth of the file (inside functions too unless not
    ``in_functions``); with ``type_hints``, also those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    if not in_functions:
        tree.body = [
            node for node in tree.body if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
    hints_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in hints_only and not type_hints:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a module imported by name
    return names


def module_name(path: Path) -> str:
    """``src/invaders/agents/dqn.py`` -> ``invaders.agents.dqn``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("invaders", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to: ``invaders.agents.dqn`` -> ``agents``."""
    return module.split(".")[1]


def import_graph(in_functions: bool = True) -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, type hints included (a reader still
    follows them). Between the package's parts every import counts, inside functions too (a lazy import defers
    the cost of a dependency, it does not remove it); between two modules, what runs when they are imported."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        module: {name for name in imports_of(path, True, in_functions) if name in modules} - {module}
        for module, path in modules.items()
    }


def circle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` (``[a, b, a]``), or None when it has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for following in sorted(graph.get(node, ())):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following]
            if following not in state and (found := visit(following, [*path, following])):
                return found
        state[node] = "done"
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node, [node]))), None)


def test_modules_of_the_package_import_each_other_without_a_circle():
    graph = import_graph(in_functions=False)
    assert "invaders.config" in graph["invaders.backends"], "the graph was read"
    assert circle_in(graph) is None, f"import circle: {' -> '.join(circle_in(graph))}"


def test_parts_of_the_package_import_each_other_without_a_circle():
    parts: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        if module != "invaders":
            parts.setdefault(part_of(module), set()).update(part_of(name) for name in imported if name != "invaders")
    parts = {part: used - {part} for part, used in parts.items()}
    assert "replay" in parts["agents"], "the graph was read"
    assert circle_in(parts) is None, f"import circle between the package's parts: {' -> '.join(circle_in(parts))}"


def test_the_circle_check_finds_a_circle():
    assert circle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert circle_in({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


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
