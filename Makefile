# Two commands: `make demo` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
UV_VERSION := 0.13.9
EXTRAS ?= dev,spark,aws,snowflake,sources
DEMO_DAYS ?= 3
DEMO_SCALE ?= 1
DEMO_START ?= 2026-11-01
# Test processes (pytest-xdist): every test starts the servers it needs on free loopback ports, so two workers run
# side by side; TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: setup system-deps demo test docs bench bench-engines bench-scale bench-incremental bench-writes bench-publish bench-extract bench-landing deploy-local deploy-local-stop lint clean

comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# Installed byte-compiled (--compile-bytecode, compileall): with PYTHONDONTWRITEBYTECODE set, as on many CI and
# container images, every command would otherwise compile Prefect, Polars and the project from source (~1.5 s).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -c requirements.lock -e ".[$(EXTRAS)]"
	$(PY) -m compileall -q flows tasks backends contracts deployments
	touch $@

setup: $(STAMP)

demo: setup
	$(VENV)/bin/lakehouse demo --days $(DEMO_DAYS) --scale $(DEMO_SCALE) --start $(DEMO_START)

# Headless Chromium for the report test (tests/test_report.py) and PostgreSQL for the Redshift connector's tests
# (tests/test_sources_sql.py); Debian's packages, as root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }; \
	  else echo "error: the tests need Chromium: install Debian's chromium (apt-get install chromium)" >&2; exit 1; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }; \
	  else echo "error: the tests need PostgreSQL: install Debian's postgresql (apt-get install postgresql)" >&2; exit 1; fi; }

test: setup system-deps
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup

# The reference pages generated from the declarations (docs/landing.md, docs/gold.md, docs/engines.md).
docs: setup
	$(PY) -m lakehouse.flows.reference

bench: setup
	$(PY) bench/daily_stages.py --scale 10 --days 1 --passes 3

bench-engines: setup
	$(PY) bench/daily_stages.py --scale 10 --days 1 --engines polars,sail,jvm --passes 3

# How cost grows: one day at scale 1 and at scale 100 (10.1M orders, 1.8 GiB of landing files), time and peak RSS
# per stage, and the time per landing record to set against scale 10's.
bench-scale: setup
	$(PY) bench/daily_stages.py --scale 1 --days 1 --engines polars,sail --passes 3
	$(PY) bench/daily_stages.py --scale 100 --days 1 --engines polars --passes 1

bench-incremental: setup
	$(PY) bench/incremental.py --scale 10 --days 30

bench-writes: setup
	$(PY) bench/parquet_writes.py --scale 10 --days 30

bench-publish: setup
	$(PY) bench/publish.py --scale 10 --days 30

bench-extract: setup system-deps
	$(PY) bench/extract.py --rows 2000000

bench-landing: setup
	$(PY) bench/hostile_files.py

# A local Prefect server (port 4200, state in .prefect/), the work pools, every deployment of
# deployments/prefect.yaml and a process worker; deploy-local-stop stops them by process id.
deploy-local: setup
	$(PY) -m lakehouse.deployments.local_stack up --port 4200

deploy-local-stop:
	$(PY) -m lakehouse.deployments.local_stack down

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf landing lake .prefect
