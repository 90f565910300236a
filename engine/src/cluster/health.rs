//! Node liveness: heartbeats in, `up`/`down` and `in`/`out` decisions out.
//!
//! Every node sends a heartbeat to every monitor each second. Each monitor
//! records when it last heard from each node; only the map leader acts: a
//! node silent for `down_after` is marked down, and its disks are marked
//! out after `out_after`, which moves their data elsewhere. A node heard
//! again is marked up (and its disks back in). A new leader starts with
//! everyone freshly seen, so an election never marks nodes down by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::map::{ClusterMapState, Command};
use crate::replication::NodeId;

/// When silence means down, and when down means out.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub heartbeat_every: Duration,
    pub down_after: Duration,
    pub out_after: Duration,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            heartbeat_every: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            out_after: Duration::from_secs(600),
        }
    }
}

/// When this monitor last heard from each node.
#[derive(Clone, Default)]
pub struct Liveness {
    seen: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Liveness {
    pub fn record(&self, node: NodeId, at: Instant) {
        self.seen.lock().expect("liveness lock").insert(node, at);
    }

    /// Forgets every timestamp and treats all `nodes` as seen `now` (a
    /// monitor that just became leader gives everyone a full grace period).
    pub fn reset(&self, nodes: impl Iterator<Item = NodeId>, now: Instant) {
        let mut seen = self.seen.lock().expect("liveness lock");
        seen.clear();
        seen.extend(nodes.map(|n| (n, now)));
    }

    fn last_seen(&self, node: NodeId) -> Option<Instant> {
        self.seen.lock().expect("liveness lock").get(&node).copied()
    }
}

/// The map changes the leader should propose now.
pub fn decide(
    map: &ClusterMapState,
    liveness: &Liveness,
    policy: &HealthPolicy,
    now: Instant,
) -> Vec<Command> {
    let mut changes = Vec::new();
    for node in map.nodes.values() {
        let silent_for = match liveness.last_seen(node.id) {
            Some(at) => now.saturating_duration_since(at),
            None => {
                liveness.record(node.id, now);
                Duration::ZERO
            }
        };
        let alive = silent_for < policy.down_after;
        if node.up != alive {
            changes.push(Command::SetNodeUp {
                node: node.id,
                up: alive,
            });
        }
        let should_be_in = silent_for < policy.out_after;
        for disk in &node.disks {
            if disk.is_in != should_be_in {
                changes.push(Command::SetDiskIn {
                    disk: disk.id,
                    is_in: should_be_in,
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{DiskInfo, NodeInfo};

    fn map_with(nodes: &[(u64, bool, bool)]) -> ClusterMapState {
        let mut map = ClusterMapState::default();
        for &(id, up, is_in) in nodes {
            map.nodes.insert(
                id,
                NodeInfo {
                    id,
                    name: format!("n{id}"),
                    peer_addr: String::new(),
                    api_addr: String::new(),
                    iscsi_addr: String::new(),
                    host: format!("h{id}"),
                    rack: "r".into(),
                    zone: "z".into(),
                    disks: vec![DiskInfo {
                        id: id as u32,
                        path: String::new(),
                        weight: 1.0,
                        is_in,
                    }],
                    up,
                },
            );
        }
        map
    }

    #[test]
    fn silence_marks_down_then_out_and_a_heartbeat_brings_it_back() {
        let policy = HealthPolicy {
            heartbeat_every: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            out_after: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let liveness = Liveness::default();
        liveness.reset([1, 2].into_iter(), t0);
        let map = map_with(&[(1, true, true), (2, true, true)]);
        liveness.record(1, t0 + Duration::from_secs(4));
        assert!(decide(&map, &liveness, &policy, t0 + Duration::from_secs(4)).is_empty());
        let at_6 = decide(&map, &liveness, &policy, t0 + Duration::from_secs(6));
        assert_eq!(at_6, vec![Command::SetNodeUp { node: 2, up: false }]);

        let down = map_with(&[(1, true, true), (2, false, true)]);
        liveness.record(1, t0 + Duration::from_secs(61));
        let at_61 = decide(&down, &liveness, &policy, t0 + Duration::from_secs(61));
        assert_eq!(
            at_61,
            vec![Command::SetDiskIn {
                disk: 2,
                is_in: false
            }]
        );

        let out = map_with(&[(1, true, true), (2, false, false)]);
        liveness.record(1, t0 + Duration::from_secs(70));
        liveness.record(2, t0 + Duration::from_secs(70));
        let back = decide(&out, &liveness, &policy, t0 + Duration::from_secs(70));
        assert_eq!(
            back,
            vec![
                Command::SetNodeUp { node: 2, up: true },
                Command::SetDiskIn {
                    disk: 2,
                    is_in: true
                }
            ]
        );
    }

    #[test]
    fn a_node_the_monitor_never_heard_of_gets_a_full_grace_period() {
        let policy = HealthPolicy::default();
        let liveness = Liveness::default();
        let map = map_with(&[(7, true, true)]);
        let now = Instant::now();
        assert!(decide(&map, &liveness, &policy, now).is_empty());
        assert!(decide(&map, &liveness, &policy, now + Duration::from_secs(4)).is_empty());
        assert_eq!(
            decide(&map, &liveness, &policy, now + Duration::from_secs(5)).len(),
            1
        );
    }
}
