# Two commands on a fresh machine: `make run` (pipeline on the default params) and `make test`.
# A target that runs a job calls the one command, `invaders JOB` (`invaders --help` lists the jobs), its Make
# variables as the job's options; tools/ holds the developers' scripts (push, readme-results, mutants).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast ui bench notebook ship lint format lock
.PHONY: server-setup server server-stop server-status server-user server-import server-bench sweep
.PHONY: server-users server-reset-password server-remove-user server-passwd server-backup server-restore
.PHONY: server-upgrade server-supervise server-unit

# The notebook's own experiment: keras-rl2's DQNAgent on SpaceInvaders-v0 raw frames, with its values.
# `make notebook` trains 10k steps (~45 min here with one TF thread: TF_NUM_INTRAOP_THREADS=1
# TF_NUM_INTEROP_THREADS=1 make notebook); `make notebook NOTEBOOK_STEPS=1000000 NOTEBOOK_NAME=notebook-1m`.
NOTEBOOK_STEPS ?= 10000
NOTEBOOK_NAME ?= notebook-10k
NOTEBOOK = -S env.id=SpaceInvaders-v0 -S env.preprocessing=raw -S model.network=notebook -S model.dueling=true \
	-S train.backend=keras-rl2 -S train.steps=$(NOTEBOOK_STEPS) -S train.replay_capacity=1000 -S train.memory_window=3 \
	-S train.warmup_fraction=0.1 -S train.epsilon_start=1.0 -S train.epsilon_end=0.1 -S train.exploration_fraction=1.0 \
	-S train.learning_rate=1.0e-4 -S train.adam_epsilon=1.0e-7 -S train.max_grad_norm=1.0e+9 -S train.replay_ratio=1.0 \
	-S train.target_sync_updates=10000 -S train.double_dqn=false -S train.clip_rewards=false -S train.batch_size=32 \
	-S train.gamma=0.99 -S evaluation.epsilon=0.2 -S evaluation.episodes=10

setup: $(STAMP)

# --no-deps: the lock pins every package; keras-rl2 and tf-keras would otherwise pull the full
# `tensorflow` wheel beside tensorflow-cpu (slower updates: docs/speed.md). Then the project itself, editable
# (`import invaders` and the console commands of pyproject.toml work without PYTHONPATH), built with
# the locked setuptools and wheel (--no-build-isolation: nothing more to download).
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	dvc repro

# --durations: every run (CI's too) ends with the slowest tests, to keep the suite near 20 minutes.
test: setup server-setup sshd-setup
	pytest -q -rs --durations=30

test-fast: setup server-setup sshd-setup
	pytest -q -m "not e2e"

# Mutation testing of the core modules (mutmut; not part of `make test`): ~1,170 mutants at 1.5-3 s each
# on 2 cores, 30-60 min. What is mutated and which tests judge it: pyproject.toml. Ends with a summary per
# module and the surviving mutants. ARGS go to tools/mutants.py: --keep, mutant globs ('invaders.replay.*').
.PHONY: mutants
mutants: $(VENV)/.mutants-installed
	python tools/mutants.py $(ARGS)

$(VENV)/.mutants-installed: $(STAMP) tools/mutants-requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r tools/mutants-requirements.txt
	touch $@

# The local store's MLflow UI on 127.0.0.1:$(UI_PORT); the first line printed is the experiment's page (its runs table).
UI_PORT ?= 5000
ui: setup
	invaders ui --port $(UI_PORT)

# The team's tracking server (README "Team mode"): PostgreSQL + `mlflow server --app-name invaders-auth`,
# everything in .server/ (git-ignored). PostgreSQL is Debian's package, installed once by server-setup
# (the tests use the real server; `make run` does not need it). SERVER_HOST other than loopback warns.
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5050
SERVER_URL ?=
SERVER = invaders server
PG_STAMP := $(VENV)/.postgresql-installed

server-setup: $(PG_STAMP)

$(PG_STAMP): | $(STAMP)
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then echo "PostgreSQL is installed"; else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; fi
	touch $@

# The team's DVC remote (docs/dvc.md), the `team` remote of .dvc/config, the default: a folder on this
# machine or a shared disk (make remote-folder REMOTE_DIR=/mnt/shared/invaders-dvc; default: beside the clone),
# or a server reached over SSH (make remote-ssh HOST=storage.example.org REMOTE_DIR=/srv/invaders-dvc), the
# usual shared storage of a small team. SSH_USER, SSH_PORT and SSH_KEY go to .dvc/config.local (yours only).
# Commit .dvc/config afterwards so the team shares the remote.
REMOTE_DIR ?= ../invaders-dvc-remote
.PHONY: remote-folder remote-ssh sshd-setup
remote-folder: setup
	dvc remote add --force --default team "$(REMOTE_DIR)"

remote-ssh: setup
	@[ -n "$(HOST)" ] || { echo "remote-ssh: HOST=... is missing (the SSH server holding the remote)" >&2; exit 2; }
	@case "$(REMOTE_DIR)" in /*) ;; *) echo "remote-ssh: REMOTE_DIR=$(REMOTE_DIR): must be an absolute path on $(HOST)" >&2; exit 2;; esac
	dvc remote add --force --default team "ssh://$(HOST)$(REMOTE_DIR)"
	$(if $(SSH_USER),dvc remote modify --local team user "$(SSH_USER)")
	$(if $(SSH_PORT),dvc remote modify --local team port "$(SSH_PORT)")
	$(if $(SSH_KEY),dvc remote modify --local team keyfile "$(SSH_KEY)")

# Outputs and run-cache to the team remote. `dvc push --run-cache` leaves out the run-cache's copies of the
# `cache: false` files (metrics, curves), without which a colleague's `dvc exp run --pull` runs the stage
# again: tools/push_run_cache.py sends them. make exp-push EXP=name [GIT_REMOTE=origin]: an experiment, the same way.
GIT_REMOTE ?= origin
.PHONY: push exp-push
push: setup
	dvc push --run-cache
	python tools/push_run_cache.py

exp-push: setup
	@[ -n "$(EXP)" ] || { echo "exp-push: EXP=... is missing (the experiment's name, dvc exp show)" >&2; exit 2; }
	dvc exp push --run-cache "$(GIT_REMOTE)" "$(EXP)"
	python tools/push_run_cache.py

# OpenSSH's server, for the test of the SSH remote (tests/test_dvc_remote.py starts its own on loopback).
SSHD_STAMP := $(VENV)/.sshd-installed
sshd-setup: $(SSHD_STAMP)

$(SSHD_STAMP): | $(STAMP)
	@if [ -x /usr/sbin/sshd ]; then echo "OpenSSH server is installed"; else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server; fi
	touch $@

server: setup server-setup
	$(SERVER) start --host $(SERVER_HOST) --port $(SERVER_PORT) $(if $(SERVER_URL),--public-url $(SERVER_URL))

server-stop: setup
	$(SERVER) stop

server-status: setup
	$(SERVER) status

# make server-user NAME=alice ACCESS=EDIT (or READ, MANAGE): the login goes to .server/users/alice.env (mode 0600).
server-user: setup
	$(SERVER) add-user "$(NAME)" "$(ACCESS)"

# The users (docs/server.md "Users"): list with their rights; a new password into NAME's login file; remove
# NAME; change your own password with your current login (LOGIN=path/to/your.env, rewritten with the new one).
server-users: setup
	$(SERVER) users

server-reset-password: setup
	$(SERVER) reset-password "$(NAME)"

server-remove-user: setup
	$(SERVER) remove-user "$(NAME)"

LOGIN ?=
server-passwd: setup
	@[ -n "$(LOGIN)" ] || { echo "server-passwd: LOGIN=... is missing (your login file, .server/users/NAME.env)" >&2; exit 2; }
	$(SERVER) --login "$(LOGIN)" passwd

# One archive of the database (pg_dump, while the server runs) and the artifacts in .server/backups/ (or
# BACKUP_DIR), the newest KEEP kept; make server-restore FILE=... SERVER_DIR=new-folder brings one back.
KEEP ?= 7
BACKUP_DIR ?=
SERVER_DIR ?=
server-backup: setup
	$(SERVER) backup --keep $(KEEP) $(if $(BACKUP_DIR),--to "$(BACKUP_DIR)")

server-restore: setup server-setup
	$(SERVER) $(if $(SERVER_DIR),--dir "$(SERVER_DIR)") restore "$(FILE)"

# After an MLflow upgrade (start names the old schema): back up, migrate MLflow's and the auth schema, start.
server-upgrade: setup server-setup
	$(SERVER) upgrade --host $(SERVER_HOST) --port $(SERVER_PORT) $(if $(SERVER_URL),--public-url $(SERVER_URL))

# The server in the foreground, restarted when it stops (what the systemd unit runs); server-unit writes the
# unit to .server/invaders-server.service.
server-supervise: setup server-setup
	$(SERVER) supervise --host $(SERVER_HOST) --port $(SERVER_PORT) $(if $(SERVER_URL),--public-url $(SERVER_URL))

server-unit: setup
	$(SERVER) unit --host $(SERVER_HOST) --port $(SERVER_PORT) $(if $(SERVER_URL),--public-url $(SERVER_URL))

# make server-import DB=path/to/mlflow.db: copy a local store's runs and registered models into the server.
DB ?= mlflow.db
server-import: setup
	$(SERVER) import "$(DB)"

# Start, logging latency against sqlite, memory: a server of its own in a temporary folder (README "Team mode").
# ARGS="--apps invaders-auth,basic-auth": the project's auth app against MLflow's, side by side in one run.
server-bench: setup server-setup
	invaders bench server $(ARGS)

# The champion agent over HTTP on 127.0.0.1:$(SERVE_PORT) (README "Agents as MLflow models");
# MODEL=models:/space-invaders-dqn/3 serves another version, MLFLOW_TRACKING_URI another store.
MODEL ?= models:/space-invaders-dqn@champion
SERVE_PORT ?= 5001
.PHONY: serve
serve: setup
	invaders serve --agent "$(MODEL)" --port $(SERVE_PORT)

# A sweep file on Ray Tune (README "Sweeps and seeds"): a local Ray instance on loopback with a token in
# .ray/ (git-ignored), or the cluster at RAY_ADDRESS. The same command resumes an interrupted sweep.
SWEEP ?= sweeps/learning-rate.yaml
sweep: setup
	invaders sweep "$(SWEEP)"

bench: setup
	invaders bench speed --capacity 1000000

# This project's training speed against Stable-Baselines3's DQN on the same settings and CPU (README "Speed
# and memory"): ~5 min; ARGS="--steps 20000" for longer, ARGS="--max-isa avx2" as on an AVX2-only CPU. SB3 and
# torch live in their own venv, .venv-peers/ (git-ignored, ~1 GB with the CPU-only torch, ~4 GB with PyPI's CUDA
# build), made once from benchmarks/peers-requirements.txt; pip's output goes to .venv-peers.log.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_PIP_ARGS ?=
.PHONY: bench-peers
bench-peers: setup $(PEERS_STAMP)
	invaders bench peers --peers-python $(CURDIR)/$(PEERS_VENV)/bin/python $(ARGS)

$(PEERS_STAMP): benchmarks/peers-requirements.txt
	@echo "creating $(PEERS_VENV) (Stable-Baselines3 + torch; log: .venv-peers.log)"
	@($(PYTHON) -m venv --clear $(PEERS_VENV) && $(PEERS_VENV)/bin/python -m pip install --disable-pip-version-check \
	  $(PEERS_PIP_ARGS) -r benchmarks/peers-requirements.txt) >.venv-peers.log 2>&1 || { rm -rf $(PEERS_VENV); \
	  echo "bench-peers: could not create $(PEERS_VENV): $$(grep -m1 -E '^ERROR' .venv-peers.log || tail -n1 .venv-peers.log)" \
	  "(full log: .venv-peers.log)" >&2; exit 1; }
	touch $@

notebook: setup
	dvc exp run -n $(NOTEBOOK_NAME) $(NOTEBOOK)

# After a finished run in this workspace: copy it into shipped/$(NAME) for the evaluate-shipped stage.
ship: setup
	invaders ship "$(NAME)" --command "$(COMMAND)"

# Copy report/report.md's results table into README.md between its marker comments (tests/test_docs.py compares them).
.PHONY: readme-results
readme-results: setup
	python tools/readme_results.py

# dvc_plots/index.html from the plots in dvc.yaml; the page's template (.dvc/config plots.html_template)
# carries vega, vega-lite and vega-embed inline, so it draws offline (see docs/vega/README.md).
.PHONY: plots
plots: setup
	dvc plots show

lint: setup
	ruff check src stages tests benchmarks
	ruff format --check src stages tests benchmarks

format: setup
	ruff format src stages tests benchmarks
	ruff check --fix src stages tests benchmarks

# --exclude-editable: the project's own (editable, path-bound) install is not a pinned package.
lock: setup
	(echo "# Every package of the environment, pinned; installed with --no-deps. Regenerate: make lock"; \
	 $(BIN)/pip freeze --all --exclude-editable) > requirements.lock
