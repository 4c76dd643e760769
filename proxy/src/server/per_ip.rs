//! How many connections one client address may hold at once.
//!
//! `max_connections` protects the process; this protects the other
//! clients: without it one address can take every connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

/// Open connections per client address, capped at `max` (0: no cap),
/// except for `exempt` addresses: trusted load balancers carry many
/// clients' connections.
pub struct PerIpLimit {
    max: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpLimit {
    pub fn new(max: usize, exempt: Vec<IpNet>) -> Arc<PerIpLimit> {
        Arc::new(PerIpLimit {
            max,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` if it holds its
    /// share already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 || self.exempt.iter().any(|net| net.contains(&ip.to_canonical())) {
            return Some(IpSlot(None));
        }
        let mut open = self.open.lock().expect("per-ip lock");
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot(Some((self.clone(), ip))))
    }
}

/// A connection's place in its address's count, given back on drop.
pub struct IpSlot(Option<(Arc<PerIpLimit>, IpAddr)>);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some((limit, ip)) = self.0.take() else { return };
        let mut open = limit.open.lock().expect("per-ip lock");
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                // Forgotten at once, so the map holds only live addresses.
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_its_slots_back() {
        let limit = PerIpLimit::new(2, Vec::new());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limit.acquire(a).unwrap();
        let _second = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none());
        assert!(limit.acquire(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limit.acquire(a).is_some());
    }

    #[test]
    fn trusted_proxies_are_not_capped() {
        let limit = PerIpLimit::new(1, vec!["192.168.0.0/16".parse().unwrap()]);
        let balancer: IpAddr = "::ffff:192.168.1.1".parse().unwrap();
        let slots: Vec<_> = (0..10).map(|_| limit.acquire(balancer)).collect();
        assert!(slots.iter().all(Option::is_some));
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let _one = limit.acquire(client).unwrap();
        assert!(limit.acquire(client).is_none());
    }

    #[test]
    fn zero_means_no_cap_and_no_bookkeeping() {
        let limit = PerIpLimit::new(0, Vec::new());
        let slots: Vec<_> = (0..100).map(|_| limit.acquire("10.0.0.1".parse().unwrap())).collect();
        assert!(slots.iter().all(Option::is_some));
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
