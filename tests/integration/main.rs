//! ci-janitor's integration tests: one module per topic, all in one test binary so the
//! process tests can share [`support::serial`] (sweeps look at the whole machine, so
//! tests that start processes must never overlap).

// A failed expectation in a test should stop it with a panic, and the support code
// panics with context on purpose (a clear panic is the best failure report a test can
// give), so unwrap/expect are allowed throughout this test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Not every topic uses every helper.
#[allow(dead_code)]
mod support;

mod action;
mod deployments;
mod diagnose;
mod fixture_selftest;
mod gate;
mod github_api;
mod guard;
mod hang;
mod hooks;
mod janitor;
mod pipes;
mod release;
mod reports;
mod run;
mod soak;
mod static_build;
mod sweep;
mod trust;
