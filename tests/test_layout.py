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
    assert "tracking/store.py" in importers
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


REPO = PACKAGE.parents[1]


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages, a ``foreach`` stage by its ``do`` body."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def code_run_by(stage: dict) -> set[Path]:
    """The files a stage's script runs; train's also every backend of the registry, which it loads by name."""
    from invaders.backends import REGISTRY

    script = REPO / next(word for word in stage["cmd"].split() if word.startswith("stages/"))
    roots = [script]
    if script.name == "train.py":
        roots += [module_file(entry.module) for entry in REGISTRY.values()]
    return {path for root in roots for path in files_run_by(root) if path.name != "__init__.py"}


def code_deps(stage: dict) -> list[Path]:
    """A stage's deps that are code (in ``stages/`` or ``src/``)."""
    return [REPO / dep for dep in stage["deps"] if "${" not in dep and dep.startswith(("stages/", "src/"))]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


def test_every_stage_depends_on_the_code_it_runs_and_on_no_other():
    """dvc.yaml lists, for each stage, every module its script runs: a change there reruns the stage; and
    nothing else: a change elsewhere (the team server, the report's code for train) leaves it alone."""
    for name, stage in dvc_stages().items():
        runs, deps = code_run_by(stage), code_deps(stage)
        missing = sorted(str(path.relative_to(REPO)) for path in runs if not covered(path, deps))
        assert not missing, f"dvc.yaml stage {name} runs these without depending on them: {missing}"
        listed = {path for dep in deps for path in ([dep] if dep.is_file() else dep.rglob("*.py"))}
        extra = sorted(str(path.relative_to(REPO)) for path in listed - runs if path.name != "__init__.py")
        assert not extra, f"dvc.yaml stage {name} depends on code it never runs: {extra}"


# What a checkpoint survives (invaders.resume): how often training logs, evaluates and saves, not what it learns.
LOGGING_ONLY = {"train.log_interval", "train.checkpoint_interval", "train.eval_interval", "train.eval_episodes"}


def read_params(stage: dict) -> set[str]:
    """A stage's params as dotted keys, a whole section as every key in it."""
    import yaml

    values = yaml.safe_load((REPO / "params.yaml").read_text())
    keys = set()
    for entry in stage.get("params", []):
        section, _, key = entry.partition(".")
        assert section in values and (not key or key in values[section]), f"{entry}: not in params.yaml"
        keys |= {entry} if key else {f"{section}.{name}" for name in values[section]}
    return keys


def test_every_stage_depends_only_on_params_its_code_reads():
    """A param a stage lists is read by the code it runs (``.<key>`` or ``.<section>`` in that code)."""
    for name, stage in dvc_stages().items():
        source = "\n".join(path.read_text() for path in code_run_by(stage))
        for entry in stage.get("params", []):
            attribute = entry.split(".")[-1]
            assert f".{attribute}" in source, f"dvc.yaml stage {name} depends on {entry}, which its code never reads"


def test_train_reruns_only_for_what_changes_the_trained_weights():
    """Editing the team server, its auth app, the report, a logging interval or the tracking experiment
    leaves train up to date; every other train key and the game's settings rerun it."""
    import yaml

    train = dvc_stages()["train"]
    deps = code_deps(train)
    for edited in ("tracking/server.py", "tracking/auth_app.py", "steps/report.py", "reporting/report.py"):
        assert not covered(PACKAGE / edited, deps), f"train depends on {edited}"
    params = read_params(train)
    assert not params & (LOGGING_ONLY | {"tracking.experiment"}), params & LOGGING_ONLY
    every_train_key = {f"train.{key}" for key in yaml.safe_load((REPO / "params.yaml").read_text())["train"]}
    assert every_train_key - LOGGING_ONLY <= params, every_train_key - LOGGING_ONLY - params
    assert {"env.id", "train.seed", "train.steps"} <= params


def test_no_output_keeps_a_stage_out_of_the_run_cache_and_metrics_travel_in_git():
    """DVC keeps no run-cache for a stage with a ``persist`` output or a plain ``outs`` one that is
    ``cache: false``: so none. Metrics, curves and game tables are ``cache: false`` (committed), weights,
    videos and the other files cached."""
    for name, stage in dvc_stages().items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                assert not options.get("persist"), f"{name}: {path} is persistent"
                in_git = kind != "outs"
                assert options.get("cache", True) is not in_git, f"{name}: {path} cache should be {not in_git}"
