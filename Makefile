PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE ?= samples/short_hamilton_clip.mp4
OUT ?= out

.PHONY: venv run test lint lock bench serve serve-stop clean chromium

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on disk (no multi-GB CUDA download); see README.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	# Every other package at the versions in constraints.txt: results are measured with them.
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
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

# Re-pin constraints.txt to what .venv holds (after upgrading a package on purpose).
lock: venv
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# A Prefect server on 127.0.0.1, the deployments of prefect.yaml and a process worker, all in the
# background (pids and logs under .serve/); `make serve-stop` stops them. See docs/operations.md.
SERVE_DIR := .serve
PREFECT_PORT ?= 4200
LIBRARY ?= library
SERVE_API := http://127.0.0.1:$(PREFECT_PORT)/api
SERVE_ENV := PREFECT_API_URL=$(SERVE_API) VCN_ROOT=$(CURDIR) VCN_LIBRARY=$(abspath $(LIBRARY)) \
	VCN_OUT=$(abspath $(OUT)) PREFECT_SERVER_ANALYTICS_ENABLED=false

serve: venv
	@mkdir -p $(SERVE_DIR)
	@if [ -f $(SERVE_DIR)/server.pid ] && kill -0 $$(cat $(SERVE_DIR)/server.pid) 2>/dev/null; then \
		echo "serve: server already running (pid $$(cat $(SERVE_DIR)/server.pid))"; \
	else \
		$(SERVE_ENV) setsid $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) \
			> $(SERVE_DIR)/server.log 2>&1 & echo $$! > $(SERVE_DIR)/server.pid; \
	fi
	@echo "serve: waiting for $(SERVE_API)/health"; \
	for i in $$(seq 240); do \
		$(BIN)/python -c "import urllib.request as u; u.urlopen('$(SERVE_API)/health', timeout=2)" \
			2>/dev/null && exit 0; sleep 1; \
	done; echo "serve: no server after 240 s; see $(SERVE_DIR)/server.log"; exit 1
	$(SERVE_ENV) $(BIN)/prefect work-pool create vcn-process --type process --overwrite
	$(SERVE_ENV) $(BIN)/prefect --no-prompt deploy --all
	@if [ -f $(SERVE_DIR)/worker.pid ] && kill -0 $$(cat $(SERVE_DIR)/worker.pid) 2>/dev/null; then \
		echo "serve: worker already running (pid $$(cat $(SERVE_DIR)/worker.pid))"; \
	else \
		$(SERVE_ENV) setsid $(BIN)/prefect worker start --pool vcn-process \
			> $(SERVE_DIR)/worker.log 2>&1 & echo $$! > $(SERVE_DIR)/worker.pid; \
	fi
	@echo "serve: UI at http://127.0.0.1:$(PREFECT_PORT); export PREFECT_API_URL=$(SERVE_API)"

# The worker stops on SIGINT (a second one makes it kill itself); flow runs it started live in
# their own sessions, so they are killed by pid. The server stops on SIGTERM to its group.
serve-stop:
	@for entry in worker:INT server:TERM; do \
		name=$${entry%%:*}; sig=$${entry#*:}; f=$(SERVE_DIR)/$$name.pid; \
		[ -f $$f ] || continue; \
		pid=$$(cat $$f); \
		$(BIN)/python -c "import psutil, sys; print(' '.join(str(c.pid) for c in \
			psutil.Process(int(sys.argv[1])).children(recursive=True)))" $$pid > $(SERVE_DIR)/$$name.children 2>/dev/null; \
		kill -$$sig $$pid 2>/dev/null && echo "serve-stop: stopping the $$name (pid $$pid)"; \
		for i in $$(seq 15); do ps -o stat= -p $$pid 2>/dev/null | grep -q '^[^Z]' || break; sleep 1; done; \
		kill -$$sig $$pid 2>/dev/null; sleep 1; \
		kill -KILL -$$pid $$(cat $(SERVE_DIR)/$$name.children) 2>/dev/null; \
		rm -f $$f $(SERVE_DIR)/$$name.children; \
	done

clean:
	rm -rf $(VENV) $(OUT)
