//! Binding the listeners so that a second process can take them over.
//!
//! Both listeners are bound with `SO_REUSEPORT`: a new proxy started with
//! the same config binds the same addresses while the old one still serves,
//! and the kernel spreads new connections over both until the old one,
//! told to stop, closes its listener. That is the upgrade procedure: start
//! the new process, wait for its `/readyz`, SIGTERM the old one.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel may queue before `accept`.
const BACKLOG: u32 = 1024;

/// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Whether the kernel hands connections still queued on a closing
/// listener to another listener on the same port
/// (`net.ipv4.tcp_migrate_req`, Linux 5.14+). Without it, a connection
/// that arrives in the instant between the old process's last accept and
/// its close is reset.
pub fn queued_connections_migrate() -> Option<bool> {
    let value = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").ok()?;
    Some(value.trim() == "1")
}
