# Strongroom — the two commands a newcomer needs on a fresh Debian machine:
#   make run   installs what is missing, builds, and runs the appliance on its embedded
#              default (SoftHSM token + swtpm + self-signed TLS under ./.strongroom-dev)
#   make test  installs what is missing and runs every check and test
SHELL := /bin/bash
DEBIAN_PACKAGES := softhsm2 swtpm swtpm-tools libtss2-dev libtss2-tcti-swtpm0 tpm2-tools pkg-config opensc wrk clang jq curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEV_DIR ?= .strongroom-dev
PORT ?= 8443

.PHONY: deps run test lint unit bench

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

run: deps
	cargo run --release --bin strongroom -- dev --dir $(DEV_DIR) --port $(PORT)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings

test: deps lint
	cargo test --workspace --all-features

bench: deps
	benches/run.sh
