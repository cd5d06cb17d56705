# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both build .venv from pyproject.toml, pinned by constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast check fmt bench mutate clean constraints browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mailgate run

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The fast subset while working: no test that starts a worker, web or other process of its own
# (the session's Redis and SMTP server still start). `make test`, and CI, run everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration and not browser"

# The Flower browser test drives Debian's chromium with Playwright; install it when missing
# (as root, with apt). Without it that one test is skipped, with its reason printed.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser test"; \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	      echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and not root: the browser test will be skipped"; fi; }

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Not part of `make test`: about 25 minutes on a quiet 2-core machine (see README).
bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[bench]'
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null 2>&1; } || \
	  echo "wrk not installed: the Python load generator is used"
	$(BIN)/python -m bench $(BENCH_ARGS)

# Breaks each delivery guarantee's mechanism in a temporary copy of the tree and checks that
# the tests guarding it fail (tools/mutate.py; README, Guarantees). Exits 1 if a mutant survives.
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

# Re-pin after changing dependencies in pyproject.toml.
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable --exclude mailgate > constraints.txt

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
