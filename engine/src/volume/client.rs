//! The volume client: byte-range I/O on a volume, routed to PG leaders.

use hpchain_placement::{pg_of, place, ClusterMap, PgId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

use crate::cluster::map::{Pool, Volume};
use crate::cluster::ClusterMapState;
use crate::net::proto::placement_group_client::PlacementGroupClient;
use crate::net::proto::{PgReply, PgRequest};
use crate::net::server::pg_reply;
use crate::pg::command::{encode, ObjectId, ObjectOp, ReadQuery};
use crate::pg::{disk_of_peer, group_id};
use crate::replication::{GroupId, NodeId, RaftNodeHandle};

/// How long one piece of I/O chases its PG's leader before failing.
const PIECE_DEADLINE: Duration = Duration::from_secs(30);
const PIECE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Largest single read or write the client accepts.
pub const IO_MAX_BYTES: u64 = 64 << 20;

/// Why volume I/O failed. Each names the volume and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?} does not exist; list volumes with `hpchain volume ls`")]
    NotFound(String),
    #[error("volume {volume:?}: bytes {offset}..{end} are past its end ({size} bytes); stay inside the volume or grow it")]
    OutOfRange {
        volume: String,
        offset: u64,
        end: u64,
        size: u64,
    },
    #[error(
        "volume {volume:?}: a request of {len} bytes exceeds the limit of {IO_MAX_BYTES}; split it"
    )]
    TooLarge { volume: String, len: u64 },
    #[error("volume {volume:?}: placement group {group:x} has no reachable leader after {PIECE_DEADLINE:?}; check that a majority of its replicas' nodes is up")]
    Unavailable { volume: String, group: GroupId },
    #[error("volume {volume:?}: {reason}")]
    Failed { volume: String, reason: String },
}

impl VolumeError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            VolumeError::NotFound(_) => "volume.not_found",
            VolumeError::OutOfRange { .. } => "volume.out_of_range",
            VolumeError::TooLarge { .. } => "volume.io_too_large",
            VolumeError::Unavailable { .. } => "volume.unavailable",
            VolumeError::Failed { .. } => "volume.io_failed",
        }
    }
}

/// The placement map computed for one map epoch, with the map it came
/// from, so that an I/O does not copy the cluster map.
type PlacementAtEpoch = (u64, Arc<ClusterMap>, Arc<ClusterMapState>);

enum Io {
    Write(Vec<u8>),
    Read(Vec<u8>),
}

/// Byte-range I/O on volumes, from any node.
#[derive(Clone)]
pub struct VolumeClient {
    me: NodeId,
    local: RaftNodeHandle,
    map: Arc<RwLock<ClusterMapState>>,
    placement: Arc<Mutex<Option<PlacementAtEpoch>>>,
    leaders: Arc<Mutex<HashMap<GroupId, NodeId>>>,
    channels: Arc<Mutex<HashMap<NodeId, Channel>>>,
}

impl VolumeClient {
    pub fn new(
        me: NodeId,
        local: RaftNodeHandle,
        map: Arc<RwLock<ClusterMapState>>,
    ) -> VolumeClient {
        VolumeClient {
            me,
            local,
            map,
            placement: Arc::new(Mutex::new(None)),
            leaders: Arc::new(Mutex::new(HashMap::new())),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lookup(&self, name: &str, offset: u64, len: u64) -> Result<(Volume, Pool), VolumeError> {
        let map = self.map.read().expect("map lock");
        let volume = map
            .volumes
            .get(name)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        let pool = map
            .pools
            .get(&volume.pool)
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        if len > IO_MAX_BYTES {
            return Err(VolumeError::TooLarge {
                volume: name.to_string(),
                len,
            });
        }
        let end = offset.saturating_add(len);
        if end > volume.size {
            return Err(VolumeError::OutOfRange {
                volume: name.to_string(),
                offset,
                end,
                size: volume.size,
            });
        }
        Ok((volume.clone(), pool.clone()))
    }

    /// The pieces of `[offset, offset + len)`: (object no, offset in object, length).
    fn pieces(pool: &Pool, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        let mut at = offset;
        while at < offset + len {
            let object_no = at / pool.object_size;
            let within = at % pool.object_size;
            let take = (pool.object_size - within).min(offset + len - at);
            out.push((object_no, within, take));
            at += take;
        }
        out
    }

    /// Writes `data` at `offset`; returns once every piece is committed on
    /// a majority of its PG's replicas.
    pub async fn write(&self, volume: &str, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        let (vol, pool) = self.lookup(volume, offset, data.len() as u64)?;
        let mut tasks = tokio::task::JoinSet::new();
        for (object_no, within, take) in Self::pieces(&pool, offset, data.len() as u64) {
            let start = (object_no * pool.object_size + within - offset) as usize;
            let op = ObjectOp::Write {
                object: ObjectId {
                    volume: vol.id,
                    object_no,
                },
                offset: within,
                data: data[start..start + take as usize].to_vec(),
            };
            let this = self.clone();
            let (vol, pool) = (vol.clone(), pool.clone());
            tasks.spawn(async move {
                this.call(&vol, &pool, object_no, Io::Write(encode(&[op])))
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| VolumeError::Failed {
                volume: volume.to_string(),
                reason: e.to_string(),
            })??;
        }
        Ok(())
    }

    /// Discards (zeroes and releases) `len` bytes at `offset`.
    pub async fn discard(&self, volume: &str, offset: u64, len: u64) -> Result<(), VolumeError> {
        let (vol, pool) = self.lookup(volume, offset, len.min(IO_MAX_BYTES))?;
        let end = offset + len;
        if end > vol.size {
            return Err(VolumeError::OutOfRange {
                volume: volume.to_string(),
                offset,
                end,
                size: vol.size,
            });
        }
        for (object_no, within, take) in Self::pieces(&pool, offset, len) {
            let object = ObjectId {
                volume: vol.id,
                object_no,
            };
            let op = if take == pool.object_size {
                ObjectOp::Delete { object }
            } else {
                ObjectOp::Discard {
                    object,
                    offset: within,
                    len: take,
                }
            };
            self.call(&vol, &pool, object_no, Io::Write(encode(&[op])))
                .await?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset`, linearizably (each piece from its
    /// PG's leader after a ReadIndex round).
    pub async fn read(&self, volume: &str, offset: u64, len: u64) -> Result<Vec<u8>, VolumeError> {
        let (vol, pool) = self.lookup(volume, offset, len)?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (object_no, within, take)) in
            Self::pieces(&pool, offset, len).into_iter().enumerate()
        {
            let query = ReadQuery {
                object: ObjectId {
                    volume: vol.id,
                    object_no,
                },
                offset: within,
                len: take as u32,
            };
            let this = self.clone();
            let (vol, pool) = (vol.clone(), pool.clone());
            let start = object_no * pool.object_size + within - offset;
            tasks.spawn(async move {
                let data = this
                    .call(&vol, &pool, object_no, Io::Read(query.encode()))
                    .await?;
                Ok::<_, VolumeError>((i, start, data))
            });
        }
        let mut out = vec![0u8; len as usize];
        while let Some(done) = tasks.join_next().await {
            let (_, start, data) = done.map_err(|e| VolumeError::Failed {
                volume: volume.to_string(),
                reason: e.to_string(),
            })??;
            out[start as usize..start as usize + data.len()].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// Bytes the volume's objects occupy on each node's disks (every
    /// replica counted), asking all nodes at once; a node that does not
    /// answer within a second is left out of the map returned.
    pub async fn allocated_bytes_by_node(
        &self,
        volume: &str,
    ) -> Result<(Vec<NodeId>, HashMap<NodeId, u64>), VolumeError> {
        let (id, nodes) = {
            let map = self.map.read().expect("map lock");
            let v = map
                .volumes
                .get(volume)
                .ok_or_else(|| VolumeError::NotFound(volume.to_string()))?;
            (v.id, map.nodes.keys().copied().collect::<Vec<_>>())
        };
        let mut asks = tokio::task::JoinSet::new();
        for &node in &nodes {
            let Some(channel) = self.channel(node) else {
                continue;
            };
            asks.spawn(async move {
                let mut client = crate::net::proto::space_client::SpaceClient::new(channel);
                let request = crate::net::proto::AllocatedRequest { volume: id };
                match tokio::time::timeout(Duration::from_secs(1), client.allocated(request)).await
                {
                    Ok(Ok(reply)) => Some((node, reply.into_inner().bytes)),
                    _ => None,
                }
            });
        }
        let mut answers = HashMap::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(Some((node, bytes))) = done {
                answers.insert(node, bytes);
            }
        }
        Ok((nodes, answers))
    }

    fn placement(&self) -> Result<(Arc<ClusterMap>, Arc<ClusterMapState>), String> {
        let epoch = self.map.read().expect("map lock").epoch;
        let mut cache = self.placement.lock().expect("placement lock");
        if let Some((cached, placement, map)) = cache.as_ref() {
            if *cached == epoch {
                return Ok((placement.clone(), map.clone()));
            }
        }
        let map = Arc::new(self.map.read().expect("map lock").clone());
        let placement = Arc::new(map.placement_map().map_err(|e| e.to_string())?);
        *cache = Some((map.epoch, placement.clone(), map.clone()));
        Ok((placement, map))
    }

    /// The nodes holding `group`'s replicas, primary first.
    fn replica_nodes(&self, pool: &Pool, index: u32) -> Result<Vec<NodeId>, String> {
        let (placement, map) = self.placement()?;
        let pg = PgId {
            pool: pool.id,
            index,
        };
        let disks = match place(&placement, &pool.name, pg, pool.size as usize) {
            Ok(d) => d,
            Err(hpchain_placement::PlacementError::Shortfall { partial, .. }) => {
                partial.into_iter().flatten().collect()
            }
            Err(e) => return Err(e.to_string()),
        };
        Ok(disks
            .iter()
            .filter_map(|d| map.node_of_disk(d.0).map(|n| n.id))
            .collect())
    }

    fn channel(&self, node: NodeId) -> Option<Channel> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(&node) {
            return Some(c.clone());
        }
        let addr = self.map.read().ok()?.nodes.get(&node)?.peer_addr.clone();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Some(channel)
    }

    async fn attempt(&self, node: NodeId, group: GroupId, io: &Io) -> Option<PgReply> {
        if node == self.me {
            let result = match io {
                Io::Write(payload) => {
                    self.local
                        .propose_async(group, payload.clone(), PIECE_ATTEMPT_TIMEOUT)
                        .await
                }
                Io::Read(payload) => {
                    self.local
                        .read_async(group, payload.clone(), PIECE_ATTEMPT_TIMEOUT)
                        .await
                }
            };
            return Some(pg_reply(result));
        }
        let mut client = PlacementGroupClient::new(self.channel(node)?)
            .max_decoding_message_size(80 << 20)
            .max_encoding_message_size(80 << 20);
        let (payload, is_write) = match io {
            Io::Write(p) => (p.clone(), true),
            Io::Read(p) => (p.clone(), false),
        };
        let request = PgRequest { group, payload };
        let call = async {
            if is_write {
                client.write(request).await
            } else {
                client.read(request).await
            }
        };
        match tokio::time::timeout(PIECE_ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            _ => None,
        }
    }

    async fn call(
        &self,
        volume: &Volume,
        pool: &Pool,
        object_no: u64,
        io: Io,
    ) -> Result<Vec<u8>, VolumeError> {
        let index = pg_of(volume.id, object_no, pool.pg_num);
        let group = group_id(pool.id, index);
        let deadline = Instant::now() + PIECE_DEADLINE;
        let mut round = 0usize;
        while Instant::now() < deadline {
            let replicas =
                self.replica_nodes(pool, index)
                    .map_err(|reason| VolumeError::Failed {
                        volume: volume.name.clone(),
                        reason,
                    })?;
            if replicas.is_empty() {
                break;
            }
            let cached = self
                .leaders
                .lock()
                .expect("leaders lock")
                .get(&group)
                .copied();
            let target = cached.unwrap_or(replicas[round % replicas.len()]);
            round += 1;
            match self.attempt(target, group, &io).await {
                Some(reply) if !reply.error.is_empty() => {
                    return Err(VolumeError::Failed {
                        volume: volume.name.clone(),
                        reason: reply.error,
                    })
                }
                Some(reply) if reply.not_leader => {
                    let hinted = disk_of_peer(reply.leader_peer)
                        .and_then(|disk| self.map.read().ok()?.node_of_disk(disk).map(|n| n.id));
                    let next = hinted.filter(|&n| n != target);
                    {
                        let mut leaders = self.leaders.lock().expect("leaders lock");
                        match next {
                            Some(node) => leaders.insert(group, node),
                            None => leaders.remove(&group),
                        };
                    }
                    if next.is_none() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Some(reply) => {
                    self.leaders
                        .lock()
                        .expect("leaders lock")
                        .insert(group, target);
                    return Ok(reply.data);
                }
                None => {
                    self.leaders.lock().expect("leaders lock").remove(&group);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(VolumeError::Unavailable {
            volume: volume.name.clone(),
            group,
        })
    }
}
