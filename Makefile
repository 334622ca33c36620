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
EVAL_ARGS = $(if $(EPISODES),--eval.episodes $(EPISODES)) $(if $(SEED),--eval.seed $(SEED))
DATA    ?=
DATA_ARGS = $(if $(DATA),--data $(DATA))
STAGE   = $(PY) -m pipeline

.PHONY: all rollouts train-vae series train-rnn train-controller evaluate temperature-sweep doom-temperature-sweep iterate report export-agent test bench lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Every stage that exists so far, in order.
all: $(STAMP)
	$(MAKE) --no-print-directory rollouts
	$(MAKE) --no-print-directory train-vae
	$(MAKE) --no-print-directory series
	$(MAKE) --no-print-directory train-rnn
	$(MAKE) --no-print-directory train-controller
	$(MAKE) --no-print-directory evaluate
	$(MAKE) --no-print-directory temperature-sweep
	$(MAKE) --no-print-directory report

rollouts: $(STAMP)
	$(STAGE).rollouts --config $(CONFIG) --run $(RUN) $(ARGS)

train-vae: $(STAMP)
	$(STAGE).train_vae --config $(CONFIG) --run $(RUN) $(ARGS)

series: $(STAMP)
	$(STAGE).series --config $(CONFIG) --run $(RUN) $(ARGS)

train-rnn: $(STAMP)
	$(STAGE).train_rnn --config $(CONFIG) --run $(RUN) $(ARGS)

train-controller: $(STAMP)
	$(STAGE).train_controller --config $(CONFIG) --run $(RUN) $(if $(DREAM),--controller.dream $(DREAM)) $(ARGS)

evaluate: $(STAMP)
	$(STAGE).evaluate --config $(CONFIG) --run $(RUN) --agent $(AGENT) $(EVAL_ARGS) $(ARGS)

# C trained in the dream at each tau of the preset's sweep.temperatures, scored in dream and real env
# (a no-op for presets without temperatures); `make doom-temperature-sweep` is the Doom table.
temperature-sweep: $(STAMP)
	$(STAGE).temperature_sweep --config $(CONFIG) --run $(RUN) $(ARGS)

doom-temperature-sweep:
	$(MAKE) --no-print-directory temperature-sweep CONFIG=$(if $(filter doom-%,$(CONFIG)),$(CONFIG),doom-default)

# One round of the paper's iterative procedure: RUN's agent plays (exploring now and then), M
# retrains on all data, C evolves again; results in RUN/round$(ROUND) and RUN/iterate.csv.
iterate: $(STAMP)
	$(STAGE).iterate --config $(CONFIG) --run $(RUN) --round $(ROUND) $(ARGS)

report: $(STAMP)
	$(STAGE).report --config $(CONFIG) --run $(RUN)

# Pack RUN's V, M (float16) and best C as a self-contained agent: make export-agent RUN=runs/x AGENT=agents/x
export-agent: $(STAMP)
	$(STAGE).export_agent --config $(CONFIG) --run $(RUN) --agent $(AGENT) $(ARGS)

# The experiments on the other generative models (SEEDS.md sections 3-5); DATA= MNIST-format files.
.PHONY: knowledge-sharing distillation vae-pictures
knowledge-sharing: $(STAMP)
	$(STAGE).knowledge_sharing --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

distillation: $(STAMP)
	$(STAGE).distillation --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

vae-pictures: $(STAMP)
	$(STAGE).vae_pictures --config $(CONFIG) --run $(RUN) $(DATA_ARGS) $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check worldmodels pipeline scripts tests
	$(PY) -m pytest tests

# The PyTorch references are benchmark-only (torch 2.13.0 CPU, installed from local disk here).
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m scripts.bench $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check worldmodels pipeline scripts tests

clean-venv:
	rm -rf $(VENV)
