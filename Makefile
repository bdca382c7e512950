# FusionPlane: one place for the commands a developer and CI run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run-deps test-deps run demo sim check test bench bench-core bench-pipes bench-gpu bench-api bench-policy bench-simulate bench-signals bench-providers bench-ha bench-dataplane bench-sim bench-placement bench-webhooks clean

# Debian packages, installed when missing and we are root (CI, containers); otherwise say what to install.
# run-deps: what `make run` and `make demo` need beyond Python: ffmpeg/ffprobe for the core.
# test-deps: what only the tests need: PostgreSQL 15 for the store's tests, Prometheus (server + promtool)
# for the signal tests, Node.js + npm for Azurite (the Blob emulator), headless Chromium (and a font) for
# the simulator's HTML report test, chromedriver for the console's. system-deps is both.
PG_BIN ?= /usr/lib/postgresql/15/bin
APT_INSTALL_MISSING = if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing)" >&2; exit 1; fi; \
	fi

run-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing="$$missing ffmpeg"; \
	$(APT_INSTALL_MISSING)

test-deps:
	@missing=""; \
	[ -x $(PG_BIN)/initdb ] && [ -x $(PG_BIN)/postgres ] || missing="$$missing postgresql"; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium fonts-dejavu-core"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	$(APT_INSTALL_MISSING)

system-deps: run-deps test-deps

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Azurite (tests/support/azurite.py) from package.json, pinned by package-lock.json; reinstalled when either changes
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

setup: system-deps $(STAMP) $(NODE_STAMP)

# The main job on embedded defaults: the control plane at http://$(HOST):$(PORT)
# (SQLite under var/, policies/default.json, the local provider), printing a dev token.
# Needs only Python and ffmpeg. HOST and PORT come from the command line only (make run PORT=9090),
# not from the environment, where HOST may name the machine.
HOST = 127.0.0.1
PORT = 8080
run: run-deps $(STAMP)
	$(VENV)/bin/fusionctl serve --host $(HOST) --port $(PORT)

# The face-swap core alone, no server: swaps into the astronaut photo and a 720p clip.
demo: run-deps $(STAMP)
	$(VENV)/bin/fusionctl demo

# The launch-day simulator: the seed's launch day in miniature (--scale 0.002: about 1,000 tasks, ~2 min on 2 cores), every baseline,
# the comparison printed and the HTML report written (docs/simulator.md). SIM_SCALE=1 runs the full 500,000.
# SIM_SCENARIO names another scenario of policies/scenarios/: make sim SIM_SCENARIO=spot-drought (or price-spike).
SIM_SCALE ?= 0.002
SIM_SCENARIO ?= launch-day
sim: setup
	@test -f policies/scenarios/$(SIM_SCENARIO).json || { echo "no scenario policies/scenarios/$(SIM_SCENARIO).json" >&2; exit 2; }
	@mkdir -p build/sim
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/fusionctl sim run policies/scenarios/$(SIM_SCENARIO).json --baselines all \
		--scale $(SIM_SCALE) --report build/sim/$(SIM_SCENARIO).html -o json > build/sim/$(SIM_SCENARIO).json
	$(PY) -c "import json; from controlplane.cli.sim import print_comparison; print_comparison(json.load(open('build/sim/$(SIM_SCENARIO).json')))"

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# no SDK in a test may reach a cloud metadata address (tests/support/no_metadata.py; conftest sets them too)
# --durations=30: every CI log names the slowest tests (the suite must stay under 25 minutes on 2 cores)
test: setup
	AWS_EC2_METADATA_DISABLED=true AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9 ORT_DISABLE_TELEMETRY=1 $(VENV)/bin/pytest --durations=30

bench: bench-core bench-pipes bench-api bench-policy bench-simulate bench-signals bench-providers bench-ha bench-dataplane bench-sim bench-placement bench-webhooks

bench-core: setup
	$(PY) -m bench.core

# raw 1080p frames between ffmpeg and Python, before and after issue 19's pipes; JSON in build/bench/pipes.json
bench-pipes: setup
	$(PY) -m bench.pipes

# bench-gpu: on a GPU node. Its own venv, .venv-gpu, with the worker image's pinned ONNX Runtime
# stack (deploy/worker/requirements-gpu.txt, from PyPI and pypi.nvidia.com) in place of the CPU
# build. Offline, with CUDA 13 libraries already on the node: GPU_WHEELHOUSE=DIR holding the
# onnxruntime-gpu wheel (and the project's dependencies) installs from there, nothing else fetched.
# BENCH_GPU_ARGS passes options on (--providers, --encoders, --frames, --repeat, --no-write).
# On a machine lent through the device tool (no venv, no fetching, 64 MiB a call): bench/gpu_device.sh.
GPU_VENV ?= .venv-gpu
GPU_WHEELHOUSE ?=
BENCH_GPU_ARGS ?=
bench-gpu: run-deps
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	@if [ -n "$(GPU_WHEELHOUSE)" ]; then \
	  $(GPU_VENV)/bin/pip install -q --no-index --find-links "$(GPU_WHEELHOUSE)" -e ".[dev]" \
	  && $(GPU_VENV)/bin/pip uninstall -q -y onnxruntime \
	  && $(GPU_VENV)/bin/pip install -q --no-index --find-links "$(GPU_WHEELHOUSE)" --no-deps \
	       "$$(grep '^onnxruntime-gpu==' deploy/worker/requirements-gpu.txt)"; \
	else \
	  $(GPU_VENV)/bin/pip install -q -e ".[dev]" \
	  && $(GPU_VENV)/bin/pip uninstall -q -y onnxruntime \
	  && $(GPU_VENV)/bin/pip install -q --extra-index-url https://pypi.nvidia.com -r deploy/worker/requirements-gpu.txt; \
	fi
	ORT_DISABLE_TELEMETRY=1 $(GPU_VENV)/bin/python -m bench.gpu $(BENCH_GPU_ARGS)

bench-api: setup
	$(PY) -m bench.api

bench-policy: setup
	$(PY) -m bench.policy

bench-simulate: setup
	$(PY) -m bench.simulate

bench-signals: setup
	$(PY) -m bench.signals

bench-providers: setup
	$(PY) -m bench.providers

bench-ha: setup
	$(PY) -m bench.ha

# webhook deliveries/s to a loopback receiver, and what the outbox costs the scheduler per task (docs/performance.md)
bench-webhooks: setup
	AWS_EC2_METADATA_DISABLED=true $(PY) -m bench.webhooks

# the launch-day simulator's speed at small scales, and its determinism (docs/performance.md, "Simulator")
bench-sim: setup
	AWS_EC2_METADATA_DISABLED=true $(PY) -m bench.sim

# the shipped policy against every baseline on every shipped scenario (FUSIONPLANE_BENCH_SCALE, default 0.01)
bench-placement: setup
	AWS_EC2_METADATA_DISABLED=true $(PY) -m bench.placement

# 1 GiB through tus (whole, and cut at half then resumed) and staged into moto S3 and Azurite (node_modules)
bench-dataplane: setup
	$(PY) -m bench.dataplane

clean:
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache
