//! Starts a Redis and a FerretDB through the harness, prints their pids as
//! `redis=<pid> ferretdb=<pid>`, then waits until stdin closes.
//!
//! `tests/harness.rs` kills this process with SIGKILL to prove that servers
//! started by the harness never outlive a test binary that dies mid-run.

use std::io::{Read, Write};

fn main() {
    let redis = e2e::RedisServer::start();
    let mongo = e2e::MongoServer::start();
    let mut out = std::io::stdout();
    writeln!(out, "redis={} ferretdb={}", redis.pid().expect("running"), mongo.pid()).expect("stdout");
    out.flush().expect("stdout");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
