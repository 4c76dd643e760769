//! A real local Redis Cluster: three primaries and three replicas, each a
//! `redis-server --cluster-enabled yes` on free ports, joined with
//! `redis-cli --cluster create`, stopped on drop like every other server.
//!
//! One per test binary is enough (tests keep apart by key namespace); it
//! takes a few seconds to form.

use std::time::{Duration, Instant};

use crate::process::{free_port, ManagedChild};
use crate::servers::{redis_cli, redis_cli_at, redis_replication_ready, spawn_redis};

/// Nodes in the cluster: three primaries, one replica each.
const NODES: usize = 6;
/// How long the cluster may take to agree it serves every slot.
const FORMING_LIMIT: Duration = Duration::from_secs(60);
/// A node's cluster bus listens on its port + 10000.
const BUS_OFFSET: u16 = 10_000;

pub struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Option<ManagedChild>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// A cluster for tests that share it: a node is judged failed after
    /// 5 s, so a busy machine starving a node for a moment does not start
    /// a failover under another test.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with_node_timeout(5000)
    }

    /// A cluster whose replicas take over within seconds
    /// (`cluster-node-timeout` of 2 s), for the failover tests.
    pub fn start_for_failover() -> RedisCluster {
        RedisCluster::start_with_node_timeout(2000)
    }

    fn start_with_node_timeout(milliseconds: u32) -> RedisCluster {
        let node_timeout = milliseconds.to_string();
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let mut ports = Vec::with_capacity(NODES);
        let mut nodes = Vec::with_capacity(NODES);
        while nodes.len() < NODES {
            let port = free_cluster_port();
            let config = format!("nodes-{port}.conf");
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config,
                "--cluster-node-timeout",
                &node_timeout,
            ];
            if let Ok(child) = spawn_redis(port, &dir, &extra) {
                ports.push(port);
                nodes.push(Some(child));
            }
        }
        let cluster = RedisCluster {
            ports,
            nodes,
            _dir: dir,
        };
        cluster.create();
        cluster
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The proxy's `cache.redis_url` for this cluster: every node a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The primary serving the hash slot of `key`, as the cluster says now.
    pub fn primary_of(&self, key: &str) -> Option<u16> {
        let live = self.live_port()?;
        let slot: u16 = redis_cli_at(live, &["cluster", "keyslot", key]).trim().parse().ok()?;
        primary_for_slot(&redis_cli_at(live, &["cluster", "nodes"]), slot)
    }

    /// A node still running.
    fn live_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .find(|(_, node)| node.is_some())
            .map(|(port, _)| *port)
    }

    /// Whether every running node says the cluster serves every slot.
    pub fn is_ok(&self) -> bool {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, node)| node.is_some())
            .all(|(port, _)| self.info(*port).contains("cluster_state:ok"))
    }

    /// `CLUSTER INFO` as one node sees it.
    pub fn info(&self, port: u16) -> String {
        redis_cli_at(port, &["cluster", "info"])
    }

    /// SIGSTOP on every node: the whole cluster answers nothing, and no
    /// node is left to judge another failed.
    pub fn pause(&self) {
        self.nodes.iter().flatten().for_each(|node| node.signal(libc::SIGSTOP));
    }

    pub fn resume(&self) {
        self.nodes.iter().flatten().for_each(|node| node.signal(libc::SIGCONT));
    }

    /// Kills a node (`kill -9`): a primary's replica takes over after the
    /// node timeout.
    pub fn kill(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        self.nodes[i] = None;
    }

    fn create(&self) {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = redis_cli(&args);
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let deadline = Instant::now() + FORMING_LIMIT;
        let all_known = format!("cluster_known_nodes:{NODES}");
        for port in &self.ports {
            // Polls a condition with a deadline: the nodes gossip until
            // each agrees every slot is served and knows every other node
            // (a node can say "ok" before the last MEET reached it), and
            // each replica has synced (one that never did cannot take over).
            while !(self.info(*port).contains("cluster_state:ok")
                && self.info(*port).contains(&all_known)
                && redis_replication_ready(*port))
            {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not form: {}",
                    self.info(*port)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// In `CLUSTER NODES` output (`<id> <ip:port@bus> <flags> <primary> <ping>
/// <pong> <epoch> <link> <slots>…`), the port of the live primary serving
/// `slot`.
fn primary_for_slot(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
        });
        let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
        serves.then(|| port.parse().ok()).flatten()
    })
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        let bus_free = port
            .checked_add(BUS_OFFSET)
            .is_some_and(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            return port;
        }
    }
}
