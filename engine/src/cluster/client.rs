//! Reaching the cluster map from anywhere in the cluster: proposals and
//! linearizable reads go to the map group's leader, locally when this node
//! leads, over gRPC otherwise, following leader hints and retrying through
//! elections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::machine::Outcome;
use super::map::{ClusterMapState, Command};
use super::MAP_GROUP;
use crate::net::proto::cluster_map_client::ClusterMapClient;
use crate::net::proto::MapRequest;
use crate::net::raft_transport::AddressBook;
use crate::replication::{NodeId, RaftNodeHandle, ReplicationError};

/// How long a request chases the leader before giving up.
pub const MAP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why a cluster map request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MapClientError {
    /// No leader answered in time: a majority of monitors may be down.
    #[error("the cluster map has no reachable leader after {0:?}; check that a majority of monitor nodes is up (`hpchain cluster status` on each)")]
    NoLeader(Duration),
    /// The leader answered with something this node cannot read.
    #[error("cluster map: {0}")]
    Protocol(String),
}

/// A client of the cluster map group.
#[derive(Clone)]
pub struct MapClient {
    me: NodeId,
    local: Option<RaftNodeHandle>,
    monitors: Vec<NodeId>,
    addresses: Arc<dyn AddressBook>,
    leader_hint: Arc<Mutex<Option<NodeId>>>,
    auditor: Option<crate::ledger::LedgerNode>,
}

enum Attempt {
    Done(Vec<u8>),
    NotLeader(Option<NodeId>),
    Failed,
}

impl MapClient {
    /// `local` is this node's replica of the map group, if it is a monitor.
    pub fn new(
        me: NodeId,
        local: Option<RaftNodeHandle>,
        monitors: Vec<NodeId>,
        addresses: Arc<dyn AddressBook>,
    ) -> MapClient {
        MapClient {
            me,
            local,
            monitors,
            addresses,
            leader_hint: Arc::new(Mutex::new(None)),
            auditor: None,
        }
    }

    /// Proposes `command`; the outcome says whether the map accepted it.
    /// With an auditor set, the outcome is also recorded on the ledger.
    pub async fn propose(&self, command: &Command) -> Result<Outcome, MapClientError> {
        let data =
            serde_json::to_vec(command).map_err(|e| MapClientError::Protocol(e.to_string()))?;
        let bytes = self.request(data).await?;
        let outcome: Outcome =
            serde_json::from_slice(&bytes).map_err(|e| MapClientError::Protocol(e.to_string()))?;
        if let Some(auditor) = &self.auditor {
            let (action, target) = command.describe();
            let (result, details) = match &outcome {
                Outcome::Applied { epoch } => (
                    "ok".to_string(),
                    vec![("epoch".to_string(), epoch.to_string())],
                ),
                Outcome::Refused(e) => (
                    e.code().to_string(),
                    vec![("reason".to_string(), e.to_string())],
                ),
            };
            auditor
                .audit(
                    &format!("node/{}", self.me),
                    action,
                    &target,
                    &result,
                    details,
                )
                .await;
        }
        Ok(outcome)
    }

    /// Records every outcome of `propose` on the ledger from now on.
    pub fn with_auditor(mut self, auditor: crate::ledger::LedgerNode) -> MapClient {
        self.auditor = Some(auditor);
        self
    }

    /// The current map, read linearizably from the leader.
    pub async fn read(&self) -> Result<ClusterMapState, MapClientError> {
        let bytes = self.request(Vec::new()).await?;
        serde_json::from_slice(&bytes).map_err(|e| MapClientError::Protocol(e.to_string()))
    }

    /// The map leader last seen, if any.
    pub fn leader(&self) -> Option<NodeId> {
        *self.leader_hint.lock().expect("hint lock")
    }

    async fn request(&self, command: Vec<u8>) -> Result<Vec<u8>, MapClientError> {
        let deadline = Instant::now() + MAP_REQUEST_TIMEOUT;
        let mut round = 0usize;
        while Instant::now() < deadline {
            let target = self
                .leader()
                .unwrap_or_else(|| self.monitors[round % self.monitors.len().max(1)]);
            round += 1;
            match self.attempt(target, command.clone()).await {
                Attempt::Done(result) => {
                    *self.leader_hint.lock().expect("hint lock") = Some(target);
                    return Ok(result);
                }
                Attempt::NotLeader(hint) => {
                    *self.leader_hint.lock().expect("hint lock") = hint.filter(|&h| h != target);
                    if hint.is_none() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Attempt::Failed => {
                    *self.leader_hint.lock().expect("hint lock") = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(MapClientError::NoLeader(MAP_REQUEST_TIMEOUT))
    }

    async fn attempt(&self, target: NodeId, command: Vec<u8>) -> Attempt {
        if target == self.me {
            if let Some(local) = &self.local {
                let result = if command.is_empty() {
                    local
                        .read_async(MAP_GROUP, Vec::new(), ATTEMPT_TIMEOUT)
                        .await
                } else {
                    local
                        .propose_async(MAP_GROUP, command, ATTEMPT_TIMEOUT)
                        .await
                };
                return match result {
                    Ok(bytes) => Attempt::Done(bytes),
                    Err(ReplicationError::NotLeader { leader, .. }) => Attempt::NotLeader(leader),
                    Err(_) => Attempt::Failed,
                };
            }
        }
        let Some(addr) = self.addresses.peer_addr(target) else {
            return Attempt::Failed;
        };
        let call = async {
            let mut client = ClusterMapClient::connect(format!("http://{addr}"))
                .await
                .ok()?;
            let request = MapRequest {
                command: command.clone(),
            };
            let reply = if command.is_empty() {
                client.read(request).await
            } else {
                client.propose(request).await
            };
            reply.ok().map(|r| r.into_inner())
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Some(reply)) if reply.not_leader => {
                Attempt::NotLeader((reply.leader_hint != 0).then_some(reply.leader_hint))
            }
            Ok(Some(reply)) => Attempt::Done(reply.result),
            _ => Attempt::Failed,
        }
    }
}
