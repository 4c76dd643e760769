//! Which primary of a cluster serves which hash slot, as the cluster said
//! last (`CLUSTER SLOTS`), so that reads of several slots can share one
//! pipeline per node: a [`Lane`].
//!
//! A pipeline sent to a node by address may carry commands of any slots
//! that node serves. If the map is stale (a failover, a resharding), the
//! node answers `MOVED` for the slots it lost, the pipeline fails as a
//! whole (its reads bypass the cache, as for any failure) and the map is
//! read again. Where no map is known yet, a read goes in its slot's own
//! lane, routed by the cluster client.

use std::sync::Arc;

use redis::Value;

/// The pipeline a read may share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// One node (or a Sentinel group's primary): everything in one
    /// pipeline.
    Single,
    /// The cluster node at this address.
    Node(Arc<str>, u16),
    /// The node the cluster client routes this slot to (no map yet).
    Slot(u16),
}

/// The primaries' addresses by slot range, sorted by range start.
#[derive(Debug, Default)]
pub struct SlotOwners {
    ranges: Vec<(u16, u16, Arc<str>, u16)>,
}

impl SlotOwners {
    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …],
    /// replica…], …]`; `None` if it is not one.
    pub fn from_reply(reply: &Value) -> Option<SlotOwners> {
        let Value::Array(ranges) = reply else { return None };
        let mut owners = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else { return None };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let (Some(host), Some(Value::Int(port))) = (primary.first(), primary.get(1)) else {
                return None;
            };
            let host: Arc<str> = match host {
                Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into(),
                Value::SimpleString(text) => text.as_str().into(),
                _ => return None,
            };
            owners.push((
                u16::try_from(*start).ok()?,
                u16::try_from(*end).ok()?,
                host,
                u16::try_from(*port).ok()?,
            ));
        }
        owners.sort_by_key(|(start, ..)| *start);
        Some(SlotOwners { ranges: owners })
    }

    /// The lane of `slot`: its primary's, or its own if no range holds it.
    pub fn lane_of(&self, slot: u16) -> Lane {
        let at = self.ranges.partition_point(|(start, ..)| *start <= slot);
        match at.checked_sub(1).map(|i| &self.ranges[i]) {
            Some((_, end, host, port)) if slot <= *end => Lane::Node(host.clone(), *port),
            _ => Lane::Slot(slot),
        }
    }
}

/// The hash slot of a key or hash tag: CRC16 (XMODEM) of it, modulo 16384,
/// as Redis Cluster computes it.
pub fn slot_of(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn slots_map_to_their_primary_and_unknown_ones_to_their_own_lane() {
        let reply = Value::Array(vec![range(5461, 10922, 7001), range(0, 5460, 7000)]);
        let owners = SlotOwners::from_reply(&reply).unwrap();
        assert_eq!(owners.lane_of(0), Lane::Node("127.0.0.1".into(), 7000));
        assert_eq!(owners.lane_of(5460), Lane::Node("127.0.0.1".into(), 7000));
        assert_eq!(owners.lane_of(5461), Lane::Node("127.0.0.1".into(), 7001));
        assert_eq!(owners.lane_of(12000), Lane::Slot(12000));
        assert!(SlotOwners::from_reply(&Value::Int(1)).is_none());
    }

    #[test]
    fn the_slot_is_redis_clusters() {
        // Known values from the Redis Cluster specification's examples.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("123456789"), 0x31C3);
    }
}
