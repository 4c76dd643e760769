//! How many connections one client address may hold at once.
//!
//! `max_connections` protects the process; this protects the other
//! clients: without it one address can take every connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, capped at `max` (0: no cap).
pub struct PerIpLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpLimit {
    pub fn new(max: usize) -> Arc<PerIpLimit> {
        Arc::new(PerIpLimit {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` if it holds its
    /// share already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        if self.max == 0 {
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
        let limit = PerIpLimit::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limit.acquire(a).unwrap();
        let _second = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none());
        assert!(limit.acquire(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limit.acquire(a).is_some());
    }

    #[test]
    fn zero_means_no_cap_and_no_bookkeeping() {
        let limit = PerIpLimit::new(0);
        let slots: Vec<_> = (0..100).map(|_| limit.acquire("10.0.0.1".parse().unwrap())).collect();
        assert!(slots.iter().all(Option::is_some));
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
