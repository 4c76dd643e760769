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
    /// The proxy's `cache.redis_url`.
    pub redis_url: String,
    /// The Redis started for this stack alone, if it was.
    _own_redis: Option<RedisServer>,
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
        Stack::start_on(redis.url(), Some(redis), ttl_secs).await
    }

    /// The shipped config on a Redis deployment shared with other tests
    /// (`redis_url` as the proxy takes it).
    pub async fn start_on_shared(redis_url: String) -> Stack {
        Stack::start_on(redis_url, None, None).await
    }

    async fn start_on(redis_url: String, own_redis: Option<RedisServer>, ttl_secs: Option<u64>) -> Stack {
        let mongo = MongoServer::start();
        let origin = spawn_origin(&mongo).await;
        let config = proxy_config(SHIPPED_CONFIG, origin.addr, Some(redis_url.clone()), ttl_secs);
        let proxy = spawn_proxy(config).await;
        Stack {
            api: ApiClient::new(proxy.base_url()),
            direct: ApiClient::new(format!("http://{}", origin.addr)),
            proxy,
            origin,
            redis_url,
            _own_redis: own_redis,
            mongo,
        }
    }

    /// A token for the bootstrapped admin, obtained through the proxy.
    pub async fn admin_token(&self) -> String {
        self.api.token(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }
}
