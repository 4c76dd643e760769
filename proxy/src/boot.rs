//! Settings fixed for a process's life: the listeners, the connections
//! they make, the backend's connection pool and the cache store. A reload
//! that changes any of them is refused, naming the field: they need a
//! restart (see the README's upgrade procedure, which drops nothing).

use std::net::SocketAddr;

use crate::cache::settings::StoreSettings;
use crate::server::ServerSettings;
use crate::upstream::UpstreamSettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub store: StoreSettings,
}
