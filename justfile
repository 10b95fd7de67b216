# Tasks for gitops-run. `just --list` shows them.

# Build the debug binary
build:
    cargo build

# Build the optimised, stripped binary
release:
    cargo build --release --locked

# All tests as CI runs them, e2e last (bash .ci/run); as root, apt-installs missing test servers and tools
test:
    bash .ci/run

# Formatting and lints, as required before every commit
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Real passes on the shipped example, state in a temp dir
demo:
    bash docs/example/demo.sh

# Debian package in target/debian/ (installs cargo-deb when it is missing)
deb:
    bash docs/debian/build-deb.sh

# Check the package with lintian
lint-deb: deb
    lintian --fail-on error $(ls -t target/debian/gitops-run_*.deb | head -n 1)

# End to end, as root: the .deb in a real systemd (nspawn container), its timer, receiver and commands
e2e:
    bash tests/e2e/run.sh

# Push-to-deploy latency through the installed units in the e2e container; as root
push-latency:
    bash bench/push-latency.sh

# Benchmarks against the git CLI and ansible-pull; writes docs/benchmarks.md
bench:
    bash bench/run.sh
