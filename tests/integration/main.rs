//! The integration tests of `gitops-run`: one test binary, one module per area.
//!
//! One binary instead of one per file: the harness in [`common`] is compiled
//! and linked once, every helper in it is used somewhere (so the compiler
//! reports the unused ones), and libtest runs all tests on one thread pool, so
//! tests that mostly wait (webhook retry delays, entrypoint timeouts) overlap
//! with the rest instead of running one file after the other.
//!
//! Run one area with a filter on the module path, e.g.
//! `cargo test --test integration notify::` or `cargo test pass_fetch::`.
//!
//! Most tests wait on processes and servers, not on the CPU. libtest runs as
//! many tests at once as there are CPUs; on a machine with few cores,
//! `RUST_TEST_THREADS=8 cargo test` finishes sooner. Nothing depends on the
//! thread count: each test has its own temporary directories, repositories,
//! servers and ports.

mod common;

mod completions;
mod cron;
mod fleet;
mod hardening;
mod harness_selftest;
mod health;
mod metrics;
mod noop;
mod notify;
mod operator;
mod pass_apply;
mod pass_fetch;
mod pass_https;
mod reboot;
mod receive;
mod receiver_selftest;
mod regressions;
mod secrets;
mod signatures;
mod systemd_units;
