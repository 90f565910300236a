//! The portal: accepts connections, runs logins, keeps sessions (several
//! connections each), and carries SCSI commands, data and task management
//! between initiators and the logical units of the exports.
//!
//! Each connection has a reader (this side of the socket, in CmdSN order),
//! a writer task that stamps StatSN/ExpCmdSN/MaxCmdSN on every outgoing PDU
//! in send order, and one task per SCSI command so that a queue of
//! commands runs concurrently.

use crate::device::BlockDevice;
use crate::login::{self, status, Chap, ChapExchange, LoginFailure};
use crate::pdu::{op, reject, Pdu, PduError, RESERVED_TAG};
use crate::scsi::{Identity, LogicalUnit, ScsiResult};
use crate::sense::{self, Sense};
use crate::text::{self, Params};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

/// The IQN prefix of hpchain targets: `iqn.2026-11.io.hpchain:<volume>`.
pub const IQN_PREFIX: &str = "iqn.2026-11.io.hpchain";

/// How many commands an initiator may have outstanding per session.
const QUEUE_DEPTH: u32 = 128;
/// A connection idle this long gets a NOP-In ping...
const PING_AFTER: Duration = Duration::from_secs(15);
/// ...and is dropped if still silent after this long.
const DEAD_AFTER: Duration = Duration::from_secs(45);
/// A login that does not finish within this time is dropped.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped connection keeps reading, after its FIN, for the
/// initiator to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// How one volume is exported.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// The target name, `iqn.2026-11.io.hpchain:<volume>` for volumes.
    pub iqn: String,
    /// CHAP account initiators must log in with, if any.
    pub chap: Option<Chap>,
    /// The target's own credentials for mutual CHAP.
    pub mutual_chap: Option<Chap>,
    /// Initiator IQNs allowed to log in; empty means any.
    pub allowed_initiators: Vec<String>,
    pub read_only: bool,
}

/// An exported target with its one logical unit (LUN 0).
pub struct Export {
    pub config: ExportConfig,
    pub lu: Arc<LogicalUnit>,
}

impl Export {
    fn allows(&self, initiator: &str) -> bool {
        self.config.allowed_initiators.is_empty()
            || self
                .config
                .allowed_initiators
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(initiator))
    }
}

/// Why an export could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportError {
    AlreadyExported(String),
    BadName(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::AlreadyExported(iqn) => {
                write!(
                    f,
                    "target {iqn} is already exported; unexport it first or use another name"
                )
            }
            ExportError::BadName(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ExportError {}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct PortalStats {
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub commands: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub rejects: AtomicU64,
}

/// Every node's iSCSI portal: the exports it serves and their sessions.
pub struct Portal {
    /// `host:port` addresses returned in SendTargets.
    addresses: RwLock<Vec<String>>,
    portal_group_tag: u16,
    exports: RwLock<BTreeMap<String, Arc<Export>>>,
    sessions: Mutex<HashMap<u16, Arc<Session>>>,
    next_tsih: AtomicU16,
    pub stats: PortalStats,
}

struct ConnHandle {
    shutdown: Arc<Notify>,
    out: mpsc::UnboundedSender<Out>,
}

struct Task {
    lun: u64,
    cid: u16,
    abort: tokio::task::AbortHandle,
}

impl Task {
    /// Aborts the task; its handle tells when it is over.
    fn cancel(self) -> tokio::task::AbortHandle {
        self.abort.abort();
        self.abort
    }
}

type Deferred = Box<dyn FnOnce() + Send>;

struct Window {
    exp_cmd_sn: u32,
    /// Commands that arrived ahead of ExpCmdSN (on other connections).
    pending: BTreeMap<u32, Deferred>,
}

/// One session: an I_T nexus with one or more connections.
struct Session {
    tsih: u16,
    isid: [u8; 6],
    initiator: String,
    /// SCSI initiator port name: `<initiator>,i,0x<isid>`.
    nexus: String,
    export: Option<Arc<Export>>,
    params: Params,
    window: Mutex<Window>,
    exp_cmd_sn: AtomicU32,
    tasks: Mutex<HashMap<u32, Task>>,
    connections: Mutex<HashMap<u16, ConnHandle>>,
    ended: AtomicBool,
}

fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

enum Admit {
    Now,
    Later,
    Drop,
}

impl Session {
    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
            .load(Ordering::SeqCst)
            .wrapping_add(QUEUE_DEPTH - 1)
    }

    /// Orders a non-immediate command by CmdSN (RFC 7143 3.2.2.1): one
    /// outside the window is ignored; one ahead waits for the gap.
    fn admit(&self, cmd_sn: u32, deferred: impl FnOnce() -> Deferred) -> Admit {
        let mut window = self.window.lock().unwrap();
        let exp = window.exp_cmd_sn;
        let max = exp.wrapping_add(QUEUE_DEPTH - 1);
        if sn_lt(cmd_sn, exp) || sn_lt(max, cmd_sn) {
            return Admit::Drop;
        }
        if cmd_sn == exp {
            window.exp_cmd_sn = exp.wrapping_add(1);
            self.exp_cmd_sn.store(window.exp_cmd_sn, Ordering::SeqCst);
            return Admit::Now;
        }
        window.pending.entry(cmd_sn).or_insert_with(deferred);
        Admit::Later
    }

    /// Drops the commands still waiting for a CmdSN gap, returning how
    /// many. Once the session's last connection is gone nothing fills the
    /// gap, and each waiting command holds its connection, which holds
    /// the session: a cycle that would never be freed.
    fn forget_pending(&self) -> usize {
        let pending = std::mem::take(&mut self.window.lock().unwrap().pending);
        pending.len()
    }

    /// Runs the commands that were waiting for the one just admitted.
    fn drain(&self) {
        loop {
            let next = {
                let mut window = self.window.lock().unwrap();
                let exp = window.exp_cmd_sn;
                match window.pending.remove(&exp) {
                    Some(run) => {
                        window.exp_cmd_sn = exp.wrapping_add(1);
                        self.exp_cmd_sn.store(window.exp_cmd_sn, Ordering::SeqCst);
                        run
                    }
                    None => return,
                }
            };
            next();
        }
    }

    /// Drops every connection, telling the initiator first with an
    /// asynchronous message ("all connections will be dropped", RFC 7143
    /// 11.9.1) so that it waits before logging in again.
    fn close_all(&self) {
        for conn in self.connections.lock().unwrap().values() {
            let mut message = Pdu::new(op::ASYNC_MESSAGE);
            message.set_flags(0x80);
            message.set_itt(RESERVED_TAG);
            message.bhs[36] = 3;
            message.set_u16_at(40, self.params.default_time2wait as u16);
            message.set_u16_at(42, 0);
            let _ = conn.out.send(Out {
                pdu: message,
                advances_stat_sn: false,
                last: true,
            });
            conn.shutdown.notify_one();
        }
    }
}

/// An outgoing PDU and whether it consumes a StatSN.
struct Out {
    pdu: Pdu,
    advances_stat_sn: bool,
    /// Close the connection after this PDU is written.
    last: bool,
}

impl Portal {
    /// A portal that will advertise `addresses` (`host:port`) in discovery.
    pub fn new(addresses: Vec<String>) -> Arc<Portal> {
        Arc::new(Portal {
            addresses: RwLock::new(addresses),
            portal_group_tag: 1,
            exports: RwLock::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_tsih: AtomicU16::new(1),
            stats: PortalStats::default(),
        })
    }

    /// Exports `device` as a target with LUN 0. `name` (a volume name)
    /// seeds the LU's stable WWN.
    pub fn add_export(
        &self,
        name: &str,
        config: ExportConfig,
        device: Arc<dyn BlockDevice>,
    ) -> Result<(), ExportError> {
        if !config.iqn.starts_with("iqn.") && !config.iqn.starts_with("eui.") {
            return Err(ExportError::BadName(format!(
                "target name {:?} is not an iqn. or eui. name",
                config.iqn
            )));
        }
        let key = config.iqn.to_ascii_lowercase();
        let mut exports = self.exports.write().unwrap();
        if exports.contains_key(&key) {
            return Err(ExportError::AlreadyExported(config.iqn.clone()));
        }
        let identity = Identity::for_name(name, &config.iqn);
        let lu = Arc::new(LogicalUnit::new(device, identity, config.read_only));
        info!(target = %config.iqn, "iscsi export added");
        exports.insert(key, Arc::new(Export { config, lu }));
        Ok(())
    }

    /// The portals SendTargets lists (every node's, for multipath).
    pub fn set_addresses(&self, addresses: Vec<String>) {
        *self.addresses.write().unwrap() = addresses;
    }

    /// Replaces an export's CHAP and ACL settings; logged-in sessions stay
    /// (the settings apply at login). A change of `read_only` needs a new
    /// export: remove and add it.
    pub fn update_export(&self, config: ExportConfig) -> Result<(), ExportError> {
        let key = config.iqn.to_ascii_lowercase();
        let mut exports = self.exports.write().unwrap();
        let Some(old) = exports.get(&key) else {
            return Err(ExportError::BadName(format!(
                "target {} is not exported; add it first",
                config.iqn
            )));
        };
        let lu = old.lu.clone();
        exports.insert(key, Arc::new(Export { config, lu }));
        Ok(())
    }

    /// The sessions logged in to target `iqn`.
    fn sessions_of_target(&self, iqn: &str) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| {
                s.export
                    .as_ref()
                    .is_some_and(|e| e.config.iqn.eq_ignore_ascii_case(iqn))
            })
            .cloned()
            .collect()
    }

    /// Removes an export and ends its sessions. Returns whether it existed.
    pub fn remove_export(&self, iqn: &str) -> bool {
        let key = iqn.to_ascii_lowercase();
        let removed = self.exports.write().unwrap().remove(&key);
        if removed.is_some() {
            for session in self.sessions_of_target(iqn) {
                session.close_all();
            }
            info!(target = %iqn, "iscsi export removed");
        }
        removed.is_some()
    }

    /// The IQNs exported, sorted.
    pub fn export_names(&self) -> Vec<String> {
        self.exports
            .read()
            .unwrap()
            .values()
            .map(|e| e.config.iqn.clone())
            .collect()
    }

    /// Logged-in sessions per exported target (0 for idle exports).
    pub fn sessions_by_target(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = self
            .export_names()
            .into_iter()
            .map(|iqn| (iqn, 0))
            .collect();
        for session in self.sessions.lock().unwrap().values() {
            if let Some(export) = &session.export {
                *counts.entry(export.config.iqn.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// How many sessions are logged in to `iqn` now.
    pub fn session_count(&self, iqn: &str) -> usize {
        self.sessions_of_target(iqn).len()
    }

    fn export(&self, iqn: &str) -> Option<Arc<Export>> {
        self.exports
            .read()
            .unwrap()
            .get(&iqn.to_ascii_lowercase())
            .cloned()
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let portal = self.clone();
            tokio::spawn(async move {
                debug!(%peer, "iscsi connection");
                portal.connection(stream).await;
                debug!(%peer, "iscsi connection closed");
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) {
        let (mut reader, mut writer) = stream.into_split();
        let login = tokio::time::timeout(LOGIN_TIMEOUT, self.login(&mut reader, &mut writer)).await;
        let (session, cid, params, stat_sn) = match login {
            Ok(Some(done)) => done,
            Ok(None) | Err(_) => {
                let _ = writer.shutdown().await;
                linger(reader).await;
                return;
            }
        };
        self.full_feature(session, cid, params, stat_sn, reader, writer)
            .await;
    }

    /// Runs the login phase; returns the session, the connection id, the
    /// connection's parameters and the next StatSN, or `None` after a
    /// failed login (the response was sent).
    async fn login(
        &self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
    ) -> Option<(Arc<Session>, u16, Params, u32)> {
        let mut params = Params::default();
        let mut chap = ChapExchange::default();
        let mut stat_sn: u32 = 1;
        let mut stage = login::SECURITY;
        let mut first = true;
        let mut initiator = String::new();
        let mut discovery = false;
        let mut export: Option<Arc<Export>> = None;
        let mut isid = [0u8; 6];
        let mut tsih: u16 = 0;
        let mut cid: u16 = 0;
        let mut existing: Option<Arc<Session>> = None;
        let mut pending_text: Vec<u8> = Vec::new();
        let mut sent_tpgt = false;
        loop {
            let login_only = |opcode: u8| opcode == op::LOGIN_REQUEST;
            let pdu = match Pdu::read_checked(reader, false, false, 65536, login_only).await {
                Ok(pdu) => pdu,
                Err(e) => {
                    debug!("login read failed: {e}");
                    return None;
                }
            };
            let mut response = Pdu::new(op::LOGIN_RESPONSE);
            response.bhs[8..14].copy_from_slice(&pdu.bhs[8..14]);
            response.set_itt(pdu.itt());
            let cmd_sn = pdu.cmd_sn();
            let flags = pdu.flags();
            let transit = flags & 0x80 != 0;
            let cont = flags & 0x40 != 0;
            let csg = (flags >> 2) & 0x03;
            let nsg = flags & 0x03;
            if first {
                isid.copy_from_slice(&pdu.bhs[8..14]);
                tsih = pdu.u16_at(14);
                cid = pdu.u16_at(20);
                stat_sn = pdu.exp_stat_sn();
                if pdu.bhs[3] > 0 {
                    // Version-min above 0: only version 0 exists.
                    self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    fail_login(
                        &initiator,
                        stat_sn,
                        cmd_sn,
                        &mut response,
                        LoginFailure::new(status::UNSUPPORTED_VERSION, "version"),
                    );
                    let _ = response.write(writer, false, false).await;
                    return None;
                }
            }
            pending_text.extend_from_slice(&pdu.data);
            if cont {
                // More text follows: acknowledge with an empty response.
                response.set_flags((csg << 2) | nsg);
                response.set_u16_at(14, tsih);
                response.set_sequence(stat_sn, cmd_sn, cmd_sn.wrapping_add(QUEUE_DEPTH - 1));
                if response.write(writer, false, false).await.is_err() {
                    return None;
                }
                continue;
            }
            let keys = match text::parse(&pending_text) {
                Ok(keys) => keys,
                Err(e) => {
                    self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    fail_login(
                        &initiator,
                        stat_sn,
                        cmd_sn,
                        &mut response,
                        LoginFailure::new(status::INITIATOR_ERROR, e.to_string()),
                    );
                    let _ = response.write(writer, false, false).await;
                    return None;
                }
            };
            pending_text.clear();
            let mut answers: Vec<(String, String)> = Vec::new();
            let outcome: Result<bool, LoginFailure> = (|| {
                let get = |k: &str| {
                    keys.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                if first {
                    initiator = get("InitiatorName").ok_or_else(|| {
                        LoginFailure::new(status::MISSING_PARAMETER, "InitiatorName is missing")
                    })?;
                    discovery = match get("SessionType").as_deref() {
                        None | Some("Normal") => false,
                        Some("Discovery") => true,
                        Some(other) => {
                            return Err(LoginFailure::new(
                                status::SESSION_TYPE_NOT_SUPPORTED,
                                format!("SessionType={other}"),
                            ))
                        }
                    };
                    if !discovery {
                        let name = get("TargetName").ok_or_else(|| {
                            LoginFailure::new(status::MISSING_PARAMETER, "TargetName is missing")
                        })?;
                        let found = self.export(&name).ok_or_else(|| {
                            LoginFailure::new(status::NOT_FOUND, format!("no target named {name}"))
                        })?;
                        if !found.allows(&initiator) {
                            return Err(LoginFailure::new(
                                status::AUTHORIZATION_FAILED,
                                format!("{initiator} is not in the allow list of {name}"),
                            ));
                        }
                        export = Some(found);
                    }
                    if tsih != 0 {
                        // A new connection for an existing session.
                        let session = self.sessions.lock().unwrap().get(&tsih).cloned();
                        let session = session
                            .filter(|s| s.isid == isid && s.initiator == initiator)
                            .ok_or_else(|| {
                                LoginFailure::new(
                                    status::SESSION_DOES_NOT_EXIST,
                                    format!("no session with TSIH {tsih}"),
                                )
                            })?;
                        let connections = session.connections.lock().unwrap().len() as u32;
                        if connections >= session.params.max_connections {
                            return Err(LoginFailure::new(
                                status::TOO_MANY_CONNECTIONS,
                                format!("session already has {connections} connections"),
                            ));
                        }
                        existing = Some(session);
                    }
                }
                let (required, mutual) = match &export {
                    Some(e) => (e.config.chap.as_ref(), e.config.mutual_chap.as_ref()),
                    None => (None, None),
                };
                if csg == login::SECURITY {
                    chap.step(&keys, required, mutual, &mut answers)?;
                } else if !chap.done && required.is_some() {
                    return Err(LoginFailure::new(
                        status::AUTHENTICATION_FAILED,
                        "the target requires CHAP; the initiator skipped security negotiation",
                    ));
                }
                if csg == login::OPERATIONAL || csg == login::SECURITY {
                    let operational: Vec<(String, String)> = keys
                        .iter()
                        .filter(|(k, _)| k != "AuthMethod" && !k.starts_with("CHAP_"))
                        .cloned()
                        .collect();
                    if csg == login::OPERATIONAL || chap.done || required.is_none() {
                        login::negotiate_operational(
                            &mut params,
                            &operational,
                            discovery,
                            &mut answers,
                        )?;
                    }
                }
                if csg == 2 || csg == login::FULL_FEATURE || csg < stage {
                    return Err(LoginFailure::new(
                        status::INITIATOR_ERROR,
                        format!("login stage {csg} is not valid here"),
                    ));
                }
                stage = csg;
                if !discovery && !sent_tpgt {
                    sent_tpgt = true;
                    answers.push((
                        "TargetPortalGroupTag".into(),
                        self.portal_group_tag.to_string(),
                    ));
                }
                // Security must be finished before leaving it.
                let may_transit = csg != login::SECURITY || chap.done || required.is_none();
                Ok(transit && may_transit)
            })();
            first = false;
            let transit_now = match outcome {
                Ok(t) => t,
                Err(failure) => {
                    self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    fail_login(&initiator, stat_sn, cmd_sn, &mut response, failure);
                    let _ = response.write(writer, false, false).await;
                    return None;
                }
            };
            let finishing = transit_now && nsg == login::FULL_FEATURE;
            if finishing {
                login::declare_defaults(&mut answers, &mut params);
                params.finish();
            }
            if finishing && tsih == 0 {
                tsih = self.next_tsih.fetch_add(1, Ordering::SeqCst).max(1);
            }
            let mut out_flags = (csg << 2) | if transit_now { 0x80 | nsg } else { 0 };
            if !transit_now {
                out_flags = csg << 2;
            }
            response.set_flags(out_flags);
            response.set_u16_at(14, if finishing { tsih } else { 0 });
            let exp_cmd_sn = existing
                .as_ref()
                .map(|s| s.exp_cmd_sn.load(Ordering::SeqCst))
                .unwrap_or(cmd_sn);
            response.set_sequence(
                stat_sn,
                exp_cmd_sn,
                exp_cmd_sn.wrapping_add(QUEUE_DEPTH - 1),
            );
            response.set_data(text::encode(&answers));
            stat_sn = stat_sn.wrapping_add(1);
            if response.write(writer, false, false).await.is_err() {
                return None;
            }
            if !finishing {
                if transit_now {
                    stage = nsg;
                }
                continue;
            }
            self.stats.logins.fetch_add(1, Ordering::Relaxed);
            let session = match existing {
                Some(session) => session,
                None => {
                    let nexus = format!("{},i,0x{}", initiator, hex::encode(isid));
                    // Session reinstatement: the same initiator port logging
                    // in again replaces its old session (an I_T nexus loss).
                    let old: Vec<Arc<Session>> = {
                        let mut sessions = self.sessions.lock().unwrap();
                        let stale: Vec<u16> = sessions
                            .iter()
                            .filter(|(_, s)| {
                                s.nexus == nexus
                                    && s.export.as_ref().map(|e| &e.config.iqn)
                                        == export.as_ref().map(|e| &e.config.iqn)
                            })
                            .map(|(t, _)| *t)
                            .collect();
                        stale.iter().filter_map(|t| sessions.remove(t)).collect()
                    };
                    for s in old {
                        end_session(&s);
                        s.close_all();
                    }
                    let session = Arc::new(Session {
                        tsih,
                        isid,
                        initiator: initiator.clone(),
                        nexus,
                        export: export.clone(),
                        params: params.clone(),
                        window: Mutex::new(Window {
                            exp_cmd_sn: cmd_sn,
                            pending: BTreeMap::new(),
                        }),
                        exp_cmd_sn: AtomicU32::new(cmd_sn),
                        tasks: Mutex::new(HashMap::new()),
                        connections: Mutex::new(HashMap::new()),
                        ended: AtomicBool::new(false),
                    });
                    self.sessions.lock().unwrap().insert(tsih, session.clone());
                    info!(initiator = %initiator, tsih, discovery, "iscsi login");
                    session
                }
            };
            return Some((session, cid, params, stat_sn));
        }
    }

    async fn full_feature(
        self: Arc<Self>,
        session: Arc<Session>,
        cid: u16,
        params: Params,
        stat_sn: u32,
        mut reader: OwnedReadHalf,
        writer: OwnedWriteHalf,
    ) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let shutdown = Arc::new(Notify::new());
        if let Some(old) = session.connections.lock().unwrap().insert(
            cid,
            ConnHandle {
                shutdown: shutdown.clone(),
                out: out_tx.clone(),
            },
        ) {
            // Connection reinstatement: the old connection with this CID
            // goes (RFC 7143 6.3.4).
            old.shutdown.notify_one();
        }
        let last_heard = Arc::new(Mutex::new(Instant::now()));
        let writer_task = tokio::spawn(write_loop(
            writer,
            out_rx,
            session.clone(),
            params.header_digest,
            params.data_digest,
            stat_sn,
        ));
        let conn = Arc::new(Conn {
            cid,
            session: session.clone(),
            portal: self.clone(),
            out: out_tx.clone(),
            transfers: Mutex::new(HashMap::new()),
            params: Mutex::new(params.clone()),
            next_ttt: AtomicU32::new(1),
            next_transfer: AtomicU64::new(1),
            shutdown: shutdown.clone(),
        });
        // Keepalive: ping an idle initiator, drop a dead one.
        let keepalive = {
            let last_heard = last_heard.clone();
            let out = out_tx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let idle = last_heard.lock().unwrap().elapsed();
                    if idle > DEAD_AFTER {
                        warn!("iscsi initiator silent for {idle:?}; dropping the connection");
                        shutdown.notify_one();
                        return;
                    }
                    if idle > PING_AFTER {
                        let mut ping = Pdu::new(op::NOP_IN);
                        ping.set_flags(0x80);
                        ping.set_itt(RESERVED_TAG);
                        ping.set_u32_at(20, 0x7000_0000);
                        if out
                            .send(Out {
                                pdu: ping,
                                advances_stat_sn: false,
                                last: false,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            })
        };
        loop {
            let max_data = params
                .target_max_recv_data_segment_length
                .max(text::TARGET_MAX_RECV_DATA_SEGMENT_LENGTH) as usize;
            let read = tokio::select! {
                read = Pdu::read(&mut reader, params.header_digest, params.data_digest, max_data) => read,
                _ = shutdown.notified() => break,
            };
            *last_heard.lock().unwrap() = Instant::now();
            let pdu = match read {
                Ok(pdu) => pdu,
                Err(PduError::DataDigest { pdu }) => {
                    // The stream is still in step: reject and go on; the
                    // initiator's ERL 0 recovery retries the command.
                    conn.reject(&pdu, reject::DATA_DIGEST_ERROR);
                    continue;
                }
                Err(PduError::TooLong { length, limit }) => {
                    warn!(length, limit, "iscsi PDU too long; closing the connection");
                    break;
                }
                Err(PduError::Closed) => break,
                Err(e) => {
                    warn!("iscsi connection dropped: {e}");
                    break;
                }
            };
            if !conn.clone().handle(pdu) {
                break;
            }
        }
        keepalive.abort();
        // Tasks of this connection end with it (ERL 0).
        let aborted: Vec<tokio::task::AbortHandle> = {
            let mut tasks = session.tasks.lock().unwrap();
            let mine: Vec<u32> = tasks
                .iter()
                .filter(|(_, t)| t.cid == cid)
                .map(|(itt, _)| *itt)
                .collect();
            mine.iter()
                .filter_map(|itt| tasks.remove(itt))
                .map(|t| t.abort)
                .collect()
        };
        for a in aborted {
            a.abort();
        }
        conn.transfers.lock().unwrap().clear();
        drop(out_tx);
        let last_connection = {
            let mut connections = session.connections.lock().unwrap();
            if connections
                .get(&cid)
                .is_some_and(|c| Arc::ptr_eq(&c.shutdown, &shutdown))
            {
                connections.remove(&cid);
            }
            connections.is_empty()
        };
        if last_connection {
            let dropped = session.forget_pending();
            if dropped > 0 {
                debug!(
                    dropped,
                    "commands waiting for a CmdSN gap dropped with the session"
                );
            }
        }
        drop(conn);
        // Let the writer flush what is queued (a logout response); one
        // that does not end in time is stopped, which drops its half of the
        // socket and sends the FIN the linger below waits behind.
        let stop_writer = writer_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), writer_task)
            .await
            .is_err()
        {
            stop_writer.abort();
        }
        if last_connection {
            let mut sessions = self.sessions.lock().unwrap();
            if sessions
                .get(&session.tsih)
                .is_some_and(|s| Arc::ptr_eq(s, &session))
            {
                sessions.remove(&session.tsih);
            }
            drop(sessions);
            end_session(&session);
        }
        linger(reader).await;
    }
}

/// Reads and discards what the initiator still sends after the target
/// closed its side, until the initiator closes too. Closing a socket with
/// unread data sends a reset, and an initiator writing into a reset
/// connection can die of SIGPIPE (libiscsi does) instead of reconnecting.
async fn linger(mut reader: OwnedReadHalf) {
    let mut sink = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn fail_login(
    initiator: &str,
    stat_sn: u32,
    cmd_sn: u32,
    response: &mut Pdu,
    failure: LoginFailure,
) {
    warn!(initiator = %initiator, reason = %failure.reason, "iscsi login failed");
    response.bhs[36] = failure.status.0;
    response.bhs[37] = failure.status.1;
    response.set_sequence(stat_sn, cmd_sn, cmd_sn);
}

/// The I_T nexus is gone: reservations that do not persist end.
fn end_session(session: &Session) {
    if session.ended.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(export) = &session.export {
        export.lu.nexus_lost(&session.nexus);
    }
    info!(initiator = %session.initiator, tsih = session.tsih, "iscsi session ended");
}

async fn write_loop(
    writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    session: Arc<Session>,
    header_digest: bool,
    data_digest: bool,
    mut stat_sn: u32,
) {
    let mut writer = BufWriter::with_capacity(256 * 1024, writer);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        while let Some(mut out) = next.take() {
            let exp = session.exp_cmd_sn.load(Ordering::SeqCst);
            out.pdu.set_sequence(stat_sn, exp, session.max_cmd_sn());
            if out.advances_stat_sn {
                stat_sn = stat_sn.wrapping_add(1);
            }
            if writer
                .write_all(&out.pdu.encode(header_digest, data_digest))
                .await
                .is_err()
            {
                return;
            }
            if out.last {
                close = true;
                break;
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() || close {
            let _ = writer.shutdown().await;
            return;
        }
    }
    let _ = writer.flush().await;
}

struct Conn {
    cid: u16,
    session: Arc<Session>,
    portal: Arc<Portal>,
    out: mpsc::UnboundedSender<Out>,
    /// Write commands waiting for Data-Out, by ITT, with a serial number
    /// so that a finished task never removes a newer one's entry.
    transfers: Mutex<HashMap<u32, (u64, mpsc::UnboundedSender<Pdu>)>>,
    next_transfer: AtomicU64,
    params: Mutex<Params>,
    next_ttt: AtomicU32,
    shutdown: Arc<Notify>,
}

fn lun_of(pdu: &Pdu) -> u64 {
    // Single-level LUN, peripheral or flat addressing.
    let b = &pdu.bhs[8..16];
    let lun = (((b[0] & 0x3f) as u64) << 8) | b[1] as u64;
    if b[2..].iter().any(|x| *x != 0) {
        u64::MAX
    } else {
        lun
    }
}

impl Conn {
    fn send(&self, pdu: Pdu, advances_stat_sn: bool) {
        let _ = self.out.send(Out {
            pdu,
            advances_stat_sn,
            last: false,
        });
    }

    fn reject(&self, bad: &Pdu, reason: u8) {
        self.portal.stats.rejects.fetch_add(1, Ordering::Relaxed);
        let mut pdu = Pdu::new(op::REJECT);
        pdu.set_flags(0x80);
        pdu.bhs[2] = reason;
        pdu.set_itt(RESERVED_TAG);
        pdu.set_data(bad.bhs.to_vec());
        self.send(pdu, true);
    }

    /// Handles one PDU from the initiator; false ends the connection.
    fn handle(self: Arc<Self>, pdu: Pdu) -> bool {
        let discovery = self.session.export.is_none();
        match pdu.opcode() {
            op::NOP_OUT => self.nop_out(pdu),
            op::SCSI_COMMAND if !discovery => self.scsi_command(pdu),
            op::DATA_OUT if !discovery => self.data_out(pdu),
            op::TASK_MGMT_REQUEST if !discovery => self.task_management(pdu),
            op::TEXT_REQUEST => self.text_request(pdu),
            op::LOGOUT_REQUEST => self.logout(pdu),
            op::LOGIN_REQUEST => {
                self.reject(&pdu, reject::PROTOCOL_ERROR);
                false
            }
            op::SNACK_REQUEST => {
                // ERL 0 has no SNACK support.
                self.reject(&pdu, reject::COMMAND_NOT_SUPPORTED);
                true
            }
            op::SCSI_COMMAND | op::TASK_MGMT_REQUEST | op::DATA_OUT => {
                self.reject(&pdu, reject::PROTOCOL_ERROR);
                true
            }
            _ => {
                self.reject(&pdu, reject::COMMAND_NOT_SUPPORTED);
                true
            }
        }
    }

    /// Admits a non-immediate request by CmdSN and runs `run` when its turn
    /// comes; immediate requests run at once.
    fn ordered(
        self: &Arc<Self>,
        immediate: bool,
        cmd_sn: u32,
        run: impl FnOnce() + Send + 'static,
    ) {
        if immediate {
            run();
            return;
        }
        let mut run = Some(run);
        match self.session.admit(cmd_sn, || {
            let run = run.take().unwrap();
            Box::new(run)
        }) {
            Admit::Now => {
                (run.take().unwrap())();
                self.session.drain();
            }
            Admit::Later => {}
            Admit::Drop => debug!(cmd_sn, "CmdSN outside the window; ignored"),
        }
    }

    fn nop_out(self: Arc<Self>, pdu: Pdu) -> bool {
        if pdu.itt() == RESERVED_TAG {
            // A reply to our ping, or a ping that wants no answer.
            return true;
        }
        let conn = self.clone();
        let (immediate, cmd_sn) = (pdu.immediate(), pdu.cmd_sn());
        let reply = move || {
            let mut nop = Pdu::new(op::NOP_IN);
            nop.set_flags(0x80);
            nop.bhs[8..16].copy_from_slice(&pdu.bhs[8..16]);
            nop.set_itt(pdu.itt());
            nop.set_u32_at(20, RESERVED_TAG);
            let limit = conn
                .params
                .lock()
                .unwrap()
                .initiator_max_recv_data_segment_length as usize;
            let mut data = pdu.data.clone();
            data.truncate(limit);
            nop.set_data(data);
            conn.send(nop, true);
        };
        self.ordered(immediate, cmd_sn, reply);
        true
    }

    fn scsi_command(self: Arc<Self>, pdu: Pdu) -> bool {
        let itt = pdu.itt();
        let edtl = pdu.u32_at(20) as usize;
        let writing = pdu.flags() & 0x20 != 0;
        let params = self.params.lock().unwrap().clone();
        if !pdu.data.is_empty()
            && (!writing
                || !params.immediate_data
                || pdu.data.len() > edtl
                || pdu.data.len() > params.first_burst_length as usize)
        {
            warn!(
                itt,
                "immediate data not allowed here; rejecting and closing"
            );
            self.reject(&pdu, reject::PROTOCOL_ERROR);
            return false;
        }
        // Register the transfer before ordering, so that Data-Out PDUs
        // arriving before the command's turn are kept.
        let transfer = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let data_rx = if writing && edtl > pdu.data.len() {
            let (tx, rx) = mpsc::unbounded_channel();
            self.transfers.lock().unwrap().insert(itt, (transfer, tx));
            Some(rx)
        } else {
            None
        };
        let (immediate, cmd_sn) = (pdu.immediate(), pdu.cmd_sn());
        let conn = self.clone();
        let lun = lun_of(&pdu);
        let run = move || {
            let session = conn.session.clone();
            let task_conn = conn.clone();
            // The task is registered under the lock it must take to answer,
            // so it cannot answer before it is known to ABORT TASK.
            let mut tasks = session.tasks.lock().unwrap();
            let handle = tokio::spawn(async move {
                task_conn.run_command(pdu, data_rx).await;
            });
            tasks.insert(
                itt,
                Task {
                    lun,
                    cid: conn.cid,
                    abort: handle.abort_handle(),
                },
            );
            drop(tasks);
            // Forget its Data-Out route when it ends, however it ends.
            tokio::spawn(async move {
                let _ = handle.await;
                let mut transfers = conn.transfers.lock().unwrap();
                if transfers.get(&itt).is_some_and(|(t, _)| *t == transfer) {
                    transfers.remove(&itt);
                }
            });
        };
        self.ordered(immediate, cmd_sn, run);
        true
    }

    fn data_out(self: Arc<Self>, pdu: Pdu) -> bool {
        let sender = self
            .transfers
            .lock()
            .unwrap()
            .get(&pdu.itt())
            .map(|(_, tx)| tx.clone());
        match sender {
            Some(tx) => {
                let _ = tx.send(pdu);
            }
            // Data for an aborted or finished task is dropped.
            None => debug!(itt = pdu.itt(), "Data-Out for no pending command; dropped"),
        }
        true
    }

    /// A protocol error inside a command's data transfer: reject and drop
    /// the connection (ERL 0).
    fn fail_connection(&self, bad: &Pdu, why: &str) {
        warn!(itt = bad.itt(), "{why}; closing the connection");
        self.reject(bad, reject::PROTOCOL_ERROR);
        let _ = self.out.send(Out {
            pdu: Pdu::new(op::NOP_IN),
            advances_stat_sn: false,
            last: true,
        });
        self.shutdown.notify_one();
    }

    /// Receives one burst of Data-Out into `buf` from `*received` up to
    /// `end`, in DataSN order and with tag `ttt` (the reserved tag for the
    /// unsolicited burst). An R2T's burst (`exact`) must fill it to `end`.
    /// None after a protocol error, which drops the connection (ERL 0).
    async fn receive_burst(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Pdu>,
        buf: &mut [u8],
        received: &mut usize,
        ttt: u32,
        end: usize,
        exact: bool,
    ) -> Option<()> {
        let mut data_sn = 0u32;
        loop {
            let pdu = rx.recv().await?;
            let offset = pdu.u32_at(40) as usize;
            let error = if pdu.u32_at(20) != ttt {
                Some("Data-Out with a wrong Target Transfer Tag")
            } else if pdu.u32_at(36) != data_sn {
                Some("Data-Out with a wrong DataSN")
            } else if offset != *received || offset + pdu.data.len() > end {
                Some("Data-Out outside its burst")
            } else {
                None
            };
            if let Some(why) = error {
                self.fail_connection(&pdu, why);
                return None;
            }
            buf[offset..offset + pdu.data.len()].copy_from_slice(&pdu.data);
            *received += pdu.data.len();
            data_sn += 1;
            if pdu.final_bit() || (exact && *received == end) {
                if exact && *received != end {
                    self.fail_connection(&pdu, "burst ended short of the R2T's length");
                    return None;
                }
                return Some(());
            }
        }
    }

    /// Gathers a write's data: immediate data, unsolicited Data-Out, then
    /// R2T bursts. None if the connection failed.
    async fn gather(
        &self,
        command: &Pdu,
        edtl: usize,
        mut rx: mpsc::UnboundedReceiver<Pdu>,
    ) -> Option<Vec<u8>> {
        let params = self.params.lock().unwrap().clone();
        let mut buf = vec![0u8; edtl];
        let mut received = command.data.len();
        buf[..received].copy_from_slice(&command.data);
        let lun = &command.bhs[8..16];
        // Unsolicited Data-Out follows when the command's F bit is clear;
        // the initiator ends it with the F bit, within the first burst.
        if !params.initial_r2t && !command.final_bit() {
            let limit = (params.first_burst_length as usize).min(edtl);
            self.receive_burst(&mut rx, &mut buf, &mut received, RESERVED_TAG, limit, false)
                .await?;
        }
        let mut r2t_sn = 0u32;
        while received < edtl {
            // One burst per R2T, in order.
            let length = (edtl - received).min(params.max_burst_length as usize);
            let ttt = self.next_ttt.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            let mut r2t = Pdu::new(op::R2T);
            r2t.set_flags(0x80);
            r2t.bhs[8..16].copy_from_slice(lun);
            r2t.set_itt(command.itt());
            r2t.set_u32_at(20, ttt);
            r2t.set_u32_at(36, r2t_sn);
            r2t.set_u32_at(40, received as u32);
            r2t.set_u32_at(44, length as u32);
            self.send(r2t, false);
            r2t_sn += 1;
            let end = received + length;
            self.receive_burst(&mut rx, &mut buf, &mut received, ttt, end, true)
                .await?;
        }
        Some(buf)
    }

    async fn run_command(
        self: Arc<Self>,
        command: Pdu,
        data_rx: Option<mpsc::UnboundedReceiver<Pdu>>,
    ) {
        let stats = &self.portal.stats;
        stats.commands.fetch_add(1, Ordering::Relaxed);
        let edtl = command.u32_at(20) as usize;
        let reading = command.flags() & 0x40 != 0;
        let data_out = match data_rx {
            Some(rx) => match self.gather(&command, edtl, rx).await {
                Some(data) => data,
                None => return,
            },
            None => command.data.clone(),
        };
        stats
            .write_bytes
            .fetch_add(data_out.len() as u64, Ordering::Relaxed);
        let cdb = command.cdb();
        let lun = lun_of(&command);
        let export = self.session.export.clone().expect("normal session");
        let result = if lun == 0 {
            export
                .lu
                .execute(&self.session.nexus, &cdb, &data_out)
                .await
        } else {
            missing_lun(&cdb)
        };
        // Answer only if no task management took the task meanwhile.
        {
            let mut tasks = self.session.tasks.lock().unwrap();
            let mine = tokio::task::try_id();
            if tasks
                .get(&command.itt())
                .is_none_or(|t| Some(t.abort.id()) != mine)
            {
                return;
            }
            tasks.remove(&command.itt());
        }
        self.respond(&command, edtl, reading, result);
    }

    /// Sends Data-In (status folded into the last PDU when possible) and
    /// the SCSI Response, with residuals against the expected length.
    fn respond(&self, command: &Pdu, edtl: usize, reading: bool, result: ScsiResult) {
        let params = self.params.lock().unwrap().clone();
        let itt = command.itt();
        let mut data = result.data;
        // Residuals: for data-in, what the command produced against what
        // the initiator expects; for data-out, what the CDB asked for.
        let transfer = if reading || !data.is_empty() {
            data.len()
        } else {
            result.wanted_out
        };
        let (overflow, underflow, residual) = match transfer.cmp(&edtl) {
            std::cmp::Ordering::Greater => (true, false, transfer - edtl),
            std::cmp::Ordering::Less => (false, true, edtl - transfer),
            std::cmp::Ordering::Equal => (false, false, 0),
        };
        data.truncate(edtl);
        if !reading {
            data.clear();
        }
        self.portal
            .stats
            .read_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let residual_flags = if overflow {
            0x04
        } else if underflow {
            0x02
        } else {
            0
        };
        let fold_status =
            result.status == sense::GOOD && result.sense.is_none() && !data.is_empty();
        let chunk = params.initiator_max_recv_data_segment_length.max(512) as usize;
        let burst = params.max_burst_length.max(512) as usize;
        let mut data_sn = 0u32;
        let mut offset = 0usize;
        let total = data.len();
        while offset < total {
            let end_of_burst = (offset / burst + 1) * burst;
            let len = chunk.min(total - offset).min(end_of_burst - offset);
            let last = offset + len == total;
            let mut pdu = Pdu::new(op::DATA_IN);
            let mut flags = 0u8;
            if last || offset + len == end_of_burst {
                flags |= 0x80;
            }
            if last && fold_status {
                flags |= 0x01 | residual_flags;
                pdu.bhs[3] = result.status;
                pdu.set_u32_at(44, residual as u32);
            }
            pdu.set_flags(flags);
            pdu.bhs[8..16].copy_from_slice(&command.bhs[8..16]);
            pdu.set_itt(itt);
            pdu.set_u32_at(20, RESERVED_TAG);
            pdu.set_u32_at(36, data_sn);
            pdu.set_u32_at(40, offset as u32);
            pdu.set_data(data[offset..offset + len].to_vec());
            self.send(pdu, last && fold_status);
            data_sn += 1;
            offset += len;
        }
        if fold_status {
            return;
        }
        let mut response = Pdu::new(op::SCSI_RESPONSE);
        response.set_flags(0x80 | residual_flags);
        response.bhs[2] = 0x00;
        response.bhs[3] = result.status;
        response.set_itt(itt);
        response.set_u32_at(36, data_sn);
        response.set_u32_at(44, residual as u32);
        if let Some(sense) = result.sense {
            let mut segment = (sense.len() as u16).to_be_bytes().to_vec();
            segment.extend_from_slice(&sense);
            response.set_data(segment);
        }
        self.send(response, true);
    }

    fn task_management(self: Arc<Self>, pdu: Pdu) -> bool {
        let conn = self.clone();
        let (immediate, cmd_sn) = (pdu.immediate(), pdu.cmd_sn());
        let run = move || conn.run_task_management(pdu);
        self.ordered(immediate, cmd_sn, run);
        true
    }

    fn run_task_management(self: &Arc<Self>, pdu: Pdu) {
        const COMPLETE: u8 = 0;
        const NO_TASK: u8 = 1;
        const NO_LUN: u8 = 2;
        const NOT_SUPPORTED: u8 = 5;
        let function = pdu.flags() & 0x7f;
        let lun = lun_of(&pdu);
        let export = self.session.export.clone().expect("normal session");
        let session = &self.session;
        // Aborted tasks, to be over before the response says so.
        let mut aborted: Vec<tokio::task::AbortHandle> = Vec::new();
        let abort_where = |filter: &dyn Fn(&Task) -> bool| {
            let mut tasks = session.tasks.lock().unwrap();
            let doomed: Vec<u32> = tasks
                .iter()
                .filter(|(itt, t)| **itt != pdu.itt() && filter(t))
                .map(|(itt, _)| *itt)
                .collect();
            doomed
                .into_iter()
                .filter_map(|itt| tasks.remove(&itt).map(Task::cancel))
                .collect::<Vec<_>>()
        };
        let response = match function {
            1 => {
                // ABORT TASK
                let referenced = pdu.u32_at(20);
                let task = session.tasks.lock().unwrap().remove(&referenced);
                match task {
                    Some(t) => {
                        aborted.push(t.cancel());
                        COMPLETE
                    }
                    None => {
                        // Not running: answered already ("task does not
                        // exist"), or not yet run. A command that has not
                        // arrived, or waits for an earlier CmdSN, is
                        // considered received and dropped (RFC 7143
                        // 11.5.1): its slot is filled with nothing.
                        let ref_sn = pdu.u32_at(32);
                        let mut window = session.window.lock().unwrap();
                        let exp = window.exp_cmd_sn;
                        let max = exp.wrapping_add(QUEUE_DEPTH - 1);
                        let ahead = !sn_lt(ref_sn, exp) && !sn_lt(max, ref_sn);
                        if ahead && sn_lt(ref_sn, pdu.cmd_sn()) {
                            window.pending.insert(ref_sn, Box::new(|| {}));
                            COMPLETE
                        } else {
                            NO_TASK
                        }
                    }
                }
            }
            2 | 4 => {
                // ABORT TASK SET / CLEAR TASK SET: this session's tasks.
                if lun != 0 {
                    NO_LUN
                } else {
                    aborted.extend(abort_where(&|t: &Task| t.lun == lun));
                    COMPLETE
                }
            }
            5 => {
                // LOGICAL UNIT RESET: every session's tasks on the LU.
                if lun != 0 {
                    NO_LUN
                } else {
                    aborted.extend(self.portal.reset_export(&export, Some(session)));
                    aborted.extend(abort_where(&|_t: &Task| true));
                    COMPLETE
                }
            }
            6 | 7 => {
                // TARGET WARM / COLD RESET.
                aborted.extend(self.portal.reset_export(&export, Some(session)));
                aborted.extend(abort_where(&|_t: &Task| true));
                if function == 7 {
                    // At once, as a dropped connection: held open while
                    // the device settles, the sessions would take new
                    // commands only to abort them unsettled.
                    self.send_tmf_response(&pdu, COMPLETE);
                    for s in self.portal.sessions_of(&export) {
                        s.close_all();
                    }
                    return;
                }
                COMPLETE
            }
            // CLEAR ACA: ACA is not offered. TASK REASSIGN needs ERL 2.
            3 => NOT_SUPPORTED,
            8 => 4,
            _ => 255,
        };
        if aborted.is_empty() {
            self.send_tmf_response(&pdu, response);
            return;
        }
        let conn = self.clone();
        tokio::spawn(async move {
            settle_aborted(aborted, export.lu.device()).await;
            conn.send_tmf_response(&pdu, response);
        });
    }

    fn send_tmf_response(&self, request: &Pdu, response: u8) {
        let mut pdu = Pdu::new(op::TASK_MGMT_RESPONSE);
        pdu.set_flags(0x80);
        pdu.bhs[2] = response;
        pdu.set_itt(request.itt());
        self.send(pdu, true);
    }

    fn text_request(self: Arc<Self>, pdu: Pdu) -> bool {
        let conn = self.clone();
        let (immediate, cmd_sn) = (pdu.immediate(), pdu.cmd_sn());
        self.ordered(immediate, cmd_sn, move || conn.run_text(pdu));
        true
    }

    fn run_text(&self, pdu: Pdu) {
        let keys = match text::parse(&pdu.data) {
            Ok(keys) => keys,
            Err(e) => {
                warn!("bad text request: {e}");
                self.reject(&pdu, reject::PROTOCOL_ERROR);
                return;
            }
        };
        let mut answers: Vec<(String, String)> = Vec::new();
        for (key, value) in &keys {
            if key == "SendTargets" {
                answers.extend(self.portal.send_targets(value, &self.session));
            } else {
                let mut params = self.params.lock().unwrap();
                match params.negotiate(key, value) {
                    Ok(Some(answer)) => answers.push(answer),
                    Ok(None) => {}
                    Err(e) => {
                        warn!("bad text negotiation: {}", e.0);
                        answers.push((key.clone(), "Reject".into()));
                    }
                }
            }
        }
        let mut response = Pdu::new(op::TEXT_RESPONSE);
        response.set_flags(0x80);
        response.bhs[8..16].copy_from_slice(&pdu.bhs[8..16]);
        response.set_itt(pdu.itt());
        response.set_u32_at(20, RESERVED_TAG);
        let mut data = text::encode(&answers);
        let limit = self
            .params
            .lock()
            .unwrap()
            .initiator_max_recv_data_segment_length as usize;
        if data.len() > limit {
            // Long SendTargets answers would need continuation; cut at the
            // last whole key that fits.
            let cut = data[..limit]
                .iter()
                .rposition(|b| *b == 0)
                .map_or(0, |p| p + 1);
            data.truncate(cut);
        }
        response.set_data(data);
        self.send(response, true);
    }

    fn logout(self: Arc<Self>, pdu: Pdu) -> bool {
        let reason = pdu.flags() & 0x7f;
        let mut response = Pdu::new(op::LOGOUT_RESPONSE);
        response.set_flags(0x80);
        response.set_itt(pdu.itt());
        response.set_u16_at(40, self.session.params.default_time2wait as u16);
        response.set_u16_at(42, self.session.params.default_time2retain as u16);
        let close_session = reason == 0;
        response.bhs[2] = match reason {
            0 | 1 => 0,
            // Connection recovery needs ERL 2.
            _ => 2,
        };
        // A logout is immediate or ordered like a command; either way it
        // is answered now so that the connection can close.
        if !pdu.immediate() {
            let _ = self.session.admit(pdu.cmd_sn(), || Box::new(|| {}));
            self.session.drain();
        }
        let _ = self.out.send(Out {
            pdu: response,
            advances_stat_sn: true,
            last: reason <= 1,
        });
        if close_session {
            end_session(&self.session);
            let others: Vec<Arc<Notify>> = self
                .session
                .connections
                .lock()
                .unwrap()
                .iter()
                .filter(|(cid, _)| **cid != self.cid)
                .map(|(_, c)| c.shutdown.clone())
                .collect();
            for o in others {
                o.notify_one();
            }
        }
        reason > 1
    }
}

/// The answer for a LUN that does not exist (SPC-4 and SAM-5).
fn missing_lun(cdb: &[u8]) -> ScsiResult {
    match cdb.first() {
        Some(0x12) => {
            // INQUIRY: peripheral qualifier 3, "no device here".
            let mut data = vec![0u8; 36];
            data[0] = 0x7f;
            data[2] = 0x06;
            data[3] = 0x12;
            data[4] = 31;
            let alloc = u16::from_be_bytes([cdb[3], cdb[4]]) as usize;
            data.truncate(alloc);
            ScsiResult {
                status: sense::GOOD,
                data,
                sense: None,
                wanted_out: 0,
            }
        }
        _ => ScsiResult {
            status: sense::CHECK_CONDITION,
            data: Vec::new(),
            sense: Some(Sense::LUN_NOT_SUPPORTED.encode(false)),
            wanted_out: 0,
        },
    }
}

impl Portal {
    fn sessions_of(&self, export: &Arc<Export>) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.export.as_ref().is_some_and(|e| Arc::ptr_eq(e, export)))
            .cloned()
            .collect()
    }

    /// A reset of an export's LU: the tasks of every session but `from`'s
    /// end, and every other nexus gets a unit attention. Returns the
    /// aborted tasks.
    fn reset_export(
        &self,
        export: &Arc<Export>,
        from: Option<&Arc<Session>>,
    ) -> Vec<tokio::task::AbortHandle> {
        let mut aborted = Vec::new();
        for session in self.sessions_of(export) {
            if from.is_some_and(|f| Arc::ptr_eq(f, &session)) {
                continue;
            }
            let mut tasks = session.tasks.lock().unwrap();
            aborted.extend(tasks.drain().map(|(_, t)| t.cancel()));
        }
        export.lu.reset();
        aborted
    }

    /// SendTargets answers: `All` lists every target this initiator may
    /// log in to; a name lists that one; empty means the session's own
    /// (RFC 7143 12.3).
    fn send_targets(&self, value: &str, session: &Session) -> Vec<(String, String)> {
        let exports: Vec<Arc<Export>> = self.exports.read().unwrap().values().cloned().collect();
        let mut out = Vec::new();
        for export in exports {
            let wanted = match value {
                "All" => true,
                "" => session
                    .export
                    .as_ref()
                    .is_some_and(|e| Arc::ptr_eq(e, &export)),
                name => export.config.iqn.eq_ignore_ascii_case(name),
            };

            if !wanted || !export.allows(&session.initiator) {
                continue;
            }
            out.push(("TargetName".to_string(), export.config.iqn.clone()));
            for address in self.addresses.read().unwrap().iter() {
                out.push((
                    "TargetAddress".to_string(),
                    format!("{address},{}", self.portal_group_tag),
                ));
            }
        }
        out
    }
}

/// Longest wait for aborted tasks to end before a task management
/// response goes out anyway.
const ABORT_WAIT_MAX: Duration = Duration::from_secs(5);

/// Waits for aborted tasks to be over and for the device to settle what
/// they left in flight: a write the response calls aborted must not land
/// after the initiator sends it again (through any path).
async fn settle_aborted(aborted: Vec<tokio::task::AbortHandle>, device: &Arc<dyn BlockDevice>) {
    let deadline = tokio::time::Instant::now() + ABORT_WAIT_MAX;
    for task in aborted {
        while !task.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = tokio::time::timeout_at(deadline, device.settle()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            tsih: 1,
            isid: [0; 6],
            initiator: "iqn.2026-11.test:unit".into(),
            nexus: "iqn.2026-11.test:unit,i,0x000000000000".into(),
            export: None,
            params: Params::default(),
            window: Mutex::new(Window {
                exp_cmd_sn: 1,
                pending: BTreeMap::new(),
            }),
            exp_cmd_sn: AtomicU32::new(1),
            tasks: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
        }
    }

    #[test]
    fn commands_waiting_for_a_cmdsn_gap_are_released_when_forgotten() {
        let session = session();
        // What a waiting command holds (its connection, in the target).
        let held = Arc::new(());
        let in_command = held.clone();
        let admitted = session.admit(3, move || Box::new(move || drop(in_command)));
        assert!(
            matches!(admitted, Admit::Later),
            "CmdSN 3 waits for 1 and 2"
        );
        assert_eq!(Arc::strong_count(&held), 2);
        assert_eq!(session.forget_pending(), 1);
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the waiting command was dropped"
        );
        // The window itself is unchanged: CmdSN 1 is still the next.
        assert!(matches!(session.admit(1, || Box::new(|| {})), Admit::Now));
    }
}
