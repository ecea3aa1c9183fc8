# Two commands do all the set-up on a machine with Python 3.11+, git and make:
#   make demo   - generate Nexmark data and run the pipelines in a real Dagster instance
#   make stream - the streaming quickstart: live producer + every pipeline continuously
#   make test   - run every test
# Both create .venv and install the locked dependencies with uv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
export UV_CACHE_DIR ?= $(CURDIR)/.cache/uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_PYTHON_DOWNLOADS := never
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo stream test test-fast ui observe prod-local bench bench-nexmark bench-nexmark-latency bench-scale lint validate catalog-snapshot clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir uv==$(UV_VERSION)

# Bytecode compiled once at install: every Dagster run starts a worker process that imports
# Dagster and the code location, and where .pyc files are not written on import
# (PYTHONDONTWRITEBYTECODE=1, read-only installs) each one compiled them from source again
# (launch 10.7 s -> 2.7 s per run, docs/benchmarks.md).
$(VENV)/.synced: $(BIN)/uv pyproject.toml uv.lock
	$(BIN)/uv sync --frozen --compile-bytecode --python $(BIN)/python
	$(BIN)/python -m compileall -q dataflare_platform > /dev/null
	@touch $@

setup: $(VENV)/.synced

demo: setup
	$(BIN)/dataflare audit init && $(BIN)/dataflare demo

# Topics, Dagster (web UI on 127.0.0.1:3000), a live Nexmark producer and every shipped
# pipeline running continuously; prints output as it arrives. Ctrl-C stops all of it.
stream: setup
	$(BIN)/dataflare quickstart

# Three pytest workers (pytest-xdist) on two cores: the end-to-end tier mostly waits on the
# processes it starts. The whole suite went from 43 min 52 s in one process (CI, 2 cores)
# to 32 min 05 s on two workers; on the 22nd session's machine, fresh-clone CI took 30 min
# 27 s on two workers and 28 min 10 s on three (docs/benchmarks.md, "Test suite").
# --dist loadfile keeps a module on one worker, so its shared webserver/daemon fixture
# starts once; every test makes its own home, ports (gateway.process.free_port) and
# PostgreSQL schema or database, so workers share nothing. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

test-fast: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not e2e"

ui: setup
	$(BIN)/dataflare ui --workspace workspace.yaml

# Prometheus + Alertmanager on loopback with deployments/observe (rules, consoles), the
# metrics endpoint and the platform's alert receiver; data under the home's observe/.
# Needs Debian's prometheus and prometheus-alertmanager (it says so when missing).
observe: setup
	$(BIN)/dataflare observe

# The production topology (deployments/production, docs/deploy.md) as separate processes on
# 127.0.0.1 against the local PostgreSQL (database dataflare_prod, created if missing): gRPC
# code server, access-control front, read-only webserver, daemon, metrics exporter; runs
# a smoke check, then serves until Ctrl-C (PROD_LOCAL_ARGS=--smoke-only to stop there).
prod-local: setup
	$(BIN)/python -m dataflare_platform.gateway.topology --root .cache/prod-local $(PROD_LOCAL_ARGS)

bench: setup
	$(BIN)/dataflare bench datagen

# Every Nexmark query (queries.nexmark.QUERIES) over 10 M generated events (Arrow IPC), then latency at a fixed
# offered load; one JSON object per line. Data is generated once under .dataflare/bench.
BENCH_DATA ?= .dataflare/bench/nexmark-10m
# `make bench-nexmark-latency BENCH_SHAPE=skewed` runs the same on a stream unlike the
# reference generator's (Zipf picks, sparse 40-bit ids, 20 % of events up to 2 s late).
BENCH_SHAPE ?= nexmark
BENCH_SKEWED_DATA ?= .dataflare/bench/nexmark-skewed-10m
ifeq ($(BENCH_SHAPE),skewed)
BENCH_LATENCY_DATA = $(BENCH_SKEWED_DATA)
BENCH_SHAPE_ARGS = --shape skewed --late-fraction 0.2
else
BENCH_LATENCY_DATA = $(BENCH_DATA)
BENCH_SHAPE_ARGS =
endif
BENCH_PARQUET ?= $(BENCH_DATA)/parquet/bids.parquet
bench-nexmark: setup
	@test -f $(BENCH_DATA)/_manifest.json || \
		$(BIN)/dataflare generate --out $(BENCH_DATA) --events 10000000 --format ipc
	@for q in $$($(BIN)/python -c 'from dataflare_platform.queries.nexmark import QUERIES; print(*QUERIES)'); do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_DATA)/bids \
			--persons $(BENCH_DATA)/persons --auctions $(BENCH_DATA)/auctions \
			--batch-rows 65536 --repeat 3 || exit 1; \
	done
	@# Parquet input (issue 21 §4), reported apart ("input_format": "parquet"): the same bids
	@# as one snappy Parquet file with 1 M-row row groups; q1 also writing its output.
	@test -f $(BENCH_PARQUET) || \
		$(BIN)/python -m dataflare_platform.bench.parquet_input $(BENCH_DATA)/bids $(BENCH_PARQUET)
	@for q in q1 q2; do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_PARQUET) \
			--batch-rows 65536 --repeat 3 || exit 1; \
	done
	@$(BIN)/dataflare bench nexmark --query q1 --input $(BENCH_PARQUET) \
		--output $(BENCH_DATA)/parquet/q1-output.parquet --batch-rows 65536 --repeat 3
	@for q in q1 q5 q7; do for rate in 1000000 5000000; do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_DATA)/bids \
			--batch-rows 10000 --rate $$rate || exit 1; \
	done; done
	@# Cold start (issue 21): a fresh process per query, a DuckDB sink checkpointing every
	@# 2 batches, so cold_start.first_commit_s is the first output's wait (docs/benchmarks.md).
	@for q in q1 q5 q7; do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_DATA)/bids \
			--batch-rows 10000 --duckdb --checkpoint-every 2 --repeat 1 || exit 1; \
	done

# Latency that holds (issue 21 §5): every query at an offered 1 M events/s in 10 k-row
# batches, a fresh process each (its cold start included), q18/q19 also with a TTL that
# bounds their state. Pipe the JSON lines to `python -m dataflare_platform.bench.report_table`
# for the table in docs/benchmarks.md.
bench-nexmark-latency: setup
	@test -f $(BENCH_LATENCY_DATA)/_manifest.json || \
		$(BIN)/dataflare generate --out $(BENCH_LATENCY_DATA) --events 10000000 --format ipc \
			$(BENCH_SHAPE_ARGS)
	@for q in $$($(BIN)/python -c 'from dataflare_platform.queries.nexmark import QUERIES; print(*QUERIES)'); do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_LATENCY_DATA)/bids \
			--persons $(BENCH_LATENCY_DATA)/persons --auctions $(BENCH_LATENCY_DATA)/auctions \
			--batch-rows 10000 --rate 1000000 || exit 1; \
	done
	@for q in q18 q19; do \
		$(BIN)/dataflare bench nexmark --query $$q --input $(BENCH_LATENCY_DATA)/bids \
			--batch-rows 10000 --rate 1000000 --ttl 60s || exit 1; \
	done

# Partition-parallel scaling: q1 and keyed q5 over a 4-partition topic as 1 and 2 worker
# processes (speed-up), free and with a core per worker process (the per-core speed-up),
# and recovery after a SIGKILLed worker (needs the local PostgreSQL).
bench-scale: setup
	$(BIN)/dataflare bench scale --pin-cores

lint: setup
	$(BIN)/ruff check dataflare_platform dataflare_platform_tests
	$(BIN)/ruff format --check dataflare_platform dataflare_platform_tests

validate: setup
	$(BIN)/python -c "from dataflare_platform.home import ProjectHome; ProjectHome.resolve('$(CURDIR)/.dataflare').ensure()"
	DATAFLARE_HOME=$(CURDIR)/.dataflare DAGSTER_HOME=$(CURDIR)/.dataflare/dagster_home \
		$(BIN)/dagster definitions validate -w workspace.yaml
	DATAFLARE_HOME=$(CURDIR)/.dataflare DAGSTER_HOME=$(CURDIR)/.dataflare/dagster_home \
		$(BIN)/dg check defs

# Rewrite the catalog snapshot (asset graph, checks, jobs, sensors, schedules) after a
# deliberate change to the definitions; commit it with the change.
catalog-snapshot: setup
	DATAFLARE_UPDATE_SNAPSHOT=1 $(BIN)/pytest -q dataflare_platform_tests/defs/test_catalog.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
