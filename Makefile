# levee — the two commands:
#
#   make run    install missing system packages, build, and start levee on the
#               built-in defaults (store under ./var, collectors on their
#               standard ports, web UI on 127.0.0.1:8080)
#   make test   install what the tests need, then check formatting and lints
#               and run every test that needs nothing outside the repository
#               (real captures: the golden set in tests/data/captures; a
#               short crash-restart torture, tests/crash.rs)
#
# and, for the full crash-restart torture (several minutes):
#
#   make test-crash    100 cycles of kill -9 and restart of levee, under
#                      attack traffic with a router peer, at random moments
#                      and at named crash points, with the CLI and the API
#                      hammering the data dir; reports cycles, failures and
#                      the worst time to come back. CRASH_CYCLES=N for more
#                      or fewer, CRASH_SEED=S to repeat a run.
#
# and, with the capture corpus beside the clone (../shared/captures):
#
#   make test-corpus   the tests over the whole corpus (decode counts, tshark
#                      and netgauze cross-checks); fails when it is missing.
#                      CAPTURES=DIR points it elsewhere.
#
# CARGO_TARGET_DIR may point outside the clone (CI keeps a cache there).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# The capture corpus `make test-corpus` reads (LEVEE_CAPTURES for the tests).
CAPTURES ?= ../shared/captures

.PHONY: run test test-corpus test-crash deps test-deps build release fmt lint unit

run: deps release
	mkdir -p var
	$(CARGO) run --release --quiet --bin levee -- run --config config/dev.toml

test: test-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	# --no-fail-fast: one failing test binary must not hide the others' failures.
	$(CARGO) test --workspace --locked --no-fail-fast
	# Fuzz targets must at least build (scripts/fuzz runs them).
	$(CARGO) build --manifest-path fuzz/Cargo.toml --locked

# The corpus tests are the #[ignore]d ones of these three test targets;
# without the corpus they fail (they never skip).
test-corpus: test-deps
	@test -f "$(CAPTURES)/PROVENANCE.md" || { \
	  echo "make test-corpus: no capture corpus at $(abspath $(CAPTURES)) (no PROVENANCE.md there);" \
	       "put shared/ beside the clone or run make test-corpus CAPTURES=DIR" >&2; exit 1; }
	LEVEE_CAPTURES="$(abspath $(CAPTURES))" $(CARGO) test --locked --no-fail-fast \
	  -p levee-collectors --test captures --test tshark \
	  -p levee --test differential \
	  -- --ignored

# The #[ignore]d 100-cycle test of tests/crash.rs (make test runs the short
# one). --nocapture: the per-cycle lines and the summary are the report.
test-crash: test-deps
	LEVEE_CRASH_CYCLES="$(CRASH_CYCLES)" LEVEE_CRASH_SEED="$(CRASH_SEED)" \
	  $(CARGO) test --locked -p levee --test crash -- --ignored --nocapture

deps:
	scripts/install-deps

test-deps:
	scripts/install-deps --test

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release --bin levee

fmt:
	$(CARGO) fmt --all
