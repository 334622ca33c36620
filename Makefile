# World Models pipeline. Every target bootstraps .venv on first use, so a fresh
# machine needs only `make`. See README.md for the stages and their variables.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
CONFIG  ?= quick
RUN     ?= runs/$(CONFIG)
ARGS    ?=
DREAM   ?=
AGENT   ?= $(RUN)
EPISODES ?=
SEED    ?=
ROUND   ?= 1
PORT    ?= 8765
HOST    ?= 127.0.0.1
EVAL_ARGS = $(if $(EPISODES),--eval.episodes $(EPISODES)) $(if $(SEED),--eval.seed $(SEED))
DATA    ?=
DATA_ARGS = $(if $(DATA),--data $(DATA))
STAGE   = $(PY) -m pipeline

.PHONY: help all rollouts train-vae series train-rnn train-controller evaluate temperature-sweep doom-temperature-sweep iterate iterate-all report export-agent play test bench lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# `make help`: every target with its `##` line, then the variables.
help:  ## this list
	@echo "World Models: make TARGET [VARIABLE=value ...]"
	@echo
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  %-24s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables:"
	@echo "  CONFIG=quick             preset: tiny quick default paper carracing-dream carracing-iterate doom-tiny doom-quick doom-default doom-paper"
	@echo "  RUN=runs/CONFIG          run directory every stage reads and writes"
	@echo "  AGENT=RUN                agent or run dir for evaluate, play, export-agent (e.g. agents/carracing)"
	@echo "  EPISODES= SEED=          evaluate: episodes and first env seed (default: the preset's eval section)"
	@echo "  ROUND=1                  iterate: the round k (iterate-all: rounds 1..iterate.rounds)"
	@echo "  DREAM=                   train-controller: true = C evolves in M's dream"
	@echo "  DATA=                    knowledge-sharing, distillation, vae-pictures: MNIST-format files"
	@echo "  HOST=127.0.0.1 PORT=8765 play: where the page listens (another HOST opens it to the network)"
	@echo "  ARGS=                    extra stage flags, e.g. ARGS='--controller.generations 40'"
	@echo "  RAY_ADDRESS=             a Ray cluster to run on (default: a local Ray)"
	@echo "Each stage's fields and their values: .venv/bin/python -m pipeline.<stage> --config CONFIG --help"

# Every stage that exists so far, in order.
all: $(STAMP)  ## every stage in order: rollouts .. train-controller, evaluate, temperature-sweep, report
	$(MAKE) --no-print-directory rollouts
	$(MAKE) --no-print-directory train-vae
	$(MAKE) --no-print-directory series
	$(MAKE) --no-print-directory train-rnn
	$(MAKE) --no-print-directory train-controller
	$(MAKE) --no-print-directory evaluate
	$(MAKE) --no-print-directory temperature-sweep
	$(MAKE) --no-print-directory report

rollouts: $(STAMP)  ## random-policy episodes in the real env, in parallel on Ray -> RUN/rollouts
	$(STAGE).rollouts --config $(CONFIG) --run $(RUN) $(ARGS)

train-vae: $(STAMP)  ## train V, the VAE (or another vision model) on the frames -> RUN/vision
	$(STAGE).train_vae --config $(CONFIG) --run $(RUN) $(ARGS)

series: $(STAMP)  ## encode every episode with V into z's -> RUN/series
	$(STAGE).series --config $(CONFIG) --run $(RUN) $(ARGS)

train-rnn: $(STAMP)  ## train M, the MDN-RNN, on the series -> RUN/mdnrnn
	$(STAGE).train_rnn --config $(CONFIG) --run $(RUN) $(ARGS)

train-controller: $(STAMP)  ## evolve C with CMA-ES in the real env or in the dream (DREAM=true) -> RUN/controller
	$(STAGE).train_controller --config $(CONFIG) --run $(RUN) $(if $(DREAM),--controller.dream $(DREAM)) $(ARGS)

evaluate: $(STAMP)  ## score AGENT (a run or agents/<name>) on the real env's eval seeds -> AGENT/eval
	$(STAGE).evaluate --config $(CONFIG) --run $(RUN) --agent $(AGENT) $(EVAL_ARGS) $(ARGS)

# C trained in the dream at each tau of the preset's sweep.temperatures, scored in dream and real env
# (a no-op for presets without temperatures); `make doom-temperature-sweep` is the Doom table.
temperature-sweep: $(STAMP)  ## C trained in the dream at each of the preset's taus, scored in dream and real env
	$(STAGE).temperature_sweep --config $(CONFIG) --run $(RUN) $(ARGS)

doom-temperature-sweep:  ## the Doom temperature table (CONFIG=doom-default unless a doom-* preset is set)
	$(MAKE) --no-print-directory temperature-sweep CONFIG=$(if $(filter doom-%,$(CONFIG)),$(CONFIG),doom-default)

# One round of the paper's iterative procedure: RUN's agent plays (exploring now and then), M
# retrains on all data, C evolves again; results in RUN/round$(ROUND) and RUN/iterate.csv.
iterate: $(STAMP)  ## one round ROUND=k of the iterative procedure: agent plays, M retrains, C evolves -> RUN/round<k>
	$(STAGE).iterate --config $(CONFIG) --run $(RUN) --round $(ROUND) $(ARGS)

iterate-all: $(STAMP)  ## rounds 1..iterate.rounds of iterate, resuming where it stopped (CONFIG=carracing-iterate)
	$(STAGE).iterate --config $(CONFIG) --run $(RUN) --all $(ARGS)

report: $(STAMP)  ## pictures and a summary of RUN -> RUN/report
	$(STAGE).report --config $(CONFIG) --run $(RUN)

# Pack RUN's V, M (float16) and best C as a self-contained agent: make export-agent RUN=runs/x AGENT=agents/x
export-agent: $(STAMP)  ## pack RUN's V, M and best C as a self-contained agent -> AGENT
	$(STAGE).export_agent --config $(CONFIG) --run $(RUN) --agent $(AGENT) $(ARGS)

# The experiments on the other generative models (SEEDS.md sections 3-5); DATA= MNIST-format files.
.PHONY: knowledge-sharing distillation vae-pictures
knowledge-sharing: $(STAMP)  ## the knowledge-sharing experiment of the generative models (DATA= MNIST-format files)
	$(STAGE).knowledge_sharing --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

distillation: $(STAMP)  ## the multi-domain distillation experiment (DATA= MNIST-format files)
	$(STAGE).distillation --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

vae-pictures: $(STAMP)  ## the other generative models' reconstructions and traversals
	$(STAGE).vae_pictures --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

# A web page to drive in AGENT's dream and watch its C in the real env and in the dream (docs/play.md):
# make play AGENT=agents/carracing [PORT=8765] [HOST=127.0.0.1; another HOST opens it to the network]
play: $(STAMP)  ## a web page to drive in AGENT's dream and watch its C (HOST=127.0.0.1 PORT=8765)
	$(STAGE).play --agent $(AGENT) --host $(HOST) --port $(PORT) $(ARGS)

test: $(STAMP)  ## ruff and the test suite (tiny presets, under 10 minutes)
	$(PY) -m ruff check worldmodels pipeline scripts tests
	$(PY) -m pytest tests

# The PyTorch references are benchmark-only (torch 2.13.0 CPU, installed from local disk here).
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## speed and memory figures, one line each: name value unit
	$(PY) -m scripts.bench $(ARGS)

lint: $(STAMP)  ## ruff only
	$(PY) -m ruff check worldmodels pipeline scripts tests

clean-venv:  ## remove .venv (the next target reinstalls it)
	rm -rf $(VENV)
