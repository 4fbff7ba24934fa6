# levee — the two commands:
#
#   make run    install missing system packages, build, and start levee on the
#               built-in defaults (store under ./var, collectors on their
#               standard ports, web UI on 127.0.0.1:8080)
#   make test   install what the tests need, then check formatting and lints
#               and run every test
#
# CARGO_TARGET_DIR may point outside the clone (CI keeps a cache there).

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: run test deps test-deps build release fmt lint unit

run: deps release
	mkdir -p var
	$(CARGO) run --release --quiet --bin levee -- run --config config/dev.toml

test: test-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	# Fuzz targets must at least build (scripts/fuzz runs them).
	$(CARGO) build --manifest-path fuzz/Cargo.toml --locked

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
