# make test   install what is missing (apt, pip), build, check Python 3.6
#             compatibility, run the suite under Python 3.11 and 3.6
# make demo   the end-to-end demo on a scratch directory
# make bench  the benchmarks; the session rewrites the generated table of
#             docs/benchmarks.md (a partial run, PYTEST_ARGS="-k ...", only the
#             rows it measured)
SHELL := /bin/bash
PYTHON311 ?= python3
PYTHON36 ?= $(shell pyenv prefix 3.6.15 2>/dev/null)/bin/python3.6
VENV := .venv
PY311 := $(VENV)/py311/bin/python
PY36 := $(VENV)/py36/bin/python
BUILD_INPUTS := setup.py build_ffi.py src/vz7native/__init__.py
PYTEST_ARGS ?=

.PHONY: test demo bench system-deps check-py36 test-py311 test-py36 clean

test: check-py36 test-py311 test-py36

system-deps:
	tools/install-system-deps

$(VENV)/py311/.ready: requirements/py311.txt $(BUILD_INPUTS) | system-deps
	tools/make-venv $(PYTHON311) $(VENV)/py311 requirements/py311.txt
	touch $@

$(VENV)/py36/.ready: requirements/py36.txt $(BUILD_INPUTS) | system-deps
	tools/make-venv $(PYTHON36) $(VENV)/py36 requirements/py36.txt 21.3.1
	touch $@

check-py36: $(VENV)/py311/.ready
	$(VENV)/py311/bin/vermin --no-tips --violations --target=3.6- src tests
	@echo "vermin: src/ and tests/ are Python 3.6 compatible"

test-py311: $(VENV)/py311/.ready
	$(PY311) -m pytest tests $(PYTEST_ARGS)

test-py36: $(VENV)/py36/.ready
	$(PY36) -m pytest tests $(PYTEST_ARGS)

demo: $(VENV)/py311/.ready
	$(PY311) demo/run.py

bench: $(VENV)/py311/.ready
	$(PY311) -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info src/vz7native/_ploop*.so src/vz7native/_ploop.c \
		src/vz7native/_walk*.so src/vz7native/_walk.c
