//! The state of each placement group as an operator reads it, derived from
//! what the group's Raft leader knows of its replicas and from the cluster
//! map's view of which nodes are up:
//!
//! | state | meaning |
//! |---|---|
//! | `active+clean` | a leader serves I/O; every replica the pool asks for is on an up node and has the log |
//! | `active+recovering` | every replica is up, but one is catching up (behind the log, being probed, or a new replica being copied) |
//! | `active+degraded` | a leader serves I/O, but a replica is on a down node, or fewer replicas exist than the pool's size |
//! | `inactive` | no leader answered: I/O to the group waits |

use serde::Serialize;
use std::collections::BTreeMap;

use super::{disk_of_peer, group_id};
use crate::cluster::ClusterMapState;
use crate::net::proto::LedGroup;
use crate::replication::NodeId;

/// Entries a replica may trail the commit index by and still count as
/// having the log (writes in flight).
pub const CLEAN_LAG_MAX: u64 = 32;

pub const CLEAN: &str = "active+clean";
pub const RECOVERING: &str = "active+recovering";
pub const DEGRADED: &str = "active+degraded";
pub const INACTIVE: &str = "inactive";

/// One replica of a group.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReplicaView {
    pub disk: u32,
    pub node: Option<NodeId>,
    pub up: bool,
    pub leader: bool,
    pub matched: u64,
    /// Entries behind the group's commit index.
    pub behind: u64,
    /// A new replica being copied or catching up (not yet a voter).
    pub learner: bool,
}

/// One placement group.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PgView {
    pub pool: String,
    pub pg: u32,
    pub group: u64,
    pub state: &'static str,
    pub leader_node: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    pub replicas: Vec<ReplicaView>,
}

/// The node a disk belongs to, and whether the map has it up.
fn disk_node(map: &ClusterMapState, disk: u32) -> Option<(NodeId, bool)> {
    map.nodes
        .values()
        .find(|n| n.disks.iter().any(|d| d.id == disk))
        .map(|n| (n.id, n.up))
}

/// Every placement group of `map` (of one pool if `pool` is given), from
/// the groups each node reported leading. A group reported by two nodes
/// (an old leader that has not heard of the new term) is taken at its
/// highest term.
pub fn pg_views(
    map: &ClusterMapState,
    led: &BTreeMap<NodeId, Vec<LedGroup>>,
    pool: Option<&str>,
) -> Vec<PgView> {
    let mut leaders: BTreeMap<u64, (NodeId, &LedGroup)> = BTreeMap::new();
    for (node, groups) in led {
        for g in groups {
            match leaders.get(&g.group) {
                Some((_, known)) if known.term >= g.term => {}
                _ => {
                    leaders.insert(g.group, (*node, g));
                }
            }
        }
    }
    let mut out = Vec::new();
    for p in map
        .pools
        .values()
        .filter(|p| pool.is_none_or(|n| n == p.name))
    {
        for index in 0..p.pg_num {
            let group = group_id(p.id, index);
            let Some((leader_node, g)) = leaders.get(&group) else {
                out.push(PgView {
                    pool: p.name.clone(),
                    pg: index,
                    group,
                    state: INACTIVE,
                    leader_node: None,
                    term: 0,
                    commit: 0,
                    replicas: Vec::new(),
                });
                continue;
            };
            let replicas: Vec<ReplicaView> = g
                .replicas
                .iter()
                .filter_map(|r| {
                    let disk = disk_of_peer(r.peer)?;
                    let (node, up) = match disk_node(map, disk) {
                        Some((node, up)) => (Some(node), up),
                        None => (None, false),
                    };
                    Some(ReplicaView {
                        disk,
                        node,
                        up,
                        leader: r.peer == g.leader_peer,
                        matched: r.matched,
                        behind: g.commit.saturating_sub(r.matched),
                        learner: r.learner,
                    })
                })
                .collect();
            let lagging = g
                .replicas
                .iter()
                .any(|r| !r.replicating || r.matched + CLEAN_LAG_MAX < g.commit);
            let state = if replicas.len() < p.size as usize || replicas.iter().any(|r| !r.up) {
                DEGRADED
            } else if lagging {
                RECOVERING
            } else {
                CLEAN
            };
            out.push(PgView {
                pool: p.name.clone(),
                pg: index,
                group,
                state,
                leader_node: Some(*leader_node),
                term: g.term,
                commit: g.commit,
                replicas,
            });
        }
    }
    out
}

/// How many groups are in each state.
pub fn summary(views: &[PgView]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for v in views {
        *counts.entry(v.state).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{NodeInfo, Pool};
    use crate::net::proto::ReplicaProgress;
    use crate::pg::peer_of_disk;

    fn map(up: [bool; 3]) -> ClusterMapState {
        let mut m = ClusterMapState::default();
        for (i, up) in up.into_iter().enumerate() {
            let id = i as u64 + 1;
            m.nodes.insert(
                id,
                NodeInfo {
                    up,
                    ..NodeInfo::for_test(id, &[i as u32])
                },
            );
        }
        m.pools.insert("rbd".into(), Pool::for_test(1, "rbd", 2));
        m
    }

    fn led(pg: u32, term: u64, matched: [u64; 3], replicating: [bool; 3]) -> LedGroup {
        LedGroup {
            group: group_id(1, pg),
            term,
            commit: 100,
            last_index: 100,
            leader_peer: peer_of_disk(0),
            replicas: (0..3)
                .map(|d| ReplicaProgress {
                    peer: peer_of_disk(d),
                    matched: matched[d as usize],
                    replicating: replicating[d as usize],
                    learner: false,
                })
                .collect(),
        }
    }

    #[test]
    fn states_follow_leaders_replica_progress_and_node_liveness() {
        let all = [true; 3];
        let reports = BTreeMap::from([(1, vec![led(0, 2, [100, 100, 99], all)])]);
        let views = pg_views(&map(all), &reports, None);
        assert_eq!(views[0].state, CLEAN);
        assert_eq!(views[1].state, INACTIVE, "no leader reported pg 1");
        assert_eq!(views[0].replicas[2].behind, 1);

        // A replica far behind, or being probed, is recovering.
        let reports = BTreeMap::from([(1, vec![led(0, 2, [100, 100, 10], all)])]);
        assert_eq!(pg_views(&map(all), &reports, None)[0].state, RECOVERING);
        let reports = BTreeMap::from([(1, vec![led(0, 2, [100; 3], [true, true, false])])]);
        assert_eq!(pg_views(&map(all), &reports, None)[0].state, RECOVERING);

        // A replica on a down node is degraded, even with its log complete.
        let reports = BTreeMap::from([(1, vec![led(0, 2, [100; 3], all)])]);
        let views = pg_views(&map([true, true, false]), &reports, Some("rbd"));
        assert_eq!(views[0].state, DEGRADED);
        assert!(!views[0].replicas[2].up);
        assert_eq!(summary(&views)[DEGRADED], 1);

        // Two nodes claiming the lead: the higher term wins.
        let reports = BTreeMap::from([
            (1, vec![led(0, 2, [100, 100, 10], all)]),
            (2, vec![led(0, 3, [100; 3], all)]),
        ]);
        let views = pg_views(&map(all), &reports, None);
        assert_eq!((views[0].state, views[0].leader_node), (CLEAN, Some(2)));
        assert!(pg_views(&map(all), &reports, Some("other")).is_empty());
    }
}
