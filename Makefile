# Two commands on a fresh machine: `make demo` and `make test`.
# uv is bootstrapped into .tools/ when it is not on PATH (see README: why not pip).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	touch $@

setup: .venv/.synced

demo: setup
	$(UV) run --frozen flexcnn train configs/demo-digits.yaml

test: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

bench: setup
	$(UV) run --frozen python -m bench

clean:
	rm -rf .venv .tools runs .pytest_cache
