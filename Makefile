# memfdw: in-memory OLTP tables for PostgreSQL 15.
#   make run      install what is missing, build, start a local cluster with memfdw, load a demo, open psql
#   make test     every test: engine (threads + forked processes), in-server pgrx tests, end-to-end
#   make install  build (release) and install the extension into the system PostgreSQL 15
#   make bench    engine benchmarks and memory-vs-heap SQL benchmarks
#   make stop     stop the local cluster

SHELL := /bin/bash
PG_CONFIG ?= /usr/bin/pg_config
export PATH := $(HOME)/.cargo/bin:$(PATH)
SUDO_FLAG := $(shell [ "$$(id -u)" -ne 0 ] && echo --sudo)
PGRX_TEST_DIR ?= /tmp/memfdw-pgrx-test

.PHONY: setup install run stop test test-engine test-pgrx test-e2e bench bench-smoke lint clean

setup:
	@bash scripts/setup.sh

# Installing rewrites memfdw.so in place, which crashes servers that have it loaded:
# the local cluster is stopped first (make run starts it again).
install: setup
	@bash scripts/pg.sh stop-if-running
	cd fdw && cargo pgrx install --release --pg-config $(PG_CONFIG) $(SUDO_FLAG)

run: install
	@bash scripts/run.sh

stop:
	@bash scripts/pg.sh stop

test: setup
	@bash scripts/test.sh

test-engine:
	timeout 1200 cargo test -p memfdw-engine

test-pgrx:
	@bash scripts/pg.sh stop-if-running
	@mkdir -p $(PGRX_TEST_DIR) && { [ "$$(id -u)" -ne 0 ] || chown postgres $(PGRX_TEST_DIR); }
	cd fdw && timeout 1800 cargo pgrx test pg15 --runas postgres --pgdata $(PGRX_TEST_DIR)/data

# The in-server tests install a test build; the end-to-end tests need the real one.
test-e2e: install
	timeout 1800 cargo test -p memfdw-e2e -- --test-threads=2

bench: install
	python3 benches/oltp_vs_heap.py
	cargo bench -p memfdw-engine
	bash benches/sql_vs_heap.sh
	bash benches/pgbench_vs_heap.sh
	bash benches/sysbench_vs_heap.sh
	bash benches/recovery.sh
	bash benches/bulk_load.sh
	bash benches/moving_data.sh

# CI runs this short smoke of the SQL benchmarks (not a test: they print ratios).
bench-smoke: install
	BENCH_SECONDS=1 bash benches/sql_vs_heap.sh
	BENCH_SECONDS=1 BENCH_SCALE=1 bash benches/pgbench_vs_heap.sh
	BENCH_SECONDS=1 SB_SIZE=10000 bash benches/sysbench_vs_heap.sh
	BENCH_SECONDS=3 BENCH_REPS=1 BENCH_SCALES=1 BENCH_CLIENTS=8 BENCH_WORKLOADS="select plpgsql hot10" python3 benches/oltp_vs_heap.py
	ROWS=20000 bash benches/recovery.sh
	ROWS=20000 bash benches/moving_data.sh
	@bash scripts/pg.sh stop

lint:
	cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

clean: stop
	cargo clean
	rm -rf target/pgdata $(PGRX_TEST_DIR)
