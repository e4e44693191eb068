# gem-data: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
TORCH := torch==2.13.0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install chromium demo test test-fast bench lint chaos clean

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

test: install chromium
	$(BIN)/python -m pytest -q

test-fast: install chromium
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/shards.py
	$(BIN)/python bench/scale.py

# The fault suite at full strength (`make test` runs it with CHAOS_ROUNDS=3).
chaos: install chromium
	CHAOS_ROUNDS=12 $(BIN)/python -m pytest -q tests/test_chaos.py tests/test_engine.py -k "sigkill or s3 or damaged or malformed or full_disk or dead"

lint: install
	$(BIN)/ruff check engine pipelines schemas shards trainer tests bench

clean:
	rm -rf out .pytest_cache
