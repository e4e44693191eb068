# gem-data: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
TORCH := torch==2.13.0
export RAY_USAGE_STATS_ENABLED := 0

ENVS ?= .envs
MODEL_TESTS := qwen3 sam3 cotracker3 depth_anything_3

.PHONY: install chromium demo demo-models model-envs test test-fast test-models bench bench-models lint chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, pinned: on these machines 2.13.0 is a CPU build on disk; an unpinned
	@# torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,train]"
	@rm -f $(VENV)/.installed-*
	@touch $@

# The preview tests open pages in Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the preview tests use it)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(BIN)/gem-data build --source droid --output out/demo
	@echo
	@echo "Look at out/demo/report.html (counts, quality against ground truth, throughput, distributions),"
	@echo "out/demo/manifest.json (the dataset's commit point) and out/demo/shards/*.tar (webdataset shards)."
	@echo "See samples: $(BIN)/gem-data preview out/demo --out out/demo-preview && open out/demo-preview/index.html"
	@echo "Check it:    $(BIN)/gem-data validate out/demo"

# One Python environment per model backend (pinned, reused while its recipe is unchanged).
model-envs: install
	$(BIN)/gem-data models envs --dir $(ENVS)

# The four real model libraries on the CPU: random weights with the real layout, two
# episodes of the bundled sample through `gem-data build`, then `gem-data validate`.
demo-models: model-envs
	$(BIN)/gem-data models init-random --out out/models-random --envs $(ENVS)
	$(BIN)/gem-data build --source droid --output out/demo-models --backends gpu --stage depth=depth_anything_3 \
	    --backend-config out/models-random/backends.yaml --limit-episodes 2 --episodes-per-partition 1
	$(BIN)/gem-data validate out/demo-models
	@echo "Look at out/demo-models/report.html: every stage ran its real model (random weights)."

test: install chromium
	$(BIN)/python -m pytest -q -m "not models"
	$(MAKE) --no-print-directory test-models

test-fast: install chromium
	$(BIN)/python -m pytest -q -m "not slow and not models"

# Each backend's tests run inside its own environment; then a build through all four.
test-models: model-envs
	@set -e; for b in $(MODEL_TESTS); do \
	  echo "== models: $$b (in $(ENVS)/$$b)"; \
	  GEM_DATA_MODEL_ENV=$$b $(ENVS)/$$b/bin/python -m pytest -q -p no:cacheprovider tests/test_models_$$b.py; \
	done
	GEM_DATA_MODEL_ENV=all GEM_DATA_ENVS=$(ENVS) $(BIN)/python -m pytest -q -m models tests/test_models_build.py

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/shards.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/readers.py
	$(BIN)/python bench/importers.py
	$(BIN)/python bench/gpu_feed.py

# Each model backend at its real size on this CPU (for information; docs/gpu.md).
bench-models: model-envs
	$(BIN)/python bench/models.py --envs $(ENVS)

# The fault suite at full strength (`make test` runs it with CHAOS_ROUNDS=3).
chaos: install chromium
	CHAOS_ROUNDS=12 $(BIN)/python -m pytest -q tests/test_chaos.py tests/test_engine.py -k "sigkill or s3 or damaged or malformed or full_disk or dead"

lint: install
	$(BIN)/ruff check engine pipelines schemas shards trainer tests bench

clean:
	rm -rf out .pytest_cache  # the model environments stay: rm -rf $(ENVS) to rebuild them
