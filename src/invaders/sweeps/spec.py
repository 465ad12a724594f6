"""A sweep file: which ``params.yaml`` keys to vary, over which seeds, for how long, judged by what.

    # sweeps/learning-rate.yaml
    name: learning-rate              # the sweep's folder in sweep_results/ and its MLflow parent run
    steps: 100000                    # agent steps per trial (train.steps)
    seeds: [0, 1, 2]                 # train.seed: every configuration is trained once per seed
    params:                          # the same for every trial
      train.exploration_fraction: 0.5
    search:                          # one entry per varied key: grid, choice, uniform or loguniform
      train.learning_rate: {grid: [6.25e-5, 1.0e-4, 2.5e-4]}
    samples: 1                       # draws of the random (choice/uniform/loguniform) entries
    metric: score_mean               # evaluation metric the best configuration maximises
    early_stopping:                  # optional: Tune's ASHA on the training score
      grace_steps: 20000             # agent steps every trial gets before it can be stopped
      reduction_factor: 3
    trial_cpus: 1                    # CPUs a trial reserves (Ray resources)
    max_failures: 2                  # restarts from the last checkpoint after a worker or node dies

Reading a sweep validates every configuration it can produce with the project's own params checks, so a
bad file or an invalid combination is one line before any trial starts. Nothing here imports Ray.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invaders.backends import can_resume
from invaders.config import ConfigError, Params, build_params, with_overrides
from invaders.names import Metric

DOMAINS = ("grid", "choice", "uniform", "loguniform")
KEYS = {
    "name",
    "steps",
    "seeds",
    "params",
    "search",
    "samples",
    "metric",
    "early_stopping",
    "trial_cpus",
    "max_failures",
}
METRICS = (Metric.SCORE_MEAN, Metric.SCORE_MEDIAN, Metric.SCORE_CI_LOW)  # what a trial's evaluation reports


@dataclass(frozen=True)
class EarlyStopping:
    grace_steps: int  # agent steps every trial trains before ASHA may stop it
    reduction_factor: int  # ASHA keeps the best 1/reduction_factor of the trials at each rung


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted params key, e.g. train.learning_rate
    domain: str  # one of DOMAINS
    values: tuple[Any, ...]  # grid/choice: the values; uniform/loguniform: (low, high)


@dataclass(frozen=True)
class SweepSpec:
    name: str  # folder in sweep_results/ and the MLflow parent run's name
    steps: int  # agent steps per trial
    seeds: tuple[int, ...]  # train.seed values; each configuration runs once per seed
    params: dict[str, Any] = field(default_factory=dict)  # overrides shared by every trial
    search: tuple[Dimension, ...] = ()
    samples: int = 1  # draws of the random dimensions (grid dimensions are crossed with them)
    metric: str = Metric.SCORE_MEAN  # evaluation metric of a trial; the best configuration maximises its mean
    early_stopping: EarlyStopping | None = None
    trial_cpus: float = 1.0  # CPUs a trial reserves
    max_failures: int = 2  # restarts of a trial from its last checkpoint

    @property
    def fixed(self) -> dict[str, Any]:
        """Overrides every trial gets: the shared params and the budget."""
        return {**self.params, "train.steps": self.steps}

    @property
    def trials(self) -> int:
        grid = math.prod(len(d.values) for d in self.search if d.domain == "grid")
        return grid * self.samples * len(self.seeds)


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _whole(path: Path, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"{key} = {value!r}: must be a whole number >= {minimum}")
    return value


def _dimension(path: Path, key: str, entry: Any) -> Dimension:
    where = f"search.{key}"
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in DOMAINS:
        raise _fail(path, f"{where} = {entry!r}: must be one of {{{', '.join(f'{d}: [...]' for d in DOMAINS)}}}")
    domain, values = next(iter(entry.items()))
    if not isinstance(values, list) or not values:
        raise _fail(path, f"{where}.{domain} = {values!r}: must be a non-empty list")
    if domain in ("uniform", "loguniform"):
        numbers = len(values) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not numbers or values[0] >= values[1] or (domain == "loguniform" and values[0] <= 0):
            low = "0 < low" if domain == "loguniform" else "low"
            raise _fail(path, f"{where}.{domain} = {values!r}: must be [low, high] numbers with {low} < high")
    return Dimension(key, domain, tuple(values))


def _check_dimension(path: Path, dimension: Dimension, defaults: Params) -> None:
    section, _, name = dimension.key.partition(".")
    if section == "tracking":
        raise _fail(path, f"search.{dimension.key}: where runs are logged is not a setting to search")
    value = getattr(getattr(defaults, section, None), name, None)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and dimension.domain in ("uniform", "loguniform"):
        raise _fail(path, f"search.{dimension.key}: a whole number; list its values with grid or choice")


def _check_early_stopping(path: Path, spec: SweepSpec, defaults: Params) -> None:
    """ASHA judges trials at training checkpoints: there must be one between the grace period and the end."""
    if not can_resume(defaults.train.backend):
        raise _fail(path, f"early_stopping: train.backend = {defaults.train.backend!r} writes no checkpoints to judge")
    interval = defaults.train.checkpoint_interval
    first = -(-spec.early_stopping.grace_steps // interval) * interval  # the first checkpoint after the grace period
    if first >= spec.steps:
        raise _fail(
            path,
            f"early_stopping: no training checkpoint between grace_steps ({spec.early_stopping.grace_steps}) and "
            f"steps ({spec.steps}) with train.checkpoint_interval = {interval}; set a smaller one in params",
        )


def configurations(spec: SweepSpec) -> list[dict[str, Any]]:
    """The overrides of every grid point crossed with both ends of every range: what must build valid params."""
    axes = [[(d.key, value) for value in d.values] for d in spec.search]
    return [{**spec.fixed, **dict(point)} for point in itertools.product(*axes)]


def load_sweep(path: Path, raw_params: dict) -> SweepSpec:
    """Read and validate the sweep file at ``path`` against the parsed ``params.yaml`` ``raw_params``."""
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "sweep file not found") from None
    except yaml.YAMLError as error:
        raise _fail(path, f"not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(document, dict):
        raise _fail(path, "must be a mapping (name:, steps:, seeds:, search:, ...)")
    for key in document:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(sorted(KEYS))}"
            raise _fail(path, f"{key}: unknown sweep key; {hint}")
    name = document.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise _fail(path, f"name = {name!r}: letters, digits, - and _ only")
    seeds = document.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise _fail(path, f"seeds = {seeds!r}: must be a list of different whole numbers")
    for seed in seeds:
        _whole(path, "seeds", seed, 0)
    params = document.get("params") or {}
    search = document.get("search") or {}
    for section, value in (("params", params), ("search", search)):
        if not isinstance(value, dict):
            raise _fail(path, f"{section} = {value!r}: must be a mapping of params keys (train.learning_rate: ...)")
    for key in ("train.steps", "train.seed"):
        if key in params or key in search:
            raise _fail(path, f"{key}: set by the sweep's {'steps' if key == 'train.steps' else 'seeds'} key")
    metric = document.get("metric", Metric.SCORE_MEAN)
    if metric not in METRICS:
        raise _fail(path, f"metric = {metric!r}: allowed: {', '.join(METRICS)}")
    stopping = document.get("early_stopping")
    if stopping is not None:
        if not isinstance(stopping, dict) or set(stopping) - {"grace_steps", "reduction_factor"}:
            raise _fail(path, f"early_stopping = {stopping!r}: keys grace_steps and reduction_factor")
        stopping = EarlyStopping(
            _whole(path, "early_stopping.grace_steps", stopping.get("grace_steps", 10_000), 1),
            _whole(path, "early_stopping.reduction_factor", stopping.get("reduction_factor", 3), 2),
        )
    cpus = document.get("trial_cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
        raise _fail(path, f"trial_cpus = {cpus!r}: must be a number > 0")
    spec = SweepSpec(
        name=name,
        steps=_whole(path, "steps", document.get("steps"), 1),
        seeds=tuple(seeds),
        params=dict(params),
        search=tuple(_dimension(path, key, entry) for key, entry in search.items()),
        samples=_whole(path, "samples", document.get("samples", 1), 1),
        metric=metric,
        early_stopping=stopping,
        trial_cpus=float(cpus),
        max_failures=_whole(path, "max_failures", document.get("max_failures", 2), 0),
    )
    if stopping and stopping.grace_steps >= spec.steps:
        raise _fail(path, f"early_stopping.grace_steps = {stopping.grace_steps}: must be below steps ({spec.steps})")
    defaults = build_params(with_overrides(raw_params, {**spec.fixed, "train.seed": spec.seeds[0]}))
    for dimension in spec.search:
        _check_dimension(path, dimension, defaults)
    if stopping:
        _check_early_stopping(path, spec, defaults)
    for overrides in configurations(spec):
        try:
            build_params(with_overrides(raw_params, {**overrides, "train.seed": spec.seeds[0]}))
        except ConfigError as error:
            varied = ", ".join(f"{d.key}={overrides[d.key]}" for d in spec.search)
            raise _fail(path, f"{error} (searching {varied})" if varied else str(error)) from None
    return spec
