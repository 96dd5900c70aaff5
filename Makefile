# Two front doors: `make app` and `make test`. Everything they need is installed from here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
PORT ?= 7860
MODEL ?=
export GRADIO_ANALYTICS_ENABLED := False
export WANDB_MODE ?= offline

.PHONY: app test venv chromium lint bench clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; safe to run again and again.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@$(CHROMIUM) --version

app: venv
	$(BIN)/python app.py --port $(PORT) $(if $(MODEL),--model $(MODEL),)

test: venv chromium
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Each benchmark prints its table; the figures, commands and machine are in BENCHMARKS.md. About 45 minutes.
# The crawler's is run beside gallery-dl (the `bench` extra, from PyPI).
bench: venv
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/diagnostics.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/crawl.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
