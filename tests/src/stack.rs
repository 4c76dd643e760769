//! The whole system for one test: Redis, FerretDB, the origin, and the proxy
//! running the shipped `config.toml` in front of it.

use crate::client::ApiClient;
use crate::origin::{spawn_origin, OriginHandle, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::proxy::{proxy_config, spawn_proxy, ProxyHandle, SHIPPED_CONFIG};
use crate::servers::{MongoServer, RedisServer};

pub struct Stack {
    /// Talks to the proxy.
    pub api: ApiClient,
    /// Talks to the origin directly, bypassing the proxy.
    pub direct: ApiClient,
    pub proxy: ProxyHandle,
    pub origin: OriginHandle,
    pub redis: RedisServer,
    pub mongo: MongoServer,
}

impl Stack {
    /// The shipped config with the Redis store.
    pub async fn start() -> Stack {
        Stack::start_with_ttl(None).await
    }

    /// As [`Stack::start`], with `CACHE_TTL` set to `ttl_secs`.
    pub async fn start_with_ttl(ttl_secs: Option<u64>) -> Stack {
        let redis = RedisServer::start();
        let mongo = MongoServer::start();
        let origin = spawn_origin(&mongo).await;
        let config = proxy_config(SHIPPED_CONFIG, origin.addr, Some(redis.url()), ttl_secs);
        let proxy = spawn_proxy(config).await;
        Stack {
            api: ApiClient::new(proxy.base_url()),
            direct: ApiClient::new(format!("http://{}", origin.addr)),
            proxy,
            origin,
            redis,
            mongo,
        }
    }

    /// A token for the bootstrapped admin, obtained through the proxy.
    pub async fn admin_token(&self) -> String {
        self.api.token(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }
}
