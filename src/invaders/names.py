"""Every MLflow tag and metric name the pipeline writes, written once.

A name is written by one stage and read back by another (the report, a resumed run), so each lives
here. The values are the names as stored: changing one hides the runs already in a store from the
report. ``tag_column`` and ``metric_column`` give a name's column in the table ``stage_runs`` returns.
"""

from __future__ import annotations


class Tag:
    """Run tags (strings)."""

    STAGE = "invaders.stage"  # pipeline stage of the run; evaluate-shipped@NAME runs are "evaluate"
    HOST = "invaders.host"  # machine that runs the stage
    PID = "invaders.pid"  # process that runs the stage: a dead one's RUNNING run is marked KILLED
    AGENT = "invaders.agent"  # label of the agent evaluated ("random" for the baseline)
    PROTOCOL = "invaders.protocol"  # the evaluation protocol in words: scores compare only under the same one
    TRAIN_RUN_ID = "invaders.train_run_id"  # run holding the evaluated agent's training curve
    WEIGHTS_SHA256 = "invaders.weights_sha256"  # SHA-256 of the evaluated weights.npz: one row per agent
    BACKEND = "invaders.backend"  # training backend (train.backend)
    PRECISION = "invaders.precision"  # native backend: train.precision as resolved on the CPU that trained
    UPDATE_PATH = "invaders.update_path"  # native backend: kernels of its update (xla, onednn) on that CPU
    CPU = "invaders.cpu"  # the training machine's CPU: model, vector extensions, cores (speed compares per CPU)
    SHIPPED = "invaders.shipped"  # "true" on the evaluation of an agent from shipped/
    RECORDED = "invaders.recorded"  # "true": a shipped agent's evaluation published from its record, not replayed
    METRICS_FLUSHED = "invaders.metrics_flushed"  # "<checkpoint id>:<rows>": held metrics that reached the store
    RESUMED = "resumed."  # prefix: resumed.<param> is a resumed run's new value of a param it had logged
    DVC_STAGE = "dvc.stage"  # DVC's stage name (evaluate-shipped@NAME)
    DVC_EXP_NAME = "dvc.exp_name"  # DVC experiment ("workspace" outside `dvc exp run`)
    DVC_BASELINE_REV = "dvc.baseline_rev"  # commit the DVC experiment started from
    GIT_COMMIT = "mlflow.source.git.commit"  # commit of the code that ran
    RUN_NAME = "mlflow.runName"  # what the run is: "train 10k seed 0", "evaluate dqn-1m", "baseline random"
    SOURCE_NAME = "mlflow.source.name"  # the stage script
    SOURCE_TYPE = "mlflow.source.type"  # "LOCAL"
    PARENT_RUN_ID = "mlflow.parentRunId"  # a sweep trial's run under its sweep's, a trial's stage runs under it
    # Sweeps (invaders-sweep): the sweep's parent run and one run per trial.
    SWEEP = "invaders.sweep"  # name of the sweep (its file's name: key)
    TRIAL_ID = "invaders.trial_id"  # Ray Tune's trial id: a restarted trial finds its run by it
    TRIAL_NODE = "invaders.trial_nodes"  # addresses of the Ray nodes the trial's attempts ran on, in order
    TRIAL_ATTEMPTS = "invaders.trial_attempts"  # attempts of the trial so far (1 + restarts from a checkpoint)
    STOPPED_EARLY = "invaders.stopped_early"  # "true" on a trial Tune's ASHA stopped before its budget
    EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag: which page the MLflow UI opens on
    # Registered model versions (one per agent) and the evaluation runs that played them.
    MODEL_VERSION = "invaders.model_version"  # run tag: the registered version logged or evaluated by the run
    VERSION_TRAIN_STEPS = "invaders.train_steps"  # version tag: agent steps the agent was trained for
    VERSION_COMMIT = "invaders.commit"  # version tag: commit of the code that trained the agent
    SCORE_MEAN = "invaders.score_mean"  # version tag: mean game score of its latest evaluation (points)
    SCORE_CI_LOW = "invaders.score_ci_low"  # version tag: lower end of that mean's bootstrap CI (points)
    SCORE_CI_HIGH = "invaders.score_ci_high"  # version tag: upper end of that mean's bootstrap CI (points)
    CHAMPION_SINCE = "invaders.champion_since"  # version tag: when, by what and why it became champion
    CHAMPION_CHALLENGE = "invaders.champion_challenge"  # version tag: its last paired test against the champion
    CHAMPION_MOVES = "invaders.champion_moves"  # model tag: JSON list of the alias's moves (time, from, to, by, why)
    CHAMPION_PIN = "invaders.champion_pin"  # model tag: JSON (time, version, reason) while pinned by hand


class Metric:
    """Run metrics (floats); ``step`` is 0 unless said otherwise."""

    # Training, every train.log_interval agent steps (step: agent steps), the same names in both backends.
    TRAIN_STEPS_PER_SECOND = "train/steps_per_second"  # agent steps per wall-clock second over the interval
    TRAIN_EPSILON = "train/epsilon"  # exploration epsilon at the step: probability of a random action
    TRAIN_EPISODES = "train/episodes"  # training games finished so far (count)
    TRAIN_UPDATES = "train/updates"  # gradient updates so far (count)
    TRAIN_LOSS = "train/loss"  # mean Huber TD loss of the interval's updates
    TRAIN_Q_MEAN = "train/q_mean"  # mean Q-value of the sampled actions in the interval's updates (points)
    TRAIN_EPISODE_RETURN = "train/episode_return"  # mean unclipped score of the games ended in the interval (points)
    TRAIN_GAME_SCORE = "train/game_score"  # unclipped score of one training game (points; step: where it ended)
    # Evaluation while training (native backend): every train.eval_interval agent steps, on the validation games.
    EVAL_SCORE_MEAN = "eval/score_mean"  # mean game score of train.eval_episodes validation games (points)
    EVAL_SCORE_CI_LOW = "eval/score_ci_low"  # lower end of its bootstrap confidence interval (points)
    EVAL_SCORE_CI_HIGH = "eval/score_ci_high"  # upper end of its bootstrap confidence interval (points)
    EVAL_WALL_TIME_S = "eval_wall_time_s"  # seconds spent evaluating while training, of wall_time_s
    PRECISION = "precision"  # train metrics: the arithmetic the native learner ran in (float32, bfloat16)
    UPDATE_PATH = "update_path"  # train metrics: the kernels that ran its update (xla, onednn)
    # Training, once at the end (step: agent steps), as in results/train/metrics.json.
    TOTAL_STEPS = "total_steps"  # agent steps trained
    TOTAL_UPDATES = "total_updates"  # gradient updates made
    TOTAL_GAMES = "total_games"  # training games finished
    WALL_TIME_S = "wall_time_s"  # training time (seconds, summed over resumed attempts)
    MEAN_STEPS_PER_SECOND = "mean_steps_per_second"  # agent steps per wall-clock second, whole run
    GAME_SCORE_LAST20_MEAN = "game_score_last20_mean"  # mean unclipped score of the last 20 training games (points)
    # The network, from build-model.
    PARAMETERS = "parameters"  # weights in the Q-network (count)
    FORWARD_MFLOPS = "forward_mflops"  # cost of one forward pass of one observation (millions of FLOPs)
    # Evaluation (baseline, evaluate), as in results/*/metrics.json.
    GAME_SCORE = "game_score"  # unclipped score of one whole evaluation game (points; step: game index)
    SCORE_MEAN = "score_mean"  # mean game score (points)
    SCORE_STD = "score_std"  # population standard deviation of the game scores (points)
    SCORE_MEDIAN = "score_median"  # median game score (points)
    SCORE_MIN = "score_min"  # lowest game score (points)
    SCORE_MAX = "score_max"  # highest game score (points)
    EPISODES = "episodes"  # evaluation games played (count)
    SCORE_CI_LOW = "score_ci_low"  # lower end of the bootstrap confidence interval of the mean (points)
    SCORE_CI_HIGH = "score_ci_high"  # upper end of the bootstrap confidence interval of the mean (points)
    STEPS_MEAN = "steps_mean"  # mean length of a game (agent steps)
    AGENT_TRAIN_STEPS = "agent.train_steps"  # agent steps the evaluated agent was trained for
    AGENT_WALL_TIME_S = "agent.wall_time_s"  # the evaluated agent's training time (seconds)
    # Report.
    AGENTS_COMPARED = "agents_compared"  # agents in the report's table (count, random ones included)


def tag_column(tag: str) -> str:
    """The column of ``tag`` in a table of runs: ``tags.<tag>``."""
    return f"tags.{tag}"


def metric_column(metric: str) -> str:
    """The column of ``metric`` in a table of runs: ``metrics.<metric>`` (its last value)."""
    return f"metrics.{metric}"


def param_column(param: str) -> str:
    """The column of ``param`` in a table of runs: ``params.<param>``."""
    return f"params.{param}"
