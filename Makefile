# Two commands on a fresh machine: `make demo` and `make test`.
# uv is bootstrapped into .tools/ when it is not on PATH (see README: why not pip).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: setup demo test test-image lint bench bench-gpu search-sim search-curves clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

# Compiled bytecode: every trial, worker and test subprocess imports torch; without .pyc
# files (e.g. under PYTHONDONTWRITEBYTECODE) each import recompiles it.
.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

setup: .venv/.synced

# A small Optuna study on the embedded digits set: 2 workers, TPE + hyperband pruning, every
# trial an offline W&B run (runs/<study>/trial-N/wandb), ending with the leaderboard and the
# study's HTML report (runs/<study>/report.html, written even when some trials failed).
demo: setup
	study=demo-$$(date +%Y%m%d-%H%M%S); status=0; \
	$(UV) run --frozen flexcnn optuna run sweeps/demo.yaml --study $$study \
		--storage runs/optuna-demo.log --workers 2 --wandb-mode offline || status=$$?; \
	$(UV) run --frozen flexcnn report --storage runs/optuna-demo.log --study $$study || status=$$?; \
	exit $$status

test: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen pytest $(PYTEST_ARGS)

# The Docker image, built with buildah and run for real (as root; needs buildah and debootstrap,
# which .ci/run installs): base, build, the demo and two Optuna workers in containers, no secret
# in any layer. Not part of `make test`. Args for tests/image.py: IMAGE_TEST_ARGS=--cold.
test-image: setup
	UV=$(UV) $(UV) run --frozen python -m tests.image $(IMAGE_TEST_ARGS)

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

bench: setup
	$(UV) run --frozen python -m bench

# Every CUDA row (bench/gpu.py): ResNet50/VGG19 bf16+channels_last vs fp32 and vs published,
# FlexibleCNN resident vs DataLoader, trials per GPU, the precision grid, run() vs a minimal loop.
# Under 8 minutes by its own timeout; without a CUDA device it says so and exits 0.
bench-gpu: setup
	timeout --kill-after=15 480 $(UV) run --frozen python -m bench.gpu

# Search strategies replayed on the learning-curve benchmark (bench/searchsim): from the committed
# cache in seconds; FLEXCNN_SIM_RECOMPUTE=all replays everything again (hours on 2 cores).
search-sim: setup
	$(UV) run --frozen python -m bench search-sim

# Measure (more) learning curves for that benchmark: resumable, low priority, CPU-second budget.
search-curves: setup
	nice -n 19 $(UV) run --frozen python -m bench.searchsim.generate --workers 2 --cpu-budget $${CPU_BUDGET:-7200}

clean:
	rm -rf .venv .tools runs .pytest_cache
