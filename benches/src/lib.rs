//! Benchmarks: a load generator (closed- and open-loop, HDR histograms),
//! the benchmark stack and its scenarios, and reporting.
//!
//! # Layout
//! - [`load`]: the engine driving keep-alive connections.
//! - [`scenarios`]: the stack (from the e2e harness) and each scenario.
//! - [`report`]: table, JSON and SVG chart.
//! - [`soak`]: the soak test under chaos, with its consistency checker.
//! - [`reload`]: configuration reloads and socket hand-overs under load.
//! - [`programs`]: what the soak and reload drivers share.

pub mod load;
pub mod programs;
pub mod reload;
pub mod report;
pub mod scenarios;
pub mod soak;
