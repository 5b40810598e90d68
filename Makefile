PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE ?= samples/short_hamilton_clip.mp4
OUT ?= out

.PHONY: venv run test lint bench serve clean chromium

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on disk (no multi-GB CUDA download); see README.
	$(BIN)/python -m pip install -q "torch==2.13.0" 
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/vcn run $(SAMPLE) --out $(OUT)

# Headless Chromium for tests/test_report.py (Debian package; needs root when it is missing).
chromium:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: venv chromium
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(OUT)
