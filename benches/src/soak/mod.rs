//! The soak test: a fixed offered rate of reads and writes through two
//! proxy instances sharing one Redis, for minutes, while a chaos loop kills
//! and pauses Redis and restarts the origin and the client drops some writes
//! mid-write; a checker that knows every committed version of every user
//! judges each answer.
//!
//! # Layout
//! - [`ledger`]: per-user versions and what makes a read stale (pure).

pub mod ledger;
