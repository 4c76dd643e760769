//! The harness itself: isolation between servers, and no server left behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{MongoServer, RedisServer};

/// True while `pid` names a live (not zombie) process.
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until_dead(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn servers_die_with_a_test_binary_killed_mid_run() {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_hold-servers"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hold-servers");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("pids line");
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|kv| kv.split_once('=').expect("name=pid").1.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{line}");
    assert!(pids.iter().all(|p| is_alive(*p)), "servers running before the kill");

    holder.kill().expect("SIGKILL the holder"); // no Drop runs in it
    holder.wait().unwrap();

    for pid in pids {
        assert!(wait_until_dead(pid), "server {pid} outlived its killed parent");
    }
}

#[test]
fn servers_stop_on_drop() {
    let redis = RedisServer::start();
    let mongo = MongoServer::start();
    let pids = [redis.pid().unwrap(), mongo.pid()];
    drop(redis);
    drop(mongo);
    for pid in pids {
        assert!(!is_alive(pid), "{pid} still running after drop");
    }
}

#[test]
fn each_caller_gets_its_own_servers_on_distinct_ports() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.pid(), b.pid());
    let (m, n) = (MongoServer::start(), MongoServer::start());
    assert_ne!(m.uri(), n.uri());
}

#[test]
fn a_restarted_redis_is_a_new_process_on_the_same_port() {
    let mut redis = RedisServer::start();
    let before = redis.addr();
    let old_pid = redis.pid().unwrap();
    redis.restart();
    assert_eq!(redis.addr(), before);
    assert_ne!(redis.pid().unwrap(), old_pid);
    assert!(!is_alive(old_pid));
}

#[test]
fn a_local_redis_cluster_forms_with_three_primaries_and_three_replicas() {
    let mut cluster = e2e::cluster::RedisCluster::start_for_failover();
    let ports = cluster.ports().to_vec();
    assert_eq!(ports.len(), 6);
    for port in &ports {
        let info = cluster.info(*port);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_size:3"), "three primaries: {info}");
        assert!(info.contains("cluster_known_nodes:6"), "{info}");
    }
    // A killed node and the others alike stop with it, as every other
    // server does.
    cluster.kill(ports[0]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err());
    drop(cluster);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "node {port} outlived the cluster"
        );
    }
}

#[test]
fn a_local_sentinel_group_promotes_the_replica_when_the_primary_dies() {
    let mut group = e2e::sentinel::SentinelGroup::start_for_failover();
    assert_eq!(group.current_primary(), Some(group.primary_port()));
    group.kill_primary();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Polls a condition with a deadline: the sentinels agree the primary
    // is down, elect a leader and promote the replica.
    while group.current_primary() != Some(group.replica_port()) {
        assert!(std::time::Instant::now() < deadline, "no failover");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
