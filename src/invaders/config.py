"""Typed configuration built from ``params.yaml``.

Every field carries a one-line doc with its unit and the range it accepts. Building a config
validates it completely (unknown keys, types, ranges, combinations) and raises ``ConfigError``
with one line naming the key, the value and what is allowed. Nothing here imports TensorFlow,
so a stage rejects bad input in well under a second.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from invaders.backend_registry import REGISTRY as BACKEND_REGISTRY
from invaders.errors import ConfigError
from invaders.seeding import TRAINING_EMULATOR_SEED_FLOOR


def _field(default: Any, doc: str, **rules: Any) -> Any:
    """A dataclass field with its documentation and validation rules (ge, gt, le, lt, choices)."""
    return field(default=default, metadata={"doc": doc, **rules})


# Preprocessing names accepted by ``env.preprocessing``.
PREPROCESSINGS = ("deepmind", "raw")
NETWORKS = ("nature", "notebook")
PRECISIONS = ("auto", "float32", "bfloat16")
SPLITS = ("test", "validation")  # the evaluation seed ranges
MAX_FRAME_STACK = 16  # frames per observation; replay sizing assumes no more
_ENV_ID = re.compile(r"^(?:ALE/)?(?P<game>[A-Z][A-Za-z0-9]*?)(?P<noframeskip>NoFrameskip)?-v(?P<version>\d+)$")


def rom_name(env_id: str) -> str:
    """The ale-py ROM name of a gymnasium Atari id: ``ALE/SpaceInvaders-v5`` -> ``space_invaders``."""
    match = _ENV_ID.match(env_id)
    if match is None:
        raise ConfigError(
            f"env.id = {env_id!r}: not an Atari id; write it like 'ALE/SpaceInvaders-v5' or 'SpaceInvaders-v0'"
        )
    return re.sub(r"(?<!^)(?=[A-Z])", "_", match["game"]).lower()


@dataclass(frozen=True)
class EnvConfig:
    """The game and the emulator protocol shared by training, the random baseline and evaluation."""

    id: str = _field("ALE/SpaceInvaders-v5", "gymnasium Atari id; its game selects the ROM bundled with ale-py")
    preprocessing: str = _field(
        "deepmind",
        "deepmind: 84x84 grayscale, max-pooled, frame-stacked (ale-py vector env); "
        "raw: the id's own 210x160 RGB frames, as the notebook used (keras-rl2 backend only)",
        choices=PREPROCESSINGS,
    )
    frame_skip: int = _field(4, "emulator frames per agent step (deepmind)", ge=1, le=16)
    repeat_action_probability: float = _field(
        0.25, "sticky actions: chance the emulator repeats the previous action (deepmind)", ge=0.0, lt=1.0
    )
    noop_max: int = _field(0, "at most this many random no-op agent steps at each reset (deepmind)", ge=0, le=100)
    max_episode_frames: int = _field(108_000, "emulator frames before an episode is truncated (30 min of play)", ge=1)
    screen_size: int = _field(84, "pixels per side of the square observation (deepmind)", ge=16, le=210)
    frame_stack: int = _field(4, "frames stacked into one observation (deepmind)", ge=1, le=MAX_FRAME_STACK)

    @property
    def game(self) -> str:
        return rom_name(self.id)

    def validate(self) -> None:
        import ale_py

        if self.game not in ale_py.roms.get_all_rom_ids():
            raise ConfigError(f"env.id = {self.id!r}: ale-py has no ROM {self.game!r}; try 'ALE/SpaceInvaders-v5'")
        if self.preprocessing == "raw":
            import gymnasium

            gymnasium.register_envs(ale_py)
            if self.id not in gymnasium.registry:
                raise ConfigError(
                    f"env.id = {self.id!r}: not a registered gymnasium id (needed by preprocessing 'raw'); "
                    "try 'SpaceInvaders-v0' or 'ALE/SpaceInvaders-v5'"
                )


@dataclass(frozen=True)
class EvaluationConfig:
    """How the random baseline and every trained agent are scored: the evaluation protocol."""

    episodes: int = _field(30, "whole games played; each score is the unclipped game score", ge=1, le=10_000)
    epsilon: float = _field(
        0.05, "chance of a random action at each step (the 2015 DQN protocol uses 0.05)", ge=0.0, le=1.0
    )
    test_seed: int = _field(
        1_000,
        "first emulator seed of the test games (game k plays seed test_seed + k): what is reported "
        "(the evaluate stage, the random baseline, the report), never used to choose anything",
        ge=0,
    )
    validation_seed: int = _field(
        100_000,
        "first emulator seed of the validation games: what chooses (a sweep's best configuration, the champion, "
        "evaluation while training)",
        ge=0,
    )
    split: str = _field(
        "test", "which games the evaluate stage plays: test (reporting) or validation (choosing)", choices=SPLITS
    )
    num_envs: int = _field(6, "games played in parallel (each plays the same share of episodes)", ge=1, le=64)
    gif_max_frames: int = _field(
        4000, "agent steps shown of the best and the median game (their videos, the best one's GIF)", ge=1
    )

    def first_seed(self, split: str) -> int:
        """The first emulator seed of the ``split`` games (test or validation)."""
        return self.test_seed if split == "test" else self.validation_seed

    def validate(self) -> None:
        for key in ("test_seed", "validation_seed"):
            last = getattr(self, key) + self.episodes
            if last > TRAINING_EMULATOR_SEED_FLOOR:
                raise ConfigError(
                    f"evaluation.{key} = {getattr(self, key)}: its games' seeds must stay below "
                    f"{TRAINING_EMULATOR_SEED_FLOOR} (training games use the seeds above)"
                )


@dataclass(frozen=True)
class ModelConfig:
    """The Q-network that build-model creates and train trains."""

    network: str = _field(
        "nature",
        "nature: the 2015 DQN CNN on stacked 84x84 frames; notebook: the notebook's CNN on raw frames",
        choices=NETWORKS,
    )
    dueling: bool = _field(
        True,
        "dueling head, Q = V + A - mean(A): nature has a value and an advantage stream, each with its own "
        "512-unit hidden layer (Wang et al. 2016); notebook has keras-rl2's 'avg' head on the shared layer",
    )
    quantiles: int = _field(
        0,
        "quantiles of the return learned per action: 0 = expected-value DQN, one Q-value per action (the "
        "default); N > 0 = QR-DQN (Dabney et al. 2017; Dopamine uses 200), trained with the quantile Huber loss "
        "(kappa 1), acting on the quantiles' mean; with any head, train.n_step and train.double_dqn; native "
        "backend only. Opt-in, pending its measurement (sweeps/lever-qr.yaml)",
        ge=0,
        le=1_000,
    )


@dataclass(frozen=True)
class TrainConfig:
    """The DQN learner and its training budget."""

    backend: str = _field(
        "native",
        "; ".join(f"{name}: {entry.description}" for name, entry in BACKEND_REGISTRY.items()),
        choices=tuple(BACKEND_REGISTRY),
    )
    steps: int = _field(10_000, "agent steps to train for (one agent step = frame_skip emulator frames)", ge=1)
    seed: int = _field(
        0,
        "the run's seed: the initial weights, every emulator, the replay sampling and the exploration come from "
        "independent streams spawned from it (invaders.seeding)",
        ge=0,
    )
    num_envs: int = _field(
        4, "games stepped together by the native backend; one batched action per vector step", ge=1, le=64
    )
    replay_capacity: int = _field(100_000, "transitions kept in replay memory (one 84x84 uint8 frame each)", ge=1)
    batch_size: int = _field(32, "transitions per gradient update", ge=1, le=4096)
    learning_rate: float = _field(1.0e-4, "Adam learning rate", gt=0.0, le=1.0)
    adam_epsilon: float = _field(1.5e-4, "Adam epsilon (Rainbow / Dopamine value)", gt=0.0, le=1.0)
    gamma: float = _field(0.99, "discount per agent step", gt=0.0, le=1.0)
    n_step: int = _field(3, "native backend: n of the n-step return (1 = classic DQN, as keras-rl2)", ge=1, le=20)
    double_dqn: bool = _field(True, "Double DQN targets: online net picks the next action, target net values it")
    precision: str = _field(
        "float32",
        "native backend: arithmetic of the networks' layers; weights, gradients and Adam stay float32. "
        "float32 runs through XLA; bfloat16, an opt-in speed mode, on oneDNN's bf16 kernels; auto = bfloat16 "
        "where the CPU has native bf16 (AVX512_BF16 or AMX), else float32. The resolved value is recorded in "
        "the train metrics and the agent card; evaluation computes in it",
        choices=PRECISIONS,
    )
    warmup_fraction: float = _field(
        0.02,
        "share of train.steps played at random before the first update (0.02: 20k agent steps of 1M)",
        ge=0.0,
        lt=1.0,
    )
    replay_ratio: float = _field(
        0.5, "gradient updates per agent step (0.25 = one update every 4 steps)", gt=0.0, le=8.0
    )
    target_sync_updates: int = _field(
        2_000,
        "gradient updates between hard copies of the online net into the target (keras-rl2: x train interval)",
        ge=1,
    )
    epsilon_start: float = _field(1.0, "exploration epsilon when the decay starts", ge=0.0, le=1.0)
    epsilon_end: float = _field(0.01, "exploration epsilon after the decay", ge=0.0, le=1.0)
    exploration_fraction: float = _field(
        0.5,
        "share of train.steps over which epsilon decays linearly, after the warm-up (keras-rl2: from step 0)",
        gt=0.0,
        le=1.0,
    )
    max_grad_norm: float = _field(10.0, "global gradient-norm clip", gt=0.0)
    clip_rewards: bool = _field(True, "learn from sign(reward); reported scores are always unclipped")
    terminal_on_life_loss: bool = _field(
        True, "native backend: a lost life is terminal for learning only; games go on to game over"
    )
    log_interval: int = _field(1_000, "agent steps between logged training metrics", ge=1)
    checkpoint_interval: int = _field(
        25_000, "native backend: agent steps between resumable checkpoints, which also send the metrics", ge=1
    )
    memory_window: int = _field(3, "keras-rl2 backend: observations per state (notebook: 3)", ge=1, le=16)
    eval_interval: int = _field(
        25_000,
        "native backend: agent steps between evaluations while training, on the validation games "
        "(0: none; the evaluate stage still scores the final agent)",
        ge=0,
    )
    eval_episodes: int = _field(8, "native backend: whole games per evaluation while training", ge=1, le=1_000)

    @property
    def warmup_steps(self) -> int:
        """Agent steps of random play before the first update."""
        return round(self.warmup_fraction * self.steps)

    @property
    def epsilon_decay_steps(self) -> int:
        """Agent steps of the linear epsilon decay (at least 1)."""
        return max(1, round(self.exploration_fraction * self.steps))

    def applied(self) -> dict[str, Any]:
        """The fields the chosen backend uses: what a run records as its params."""
        others = {key for name, entry in BACKEND_REGISTRY.items() if name != self.backend for key in entry.reads}
        mine = set(BACKEND_REGISTRY[self.backend].reads)
        return {key: value for key, value in dataclasses.asdict(self).items() if key in mine or key not in others}

    def validate(self) -> None:
        if self.warmup_steps + self.batch_size > self.steps:
            raise ConfigError(
                f"train.warmup_fraction = {self.warmup_fraction:g}: leaves {self.steps - self.warmup_steps} of "
                f"train.steps ({self.steps}) to learn in; at least train.batch_size ({self.batch_size}) are needed"
            )
        if self.batch_size > self.replay_capacity:
            raise ConfigError(
                f"train.batch_size = {self.batch_size}: must not exceed train.replay_capacity ({self.replay_capacity})"
            )
        if self.backend == "keras-rl2" and (self.replay_ratio > 1 or not (1 / self.replay_ratio).is_integer()):
            raise ConfigError(
                f"train.replay_ratio = {self.replay_ratio:g}: keras-rl2 trains once every k agent steps; "
                "use 1/k (1.0, 0.5, 0.25, ...)"
            )
        if self.backend == "native":
            per_env = self.replay_capacity // self.num_envs
            needed = self.n_step + MAX_FRAME_STACK + 2  # TrainConfig does not see env: the largest stack
            if per_env < needed:
                raise ConfigError(
                    f"train.replay_capacity = {self.replay_capacity}: must hold at least {needed} transitions per "
                    f"environment ({needed * self.num_envs} for train.num_envs = {self.num_envs})"
                )


@dataclass(frozen=True)
class ReportConfig:
    """The comparison report built from every run in the MLflow experiment."""

    confidence: float = _field(0.95, "level of the bootstrap confidence interval of the mean score", gt=0.0, lt=1.0)
    bootstrap_samples: int = _field(10_000, "bootstrap resamples for the confidence interval", ge=100)


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs are recorded."""

    experiment: str = _field("space-invaders-dqn", "MLflow experiment that holds every stage run")

    def validate(self) -> None:
        if not self.experiment.strip():
            raise ConfigError("tracking.experiment = '': must be a non-empty experiment name")


@dataclass(frozen=True)
class Params:
    """All of ``params.yaml``."""

    env: EnvConfig
    evaluation: EvaluationConfig
    model: ModelConfig
    train: TrainConfig
    report: ReportConfig
    tracking: TrackingConfig

    def validate(self) -> None:
        for section in dataclasses.fields(self):
            validate = getattr(getattr(self, section.name), "validate", None)
            if validate:
                validate()
        evaluation = self.evaluation
        validation_games = max(evaluation.episodes, self.train.eval_episodes)
        test_range = range(evaluation.test_seed, evaluation.test_seed + evaluation.episodes)
        validation_range = range(evaluation.validation_seed, evaluation.validation_seed + validation_games)
        if set(test_range) & set(validation_range):
            raise ConfigError(
                f"evaluation.validation_seed = {evaluation.validation_seed}: its {validation_games} games overlap the "
                f"test games (seeds {test_range.start}-{test_range.stop - 1}); choosing and reporting need disjoint games"
            )
        if self.model.quantiles and self.train.backend != "native":
            raise ConfigError(
                f"model.quantiles = {self.model.quantiles}: QR-DQN is the native backend's; "
                f"train.backend = {self.train.backend!r} learns expected values only (model.quantiles = 0)"
            )
        deepmind = self.env.preprocessing == "deepmind"
        if self.train.backend == "native" and not deepmind:
            raise ConfigError(
                f"env.preprocessing = {self.env.preprocessing!r}: the native backend needs 'deepmind' "
                "(raw frames are trained with train.backend = 'keras-rl2')"
            )
        if not deepmind and self.train.memory_window != 3:
            raise ConfigError(
                f"train.memory_window = {self.train.memory_window}: env.preprocessing 'raw' feeds the notebook "
                "network a window of 3 frames"
            )
        if not deepmind and self.train.replay_capacity > 100_000:
            raise ConfigError(
                f"train.replay_capacity = {self.train.replay_capacity}: raw frames take ~100 KB each; "
                "at most 100000 with env.preprocessing 'raw'"
            )
        wanted = "nature" if deepmind else "notebook"
        if self.model.network != wanted:
            raise ConfigError(
                f"model.network = {self.model.network!r}: env.preprocessing = {self.env.preprocessing!r} "
                f"feeds the {wanted!r} network"
            )


# YAML 1.2 floats, as DVC writes them (`dvc exp run -S train.learning_rate=1e-5` stores `1e-05`);
# PyYAML's YAML 1.1 rules would read `1e-05` and `1.0e9` as text.
_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$""",
    re.X,
)


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _check_value(key: str, value: Any, spec: dataclasses.Field) -> Any:
    """Return ``value`` converted to the field's type, or raise ConfigError naming ``key``."""
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    rules = spec.metadata
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: must be true or false")
    elif kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r}: must be a whole number")
    elif kind == "float":
        if isinstance(value, str):
            hint = " (it is quoted text: remove the quotes)" if _FLOAT.match(value) else ""
            raise ConfigError(f"{key} = {value!r}: must be a number{hint}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: must be a finite number")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r}: must be text")
    bounds = [
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ]
    for name, ok, _ in bounds:
        bound = rules.get(name)
        if bound is not None and not ok(value, bound):
            allowed = " and ".join(f"{s} {rules[n]}" for n, _, s in bounds if rules.get(n) is not None)
            raise ConfigError(f"{key} = {value!r}: must be {allowed}")
    choices = rules.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key} = {value!r}: must be one of {', '.join(repr(c) for c in choices)}")
    return value


def build_section(cls: type, name: str, values: Any) -> Any:
    """Build the dataclass ``cls`` of params section ``name`` from a mapping, validating every key."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name} = {values!r}: must be a mapping of keys to values")
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    for key in values:
        if key not in specs:
            close = difflib.get_close_matches(str(key), specs, n=1)
            hint = f"; did you mean {name}.{close[0]}?" if close else f"; allowed: {', '.join(specs)}"
            raise ConfigError(f"{name}.{key}: unknown key{hint}")
    return cls(**{key: _check_value(f"{name}.{key}", value, specs[key]) for key, value in values.items()})


def build_params(raw: Any) -> Params:
    """Build and validate ``Params`` from the parsed YAML document."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml: must be a mapping of sections")
    classes = {spec.name: globals()[spec.type] for spec in dataclasses.fields(Params)}
    for name in raw:
        if name not in classes:
            close = difflib.get_close_matches(str(name), classes, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; allowed: {', '.join(classes)}"
            raise ConfigError(f"{name}: unknown params section{hint}")
    params = Params(**{name: build_section(cls, name, raw.get(name)) for name, cls in classes.items()})
    params.validate()
    return params


def read_params_file(path: str | Path = "params.yaml") -> Any:
    """The parsed YAML of a params file, not yet validated."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_ParamsLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found; run from the repository root") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None


def with_overrides(raw: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the parsed params document ``raw`` with dotted keys replaced (``{"train.steps": 20000}``)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {}) if isinstance(node, dict) else None
        if not sections or not isinstance(node, dict):
            raise ConfigError(f"{key}: not a params key (use section.key, e.g. train.steps)")
        node[name] = value
    return raw


def parse_value(text: str) -> Any:
    """One value as params.yaml would read it (``-S train.learning_rate=1e-5`` is a float, as DVC writes it)."""
    return yaml.load(text, Loader=_ParamsLoader)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, build and validate the params file."""
    return build_params(read_params_file(path))


def as_flat_dict(config: Any, prefix: str) -> dict[str, Any]:
    """``{"prefix.field": value}`` of a section (or of a dict of its fields) for logging as params."""
    values = config if isinstance(config, dict) else dataclasses.asdict(config)
    return {f"{prefix}.{key}": value for key, value in values.items()}
