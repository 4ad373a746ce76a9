# `make test` and `make demo` set up everything on a fresh Debian machine, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PEERS := .peers

.PHONY: test demo bench bench-compare bench-together bench-deps fuzz setup system peers test-deps lint clean

setup: system $(VENV)/.installed

# Debian packages the project needs (fuse3 for `brasil mount`); installed only when missing.
system:
	@sh scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml setup.py src/brasil/exec/_spawn.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,lint]'
	touch $@

# 9P implementations nobody here wrote, each in its own virtualenv: both ship a package `py9p`.
peers: $(PEERS)/p9fs/.installed $(PEERS)/aio9p/.installed

$(PEERS)/p9fs/.installed:
	$(PY) -m venv $(PEERS)/p9fs
	$(PEERS)/p9fs/bin/pip install -q --disable-pip-version-check p9fs==0.0.4 fsspec==2025.9.0
	touch $@

$(PEERS)/aio9p/.installed:
	$(PY) -m venv $(PEERS)/aio9p
	$(PEERS)/aio9p/bin/pip install -q --disable-pip-version-check aio9p==0.3.3
	touch $@

# Real services some tests start (Slurm, PostgreSQL, sshd); a test skips, saying why, only where
# a package cannot be installed.
test-deps:
	@sh scripts/test-deps.sh

test: setup peers test-deps
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m brasil.demo

# The tools the benchmarks compare with (GNU parallel, clush, pdsh…), only when missing.
bench-deps:
	@sh scripts/bench-deps.sh

bench: setup peers bench-deps
	$(BIN)/python bench/ninep_roundtrips.py
	$(BIN)/python bench/sessions.py
	$(BIN)/python bench/tree.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/group.py
	$(BIN)/python bench/pstack.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/stage.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/sim.py

# The working tree against REV, alternating in one run (bench/compare.py): the ratio to quote.
bench-compare: setup
	$(BIN)/python bench/compare.py $(REV) --pairs $${PAIRS:-3} $(if $(FIGURES),--figures $(FIGURES)) $(ARGS)

# Both versions' trees up at once, res N (OP=deploy: whole deployments) interleaved between them;
# OP=leaves: both versions' leaves under one root, their CPU per command compared; OP=idle: the
# idle trees' CPU over the same windows.
bench-together: setup
	$(BIN)/python bench/compare.py $(REV) --together --op $${OP:-res} $(ARGS)

# ruff over everything, mypy over src/ (settings in pyproject.toml); .ci/run runs it first.
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

fuzz: setup
	$(BIN)/pip install -q --disable-pip-version-check atheris==2.3.0
	$(BIN)/python tests/fuzz/fuzz_decode.py -max_total_time=$${FUZZ_SECONDS:-60}

clean:
	rm -rf $(VENV) $(PEERS) .bench-compare build src/*.egg-info .pytest_cache .hypothesis
