//! What the accept loop is told: limits and time bounds per connection.
//! Boot settings: a listener's connections are built with them, so a
//! change needs a restart.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Also bounds how long an idle HTTP/1 keep-alive connection waits for
    /// its next request: hyper starts this timer whenever it waits for a
    /// request head.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold; 0: no cap.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Longest pause while a request body arrives; then 408.
    pub body_read_timeout: Duration,
    /// Longest a response write may stall on a client that does not read.
    pub write_timeout: Duration,
    /// Connections older than this are closed gracefully; `None`: no limit.
    pub max_connection_age: Option<Duration>,
    pub max_request_body_bytes: u64,
    pub shutdown_grace: Duration,
    /// Who the client is behind trusted load balancers.
    pub client_ip: crate::client_ip::ClientIp,
}
