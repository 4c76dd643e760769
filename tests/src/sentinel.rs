//! A real local Sentinel group: one primary, one replica and three
//! sentinels watching them (quorum 2), on free ports, stopped on drop like
//! every other server. The sentinels are `redis-server --sentinel`, which
//! Debian's `redis-server` package provides.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{find_binary, free_port, wait_until, ManagedChild};
use crate::servers::{redis_answers_ping, redis_cli_at, redis_replication_ready, spawn_redis, REDIS_INSTALL_HINT};

/// The name the sentinels know the primary by.
pub const SERVICE: &str = "proxy-cache";
const SENTINELS: usize = 3;
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
/// How long the group may take to agree on its members.
const FORMING_LIMIT: Duration = Duration::from_secs(60);

pub struct SentinelGroup {
    primary: (u16, Option<ManagedChild>),
    replica: (u16, Option<ManagedChild>),
    sentinels: Vec<(u16, ManagedChild)>,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// A group for tests that share it: the primary is judged down after
    /// 5 s, so a busy machine starving it for a moment does not start a
    /// failover under another test.
    pub fn start() -> SentinelGroup {
        SentinelGroup::start_with_down_after(5000)
    }

    /// A group that fails over within seconds (down after 1 s), for the
    /// failover tests.
    pub fn start_for_failover() -> SentinelGroup {
        SentinelGroup::start_with_down_after(1000)
    }

    fn start_with_down_after(milliseconds: u32) -> SentinelGroup {
        let dir = tempfile::tempdir().expect("temp dir for sentinel");
        let primary_port = free_port();
        let primary = spawn_redis(primary_port, &dir, &[]).expect("the primary starts");
        let replica_port = free_port();
        let port = primary_port.to_string();
        let replica =
            spawn_redis(replica_port, &dir, &["--replicaof", "127.0.0.1", &port]).expect("the replica starts");
        let sentinels = (0..SENTINELS)
            .map(|_| {
                let port = free_port();
                (port, spawn_sentinel(port, primary_port, milliseconds, &dir))
            })
            .collect();
        let group = SentinelGroup {
            primary: (primary_port, Some(primary)),
            replica: (replica_port, Some(replica)),
            sentinels,
            _dir: dir,
        };
        group.await_formed();
        group
    }

    /// The proxy's `cache.redis_url` for this group.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self.sentinels.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{SERVICE}", sentinels.join(","))
    }

    pub fn primary_port(&self) -> u16 {
        self.primary.0
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.0
    }

    /// The primary the sentinels name now.
    pub fn current_primary(&self) -> Option<u16> {
        let reply = redis_cli_at(self.sentinels[0].0, &["sentinel", "get-master-addr-by-name", SERVICE]);
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// SIGSTOP on every process of the group, sentinels included: Redis
    /// answers nothing, and no sentinel is left to start a failover.
    pub fn pause(&self) {
        self.processes().for_each(|p| p.signal(libc::SIGSTOP));
    }

    pub fn resume(&self) {
        self.processes().for_each(|p| p.signal(libc::SIGCONT));
    }

    fn processes(&self) -> impl Iterator<Item = &ManagedChild> {
        let nodes = [&self.primary.1, &self.replica.1].into_iter().flatten();
        nodes.chain(self.sentinels.iter().map(|(_, s)| s))
    }

    /// Kills the primary (`kill -9`): the sentinels promote the replica
    /// after their down-after time.
    pub fn kill_primary(&mut self) {
        self.primary.1 = None;
    }

    fn await_formed(&self) {
        let deadline = Instant::now() + FORMING_LIMIT;
        for (port, _) in &self.sentinels {
            // Polls a condition with a deadline: sentinels find the
            // replica and each other through the primary.
            loop {
                let replicas = redis_cli_at(*port, &["sentinel", "replicas", SERVICE]);
                let peers = redis_cli_at(*port, &["sentinel", "sentinels", SERVICE]);
                let known_replica = replicas.contains(&self.replica.0.to_string());
                let known_peers = self
                    .sentinels
                    .iter()
                    .filter(|(other, _)| other != port)
                    .all(|(other, _)| peers.contains(&other.to_string()));
                if known_replica && known_peers && redis_replication_ready(self.replica.0) {
                    break;
                }
                assert!(Instant::now() < deadline, "the sentinel group did not form");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn spawn_sentinel(port: u16, primary: u16, down_after_ms: u32, dir: &tempfile::TempDir) -> ManagedChild {
    let config = dir.path().join(format!("sentinel-{port}.conf"));
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n\
         sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
         sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n\
         sentinel failover-timeout {SERVICE} 5000\n\
         sentinel parallel-syncs {SERVICE} 1\n",
        dir.path().display(),
        dir.path().join(format!("sentinel-{port}.log")).display(),
    );
    std::fs::write(&config, text).expect("write the sentinel config");
    let binary = find_binary("redis-server", "REDIS_SERVER_BIN", &[], REDIS_INSTALL_HINT);
    let mut command = Command::new(binary);
    command
        .arg(&config)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ManagedChild::spawn("redis-sentinel", command).expect("a sentinel starts");
    wait_until(&mut child, STARTUP_LIMIT, || redis_answers_ping(port)).expect("a sentinel answers");
    child
}
