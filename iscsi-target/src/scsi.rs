//! The SCSI block command set (SPC-4, SBC-3) of one logical unit backed
//! by a [`BlockDevice`].
//!
//! [`LogicalUnit::execute`] takes a CDB and the data the initiator sent and
//! returns status, data-in and sense. The transport (iSCSI) turns lengths
//! that disagree with the expected transfer length into residuals.

use crate::device::{BlockDevice, DeviceError};
use crate::pr::{Access, PrError, PrOutcome, Reservations};
use crate::sense::{self, Sense};
use std::sync::{Arc, Mutex};

/// The largest transfer of one READ or WRITE, in bytes (Block Limits VPD).
pub const MAX_TRANSFER_BYTES: u64 = 32 * 1024 * 1024;
/// The most blocks one UNMAP descriptor or WRITE SAME may cover.
const MAX_UNMAP_BLOCKS: u64 = 0x0010_0000;
const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// COMPARE AND WRITE handles at most this many blocks.
const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 255;

/// How one volume presents itself to initiators.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Unit serial number (VPD 0x80), also used for the T10 vendor id.
    pub serial: String,
    /// 16-byte NAA type 6 identifier (VPD 0x83): stable per volume.
    pub naa: [u8; 16],
    /// The target's IQN, reported as a SCSI name string.
    pub target_name: String,
    pub product: String,
}

impl Identity {
    /// A stable identity derived from a name (a volume's), so that the same
    /// volume has the same WWN on every node and after every restart.
    pub fn for_name(name: &str, target_name: &str) -> Identity {
        let hash = crc32c::crc32c(name.as_bytes()) as u64;
        let hash2 = crc32c::crc32c_append(0x5a5a_5a5a, name.as_bytes()) as u64;
        let mut naa = [0u8; 16];
        // NAA 6 (IEEE registered extended) with a locally administered
        // company id; the rest is a hash of the name.
        naa[0] = 0x60;
        naa[1] = 0x01;
        naa[2] = 0x40;
        naa[3] = 0x50 | ((hash >> 28) as u8 & 0x0f);
        naa[4..8].copy_from_slice(&(hash as u32).to_be_bytes());
        naa[8..12].copy_from_slice(&(hash2 as u32).to_be_bytes());
        naa[12..16]
            .copy_from_slice(&((name.len() as u32) ^ (hash2 as u32).rotate_left(7)).to_be_bytes());
        Identity {
            serial: format!("{:08x}{:08x}", hash as u32, hash2 as u32),
            naa,
            target_name: target_name.to_string(),
            product: "hpchain volume".to_string(),
        }
    }
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    pub status: u8,
    pub data: Vec<u8>,
    pub sense: Option<Vec<u8>>,
    /// How many data-out bytes the CDB asked for (for write residuals).
    pub wanted_out: usize,
}

impl ScsiResult {
    fn good(data: Vec<u8>) -> ScsiResult {
        ScsiResult {
            status: sense::GOOD,
            data,
            sense: None,
            wanted_out: 0,
        }
    }
    fn check(sense: Sense, descriptor: bool) -> ScsiResult {
        ScsiResult {
            status: sense::CHECK_CONDITION,
            data: Vec::new(),
            sense: Some(sense.encode(descriptor)),
            wanted_out: 0,
        }
    }
    fn conflict() -> ScsiResult {
        ScsiResult {
            status: sense::RESERVATION_CONFLICT,
            data: Vec::new(),
            sense: None,
            wanted_out: 0,
        }
    }
}

/// A unit attention waiting for one or all nexuses.
struct Attention {
    seq: u64,
    sense: Sense,
    only: Option<String>,
    except: Option<String>,
}

struct LuState {
    last_size: u64,
    next_seq: u64,
    attentions: Vec<Attention>,
    /// nexus -> the last attention sequence it has seen.
    seen: std::collections::HashMap<String, u64>,
    reservations: Reservations,
    prevent_removal: std::collections::HashSet<String>,
    write_cache: bool,
}

/// One logical unit (LUN 0 of a target).
pub struct LogicalUnit {
    device: Arc<dyn BlockDevice>,
    identity: Identity,
    read_only: bool,
    state: Mutex<LuState>,
    /// COMPARE AND WRITE must be atomic against other COMPARE AND WRITEs.
    compare_lock: tokio::sync::Mutex<()>,
}

/// Which medium access class a CDB belongs to (for reservations) and
/// whether unit attentions are reported on it.
fn classify(opcode: u8, service_action: u8) -> (Access, bool) {
    match opcode {
        // INQUIRY, REPORT LUNS and REQUEST SENSE never report a UA.
        0x12 | 0xa0 | 0x03 => (Access::None, false),
        0x08 | 0x28 | 0xa8 | 0x88 | 0x2f | 0xaf | 0x8f | 0x34 | 0x90 => (Access::Read, true),
        0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e | 0x41 | 0x93 | 0x42 | 0x89 | 0x35
        | 0x91 | 0x1b | 0x15 | 0x55 => (Access::Write, true),
        0x9e if service_action == 0x12 => (Access::Read, true),
        // MODE SENSE, READ CAPACITY, TUR, PR IN/OUT, RESERVE/RELEASE,
        // REPORT SUPPORTED OPCODES and PREVENT ALLOW: checked by their
        // own rules or never in conflict.
        0x00 => (Access::Read, true),
        _ => (Access::None, true),
    }
}

fn be16(b: &[u8]) -> u64 {
    u16::from_be_bytes([b[0], b[1]]) as u64
}
fn be32(b: &[u8]) -> u64 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// The CDB length of an opcode, by its group code.
pub fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 6,
    }
}

/// LBA, block count and the protect field of a READ/WRITE/VERIFY CDB.
fn rw_fields(cdb: &[u8]) -> (u64, u64, u8) {
    match cdb[0] >> 5 {
        0 => {
            let lba = ((cdb[1] as u64 & 0x1f) << 16) | be16(&cdb[2..]);
            // A transfer length of 0 means 256 blocks in 6-byte CDBs.
            let blocks = if cdb[4] == 0 { 256 } else { cdb[4] as u64 };
            (lba, blocks, 0)
        }
        1 | 2 => (be32(&cdb[2..]), be16(&cdb[7..]), cdb[1] >> 5),
        5 => (be32(&cdb[2..]), be32(&cdb[6..]), cdb[1] >> 5),
        _ => (be64(&cdb[2..]), be32(&cdb[10..]), cdb[1] >> 5),
    }
}

/// Usage bitmaps for REPORT SUPPORTED OPERATION CODES: (opcode, service
/// action, CDB usage data).
fn supported_commands() -> Vec<(u8, Option<u16>, Vec<u8>)> {
    let rw10 = |op: u8| vec![op, 0x18, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00];
    let rw12 = |op: u8| {
        vec![
            op, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
        ]
    };
    let rw16 = |op: u8| {
        vec![
            op, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
            0x00,
        ]
    };
    let verify = |mut v: Vec<u8>| {
        v[1] = 0x16;
        v
    };
    let wv = |mut v: Vec<u8>| {
        v[1] = 0x12;
        v
    };
    let mut commands = vec![
        (0x00, None, vec![0x00, 0, 0, 0, 0, 0x00]),
        (0x03, None, vec![0x03, 0x01, 0, 0, 0xff, 0x00]),
        (0x08, None, vec![0x08, 0x1f, 0xff, 0xff, 0xff, 0x00]),
        (0x0a, None, vec![0x0a, 0x1f, 0xff, 0xff, 0xff, 0x00]),
        (0x12, None, vec![0x12, 0x01, 0xff, 0xff, 0xff, 0x00]),
        (0x15, None, vec![0x15, 0x11, 0, 0, 0xff, 0x00]),
        (0x16, None, vec![0x16, 0, 0, 0, 0, 0x00]),
        (0x17, None, vec![0x17, 0, 0, 0, 0, 0x00]),
        (0x1a, None, vec![0x1a, 0x08, 0xff, 0xff, 0xff, 0x00]),
        (0x1b, None, vec![0x1b, 0x01, 0, 0x0f, 0xf7, 0x00]),
        (0x1e, None, vec![0x1e, 0, 0, 0, 0x03, 0x00]),
        (0x25, None, vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0x00]),
        (0x28, None, rw10(0x28)),
        (0x2a, None, rw10(0x2a)),
        (0x2e, None, wv(rw10(0x2e))),
        (0x2f, None, verify(rw10(0x2f))),
        (
            0x34,
            None,
            vec![0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00],
        ),
        (
            0x35,
            None,
            vec![0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00],
        ),
        (
            0x41,
            None,
            vec![0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00],
        ),
        (
            0x42,
            None,
            vec![0x42, 0x00, 0, 0, 0, 0, 0x00, 0xff, 0xff, 0x00],
        ),
        (
            0x55,
            None,
            vec![0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00],
        ),
        (
            0x5a,
            None,
            vec![0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x00],
        ),
        // PERSISTENT RESERVE IN (service actions 0-2) and OUT (0-6).
    ];
    let prin = vec![0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x00];
    let prout = vec![0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00];
    commands.extend((0..=2).map(|sa| (0x5e, Some(sa), prin.clone())));
    commands.extend((0..=6).map(|sa| (0x5f, Some(sa), prout.clone())));
    commands.extend([
        (0x88, None, rw16(0x88)),
        (
            0x89,
            None,
            vec![
                0x89, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x00,
                0x00,
            ],
        ),
        (0x8a, None, rw16(0x8a)),
        (0x8e, None, wv(rw16(0x8e))),
        (0x8f, None, verify(rw16(0x8f))),
        (
            0x90,
            None,
            vec![
                0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x00, 0x00,
            ],
        ),
        (
            0x91,
            None,
            vec![
                0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x00, 0x00,
            ],
        ),
        (
            0x93,
            None,
            vec![
                0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x00, 0x00,
            ],
        ),
        (
            0x9e,
            Some(0x10),
            vec![
                0x9e, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x00, 0x00,
            ],
        ),
        (
            0x9e,
            Some(0x12),
            vec![
                0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x00, 0x00,
            ],
        ),
        (
            0xa0,
            None,
            vec![0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x00],
        ),
        (
            0xa3,
            Some(0x0c),
            vec![
                0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x00,
            ],
        ),
        (0xa8, None, rw12(0xa8)),
        (0xaa, None, rw12(0xaa)),
        (0xae, None, wv(rw12(0xae))),
        (0xaf, None, verify(rw12(0xaf))),
    ]);
    commands
}

impl LogicalUnit {
    pub fn new(device: Arc<dyn BlockDevice>, identity: Identity, read_only: bool) -> LogicalUnit {
        let size = device.size();
        LogicalUnit {
            device,
            identity,
            read_only,
            state: Mutex::new(LuState {
                last_size: size,
                next_seq: 1,
                attentions: Vec::new(),
                seen: Default::default(),
                reservations: Reservations::default(),
                prevent_removal: Default::default(),
                write_cache: true,
            }),
            compare_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    fn block_size(&self) -> u64 {
        self.device.block_size() as u64
    }

    fn blocks(&self) -> u64 {
        self.device.size() / self.block_size()
    }

    /// Queues a unit attention for every nexus (except one, if given).
    pub fn raise(&self, sense: Sense, except: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        Self::raise_locked(&mut state, sense, None, except);
    }

    fn raise_locked(state: &mut LuState, sense: Sense, only: Option<&str>, except: Option<&str>) {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.attentions.push(Attention {
            seq,
            sense,
            only: only.map(str::to_string),
            except: except.map(str::to_string),
        });
        // Keep the queue bounded: old attentions matter less than new.
        if state.attentions.len() > 64 {
            state.attentions.remove(0);
        }
    }

    /// A LOGICAL UNIT RESET or TARGET WARM RESET: SPC-2 reservations and
    /// medium removal prevention end; every nexus, the resetting one
    /// included, gets a unit attention (SAM-5 6.3.3).
    pub fn reset(&self) {
        let mut state = self.state.lock().unwrap();
        state.reservations.legacy_holder = None;
        state.prevent_removal.clear();
        Self::raise_locked(&mut state, Sense::BUS_DEVICE_RESET, None, None);
    }

    /// An I_T nexus ended (logout, lost connection).
    pub fn nexus_lost(&self, nexus: &str) {
        let mut state = self.state.lock().unwrap();
        state.reservations.nexus_lost(nexus);
        state.prevent_removal.remove(nexus);
    }

    /// Takes the oldest unit attention pending for `nexus`, if any, and
    /// notices a capacity change first.
    fn take_attention(&self, nexus: &str) -> Option<Sense> {
        let size = self.device.size();
        let mut state = self.state.lock().unwrap();
        if size != state.last_size {
            state.last_size = size;
            Self::raise_locked(&mut state, Sense::CAPACITY_CHANGED, None, None);
        }
        let latest = state.next_seq - 1;
        // A nexus seen for the first time starts with no old attentions.
        let seen = match state.seen.get(nexus) {
            Some(seen) => *seen,
            None => {
                state.seen.insert(nexus.to_string(), latest);
                return None;
            }
        };
        if seen == latest {
            return None;
        }
        let pending = state
            .attentions
            .iter()
            .find(|a| {
                a.seq > seen
                    && a.only.as_deref().is_none_or(|n| n == nexus)
                    && a.except.as_deref() != Some(nexus)
            })
            .map(|a| (a.seq, a.sense));
        if let Some(seen) = state.seen.get_mut(nexus) {
            *seen = pending.map_or(latest, |(seq, _)| seq);
        }
        pending.map(|(_, sense)| sense)
    }

    /// Runs one command for `nexus` with the data-out bytes received.
    pub async fn execute(&self, nexus: &str, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let opcode = cdb.first().copied().unwrap_or(0xff);
        if cdb.len() < cdb_len(opcode) {
            return ScsiResult::check(Sense::INVALID_FIELD_IN_CDB.at_cdb(0, None), false);
        }
        let service_action = cdb.get(1).copied().unwrap_or(0) & 0x1f;
        let (access, reports_attention) = classify(opcode, service_action);
        if reports_attention {
            if let Some(sense) = self.take_attention(nexus) {
                return ScsiResult::check(sense, false);
            }
        }
        // Under an SPC-2 reservation only these run for other nexuses.
        let legacy_exempt = matches!(opcode, 0x12 | 0xa0 | 0x03 | 0x16 | 0x17);
        if !self
            .state
            .lock()
            .unwrap()
            .reservations
            .allows(nexus, access, legacy_exempt)
        {
            return ScsiResult::conflict();
        }
        // The control byte's NACA bit asks for ACA, which is not offered.
        let control = cdb[cdb_len(opcode) - 1];
        if control & 0x04 != 0 && opcode != 0x03 {
            return ScsiResult::check(
                Sense::INVALID_FIELD_IN_CDB.at_cdb(cdb_len(opcode) as u16 - 1, Some(2)),
                false,
            );
        }
        match self.dispatch(nexus, cdb, data_out).await {
            Ok(result) => result,
            Err(sense) => ScsiResult::check(sense, false),
        }
    }

    async fn dispatch(
        &self,
        nexus: &str,
        cdb: &[u8],
        data_out: &[u8],
    ) -> Result<ScsiResult, Sense> {
        let opcode = cdb[0];
        match opcode {
            0x00 => Ok(ScsiResult::good(Vec::new())),
            0x03 => self.request_sense(nexus, cdb),
            0x12 => self.inquiry(cdb),
            0xa0 => self.report_luns(cdb),
            0x25 => self.read_capacity10(cdb),
            0x9e => match cdb[1] & 0x1f {
                0x10 => self.read_capacity16(cdb),
                0x12 => self.get_lba_status(cdb).await,
                _ => Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(4))),
            },
            0x08 | 0x28 | 0xa8 | 0x88 => self.read(cdb).await,
            // WRITE AND VERIFY needs no separate check: the device's write
            // is durable and checksummed when it returns.
            0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e => self.write(cdb, data_out).await,
            0x2f | 0xaf | 0x8f => self.verify(cdb, data_out).await,
            0x89 => self.compare_and_write(cdb, data_out).await,
            0x35 | 0x91 => self.synchronize_cache(cdb).await,
            0x34 | 0x90 => self.prefetch(cdb),
            0x41 | 0x93 => self.write_same(cdb, data_out).await,
            0x42 => self.unmap(cdb, data_out).await,
            0x1a | 0x5a => self.mode_sense(cdb),
            0x15 | 0x55 => self.mode_select(cdb, data_out),
            0x1b => self.start_stop_unit(cdb),
            0x1e => self.prevent_allow(nexus, cdb),
            0x16 => {
                if self
                    .state
                    .lock()
                    .unwrap()
                    .reservations
                    .reserve_legacy(nexus)
                {
                    Ok(ScsiResult::good(Vec::new()))
                } else {
                    Ok(ScsiResult::conflict())
                }
            }
            0x17 => {
                self.state
                    .lock()
                    .unwrap()
                    .reservations
                    .release_legacy(nexus);
                Ok(ScsiResult::good(Vec::new()))
            }
            0x5e => self.persistent_reserve_in(cdb),
            0x5f => self.persistent_reserve_out(nexus, cdb, data_out),
            0xa3 if cdb[1] & 0x1f == 0x0c => self.report_supported_opcodes(cdb),
            _ => Err(Sense::INVALID_OPCODE.at_cdb(0, None)),
        }
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        let end = lba.checked_add(blocks).ok_or(Sense::LBA_OUT_OF_RANGE)?;
        if end > self.blocks() || lba > self.blocks() {
            return Err(Sense::LBA_OUT_OF_RANGE);
        }
        Ok(())
    }

    fn device_error(e: DeviceError, writing: bool) -> Sense {
        match e {
            DeviceError::OutOfRange => Sense::LBA_OUT_OF_RANGE,
            DeviceError::Medium(_) if writing => Sense::WRITE_ERROR,
            DeviceError::Medium(_) => Sense::UNRECOVERED_READ_ERROR,
            DeviceError::NoSpace => Sense::SPACE_ALLOCATION_FAILED,
            DeviceError::Unavailable(_) => Sense::NOT_READY_TRANSITION,
            DeviceError::Io(_) => Sense::INTERNAL_TARGET_FAILURE,
        }
    }

    fn request_sense(&self, nexus: &str, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let descriptor = cdb[1] & 0x01 != 0;
        let sense = self.take_attention(nexus).unwrap_or(Sense::NO_SENSE);
        let mut data = sense.encode(descriptor);
        data.truncate(cdb[4] as usize);
        Ok(ScsiResult::good(data))
    }

    fn inquiry(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let evpd = cdb[1] & 0x01 != 0;
        let page = cdb[2];
        let alloc = be16(&cdb[3..]) as usize;
        if cdb[1] & 0xfe != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, None));
        }
        let mut data = if !evpd {
            if page != 0 {
                return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None));
            }
            self.standard_inquiry()
        } else {
            self.vpd(page)?
        };
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    fn standard_inquiry(&self) -> Vec<u8> {
        let mut d = vec![0u8; 96];
        d[0] = 0x00; // connected direct-access block device
        d[2] = 0x06; // SPC-4
        d[3] = 0x12; // HISUP, response data format 2
        d[4] = (d.len() - 5) as u8;
        d[5] = 0x00;
        d[6] = 0x00;
        d[7] = 0x02; // CMDQUE
        d[8..16].copy_from_slice(b"HPCHAIN ");
        let mut product = [b' '; 16];
        let name = self.identity.product.as_bytes();
        product[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
        d[16..32].copy_from_slice(&product);
        let revision = env!("CARGO_PKG_VERSION").as_bytes();
        let mut rev = [b' '; 4];
        rev[..revision.len().min(4)].copy_from_slice(&revision[..revision.len().min(4)]);
        d[32..36].copy_from_slice(&rev);
        // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
        for (i, v) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
            d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        d
    }

    fn vpd(&self, page: u8) -> Result<Vec<u8>, Sense> {
        let mut d = vec![0x00, page, 0, 0];
        match page {
            0x00 => d.extend_from_slice(&[0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2]),
            0x80 => d.extend_from_slice(self.identity.serial.as_bytes()),
            0x83 => {
                // NAA, binary, associated with the logical unit.
                d.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
                d.extend_from_slice(&self.identity.naa);
                // T10 vendor id, ASCII.
                let t10 = format!("HPCHAIN {}", self.identity.serial);
                d.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
                d.extend_from_slice(t10.as_bytes());
                // Relative target port 1, iSCSI, associated with the port.
                d.extend_from_slice(&[0x51, 0x94, 0x00, 4, 0, 0, 0, 1]);
                // The target's iSCSI name, UTF-8, associated with the target
                // device; NUL-terminated and padded to a multiple of 4.
                let mut name = self.identity.target_name.as_bytes().to_vec();
                name.push(0);
                while !name.len().is_multiple_of(4) {
                    name.push(0);
                }
                d.extend_from_slice(&[0x53, 0xa8, 0x00, name.len() as u8]);
                d.extend_from_slice(&name);
            }
            0x86 => {
                let mut p = [0u8; 60];
                p[1] = 0x07; // HEADSUP, ORDSUP, SIMPSUP
                d.extend_from_slice(&p);
            }
            0xb0 => {
                let bs = self.block_size();
                let mut p = [0u8; 60];
                p[0] = 0x01; // WSNZ: WRITE SAME of zero blocks is invalid
                p[1] = MAX_COMPARE_AND_WRITE_BLOCKS;
                let granularity = (self.device.discard_granularity() / bs).max(1) as u32;
                p[2..4].copy_from_slice(&1u16.to_be_bytes());
                p[4..8].copy_from_slice(&((MAX_TRANSFER_BYTES / bs) as u32).to_be_bytes());
                p[8..12].copy_from_slice(&((1024 * 1024 / bs) as u32).to_be_bytes());
                p[16..20].copy_from_slice(&(MAX_UNMAP_BLOCKS as u32).to_be_bytes());
                p[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                p[24..28].copy_from_slice(&granularity.to_be_bytes());
                p[32..40].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
                d.extend_from_slice(&p);
            }
            0xb1 => {
                let mut p = [0u8; 60];
                p[1] = 0x01; // non-rotating medium
                d.extend_from_slice(&p);
            }
            0xb2 => {
                // Thin provisioning: UNMAP, WRITE SAME 16/10 with UNMAP,
                // unmapped blocks read as zeroes.
                d.extend_from_slice(&[0x00, 0xe4, 0x02, 0x00]);
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None)),
        }
        let len = (d.len() - 4) as u16;
        d[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(d)
    }

    fn report_luns(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let alloc = be32(&cdb[6..]) as usize;
        if alloc < 16 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(6, None));
        }
        if !matches!(cdb[2], 0x00..=0x02 | 0x10..=0x12) {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None));
        }
        let mut data = vec![0, 0, 0, 8, 0, 0, 0, 0];
        data.extend_from_slice(&[0u8; 8]);
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    fn read_capacity10(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        if cdb[8] & 0x01 == 0 && be32(&cdb[2..]) != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None));
        }
        let last = self.blocks().saturating_sub(1).min(0xffff_ffff) as u32;
        let mut data = last.to_be_bytes().to_vec();
        data.extend_from_slice(&(self.block_size() as u32).to_be_bytes());
        Ok(ScsiResult::good(data))
    }

    fn read_capacity16(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let alloc = be32(&cdb[10..]) as usize;
        let mut data = vec![0u8; 32];
        data[0..8].copy_from_slice(&self.blocks().saturating_sub(1).to_be_bytes());
        data[8..12].copy_from_slice(&(self.block_size() as u32).to_be_bytes());
        // LBPME (thin) and LBPRZ (unmapped blocks read as zeroes).
        data[14] = 0xc0;
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    async fn get_lba_status(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let lba = be64(&cdb[2..]);
        let alloc = be32(&cdb[10..]) as usize;
        if lba >= self.blocks() {
            return Err(Sense::LBA_OUT_OF_RANGE);
        }
        let bs = self.block_size();
        // Report up to 1 GiB from the starting LBA.
        let len = ((self.blocks() - lba) * bs).min(1 << 30);
        let runs = self
            .device
            .mapped_ranges(lba * bs, len)
            .await
            .map_err(|e| Self::device_error(e, false))?;
        let mut data = vec![0u8; 8];
        // Merge runs at block granularity: a block partly mapped is mapped.
        let mut descriptors: Vec<(u64, u64, bool)> = Vec::new();
        for (offset, length, mapped) in runs {
            let first = offset / bs;
            let last = (offset + length).div_ceil(bs);
            let (first, last) = (first.max(lba), last);
            if last <= first {
                continue;
            }
            match descriptors.last_mut() {
                Some((s, n, m)) if *m == mapped && *s + *n >= first => *n = last.max(*s + *n) - *s,
                Some((s, n, _)) if *s + *n > first => {
                    // Overlap of a partly mapped block: mapped wins.
                    if mapped {
                        *n = first - *s;
                        descriptors.push((first, last - first, true));
                    } else if last > *s + *n {
                        let from = *s + *n;
                        descriptors.push((from, last - from, false));
                    }
                }
                _ => descriptors.push((first, last - first, mapped)),
            }
        }
        descriptors.retain(|(_, n, _)| *n > 0);
        for (start, count, mapped) in descriptors.iter().take(4096) {
            data.extend_from_slice(&start.to_be_bytes());
            data.extend_from_slice(&(*count.min(&0xffff_ffff) as u32).to_be_bytes());
            data.push(if *mapped { 0 } else { 1 });
            data.extend_from_slice(&[0, 0, 0]);
        }
        let param_len = (data.len() - 4) as u32;
        data[0..4].copy_from_slice(&param_len.to_be_bytes());
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    fn check_transfer(&self, blocks: u64) -> Result<(), Sense> {
        if blocks * self.block_size() > MAX_TRANSFER_BYTES {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(7, None));
        }
        Ok(())
    }

    async fn read(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, protect) = rw_fields(cdb);
        if protect != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(7)));
        }
        self.check_range(lba, blocks)?;
        self.check_transfer(blocks)?;
        if blocks == 0 {
            return Ok(ScsiResult::good(Vec::new()));
        }
        let bs = self.block_size();
        let data = self
            .device
            .read(lba * bs, (blocks * bs) as usize)
            .await
            .map_err(|e| Self::device_error(e, false))?;
        Ok(ScsiResult::good(data))
    }

    fn check_writable(&self) -> Result<(), Sense> {
        if self.read_only {
            return Err(Sense::WRITE_PROTECTED);
        }
        Ok(())
    }

    /// WRITE and WRITE AND VERIFY. Writes only the whole blocks the
    /// initiator sent when that is less than the CDB asks (a residual).
    async fn write(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, protect) = rw_fields(cdb);
        let bs = self.block_size();
        let wanted = (blocks * bs) as usize;
        if protect != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(7)));
        }
        self.check_writable()?;
        self.check_range(lba, blocks)?;
        self.check_transfer(blocks)?;
        let whole = (data.len().min(wanted) / bs as usize) * bs as usize;
        if whole > 0 {
            self.device
                .write(lba * bs, &data[..whole])
                .await
                .map_err(|e| Self::device_error(e, true))?;
        }
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = wanted;
        if data.len() < wanted && !data.len().is_multiple_of(bs as usize) {
            let mut r = ScsiResult::check(Sense::INVALID_FIELD_IN_INFORMATION_UNIT, false);
            r.wanted_out = wanted;
            return Ok(r);
        }
        Ok(result)
    }

    async fn verify(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, protect) = rw_fields(cdb);
        if protect != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(7)));
        }
        let bytchk = (cdb[1] >> 1) & 0x03;
        if bytchk == 2 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(2)));
        }
        self.check_range(lba, blocks)?;
        self.check_transfer(blocks)?;
        let bs = self.block_size();
        let wanted = match bytchk {
            0 => 0,
            1 => (blocks * bs) as usize,
            _ => bs as usize,
        };
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = wanted;
        if blocks == 0 {
            return Ok(result);
        }
        // Reading the range checks every block's crc in the store.
        let stored = self
            .device
            .read(lba * bs, (blocks * bs) as usize)
            .await
            .map_err(|e| Self::device_error(e, false))?;
        if bytchk == 0 {
            return Ok(result);
        }
        if data.len() < wanted {
            let mut r = ScsiResult::check(Sense::INVALID_FIELD_IN_INFORMATION_UNIT, false);
            r.wanted_out = wanted;
            return Ok(r);
        }
        let mismatch = if bytchk == 1 {
            stored.iter().zip(data).position(|(a, b)| a != b)
        } else {
            stored
                .iter()
                .enumerate()
                .position(|(i, a)| *a != data[i % bs as usize])
        };
        if let Some(at) = mismatch {
            let mut r = ScsiResult::check(
                Sense::MISCOMPARE_DURING_VERIFY.with_information(at as u64),
                false,
            );
            r.wanted_out = wanted;
            return Ok(r);
        }
        Ok(result)
    }

    async fn compare_and_write(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        let lba = be64(&cdb[2..]);
        let blocks = cdb[13] as u64;
        if cdb[1] >> 5 != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(7)));
        }
        self.check_writable()?;
        let bs = self.block_size();
        let wanted = (2 * blocks * bs) as usize;
        if blocks > MAX_COMPARE_AND_WRITE_BLOCKS as u64 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(13, None));
        }
        self.check_range(lba, blocks)?;
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = wanted;
        // Data that disagrees with the block count (a count that wrapped
        // past 255, say) is an invalid CDB, even for zero blocks.
        if data.len() != wanted {
            let mut r = ScsiResult::check(Sense::INVALID_FIELD_IN_CDB.at_cdb(13, None), false);
            r.wanted_out = wanted;
            return Ok(r);
        }
        if blocks == 0 {
            return Ok(result);
        }
        let half = wanted / 2;
        let _guard = self.compare_lock.lock().await;
        let stored = self
            .device
            .read(lba * bs, half)
            .await
            .map_err(|e| Self::device_error(e, false))?;
        if let Some(at) = stored.iter().zip(&data[..half]).position(|(a, b)| a != b) {
            let mut r = ScsiResult::check(
                Sense::MISCOMPARE_DURING_VERIFY.with_information(at as u64),
                false,
            );
            r.wanted_out = wanted;
            return Ok(r);
        }
        self.device
            .write(lba * bs, &data[half..])
            .await
            .map_err(|e| Self::device_error(e, true))?;
        Ok(result)
    }

    async fn synchronize_cache(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, _) = rw_fields(cdb);
        self.check_range(lba, blocks)?;
        self.device
            .flush()
            .await
            .map_err(|e| Self::device_error(e, true))?;
        Ok(ScsiResult::good(Vec::new()))
    }

    fn prefetch(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, _) = rw_fields(cdb);
        self.check_range(lba, blocks)?;
        // Nothing is cached on this side; the request is accepted.
        Ok(ScsiResult::good(Vec::new()))
    }

    async fn write_same(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        let (lba, blocks, protect) = rw_fields(cdb);
        let unmap = cdb[1] & 0x08 != 0;
        let anchor = cdb[1] & 0x10 != 0;
        let ndob = cdb[0] == 0x93 && cdb[1] & 0x01 != 0;
        if protect != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(7)));
        }
        if anchor {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(4)));
        }
        let bs = self.block_size();
        let wanted = if ndob { 0 } else { bs as usize };
        self.check_writable()?;
        if blocks == 0 {
            // WSNZ is set: zero blocks is not "to the end of the medium".
            return Err(
                Sense::INVALID_FIELD_IN_CDB.at_cdb(if cdb[0] == 0x41 { 7 } else { 10 }, None)
            );
        }
        if blocks > MAX_UNMAP_BLOCKS {
            return Err(
                Sense::INVALID_FIELD_IN_CDB.at_cdb(if cdb[0] == 0x41 { 7 } else { 10 }, None)
            );
        }
        self.check_range(lba, blocks)?;
        if data.len() < wanted {
            let mut r = ScsiResult::check(Sense::INVALID_FIELD_IN_INFORMATION_UNIT, false);
            r.wanted_out = wanted;
            return Ok(r);
        }
        let pattern: Vec<u8> = if ndob {
            vec![0; bs as usize]
        } else {
            data[..bs as usize].to_vec()
        };
        let zero = pattern.iter().all(|b| *b == 0);
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = wanted;
        if unmap && zero {
            self.device
                .discard(lba * bs, blocks * bs)
                .await
                .map_err(|e| Self::device_error(e, true))?;
            return Ok(result);
        }
        // Write the pattern in chunks of up to 1 MiB.
        let per_chunk = ((1024 * 1024) / bs).max(1);
        let mut done = 0;
        while done < blocks {
            let n = per_chunk.min(blocks - done);
            let chunk: Vec<u8> = pattern
                .iter()
                .copied()
                .cycle()
                .take((n * bs) as usize)
                .collect();
            self.device
                .write((lba + done) * bs, &chunk)
                .await
                .map_err(|e| Self::device_error(e, true))?;
            done += n;
        }
        Ok(result)
    }

    async fn unmap(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        if cdb[1] & 0x01 != 0 {
            // ANCHOR is not supported.
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(0)));
        }
        self.check_writable()?;
        let param_len = be16(&cdb[7..]) as usize;
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = param_len;
        if param_len == 0 {
            return Ok(result);
        }
        if param_len < 8 || data.len() < 8 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        let data = &data[..param_len.min(data.len())];
        let desc_len = be16(&data[2..]) as usize;
        let descriptors = &data[8..(8 + desc_len).min(data.len())];
        if !desc_len.is_multiple_of(16) || desc_len / 16 > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::INVALID_FIELD_IN_PARAMETER_LIST.at_parameter(2));
        }
        let mut ranges = Vec::new();
        for (i, d) in descriptors.chunks_exact(16).enumerate() {
            let lba = be64(d);
            let blocks = be32(&d[8..]);
            if blocks > MAX_UNMAP_BLOCKS {
                return Err(
                    Sense::INVALID_FIELD_IN_PARAMETER_LIST.at_parameter((8 + 16 * i + 8) as u16)
                );
            }
            self.check_range(lba, blocks)?;
            if blocks > 0 {
                ranges.push((lba, blocks));
            }
        }
        let bs = self.block_size();
        for (lba, blocks) in ranges {
            self.device
                .discard(lba * bs, blocks * bs)
                .await
                .map_err(|e| Self::device_error(e, true))?;
        }
        Ok(result)
    }

    fn mode_pages(&self, page: u8, subpage: u8, control: u8) -> Result<Vec<u8>, Sense> {
        let wce = self.state.lock().unwrap().write_cache;
        let changeable = control == 1;
        let caching = || {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 18;
            if !changeable && wce {
                p[2] = 0x04; // WCE
            }
            p
        };
        let control_page = || {
            let mut p = vec![0u8; 12];
            p[0] = 0x0a;
            p[1] = 10;
            if !changeable {
                p[2] = 0x00; // TST 0, D_SENSE 0
                p[3] = 0x10; // unrestricted reordering allowed
                p[8] = 0xff; // busy timeout: unlimited
                p[9] = 0xff;
            }
            p
        };
        let informational = || {
            let mut p = vec![0u8; 12];
            p[0] = 0x1c;
            p[1] = 10;
            p
        };
        if subpage != 0 && subpage != 0xff {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(3, None));
        }
        Ok(match page {
            0x08 => caching(),
            0x0a => control_page(),
            0x1c => informational(),
            0x3f => [caching(), control_page(), informational()].concat(),
            _ => return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, Some(5))),
        })
    }

    fn mode_sense(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let six = cdb[0] == 0x1a;
        let dbd = cdb[1] & 0x08 != 0;
        let control = cdb[2] >> 6;
        let page = cdb[2] & 0x3f;
        let subpage = cdb[3];
        let alloc = if six {
            cdb[4] as usize
        } else {
            be16(&cdb[7..]) as usize
        };
        if control == 3 {
            return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED);
        }
        let pages = self.mode_pages(page, subpage, control)?;
        let mut block_descriptor = Vec::new();
        if !dbd {
            let blocks = self.blocks().min(0xffff_ffff) as u32;
            block_descriptor.extend_from_slice(&blocks.to_be_bytes());
            block_descriptor.push(0);
            block_descriptor.extend_from_slice(&(self.block_size() as u32).to_be_bytes()[1..]);
        }
        // Device-specific parameter: WP, and DPOFUA (DPO and FUA accepted).
        let device_specific = if self.read_only { 0x90 } else { 0x10 };
        let mut data = if six {
            vec![0, 0, device_specific, block_descriptor.len() as u8]
        } else {
            vec![
                0,
                0,
                0,
                device_specific,
                0,
                0,
                0,
                block_descriptor.len() as u8,
            ]
        };
        data.extend_from_slice(&block_descriptor);
        data.extend_from_slice(&pages);
        if six {
            data[0] = (data.len() - 1) as u8;
        } else {
            let len = (data.len() - 2) as u16;
            data[0..2].copy_from_slice(&len.to_be_bytes());
        }
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    fn mode_select(&self, cdb: &[u8], data: &[u8]) -> Result<ScsiResult, Sense> {
        let six = cdb[0] == 0x15;
        let len = if six {
            cdb[4] as usize
        } else {
            be16(&cdb[7..]) as usize
        };
        let mut result = ScsiResult::good(Vec::new());
        result.wanted_out = len;
        if cdb[1] & 0x01 != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(0)));
        }
        if len == 0 {
            return Ok(result);
        }
        let data = &data[..len.min(data.len())];
        let header = if six { 4 } else { 8 };
        if data.len() < header {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        let bd_len = if six {
            data[3] as usize
        } else {
            be16(&data[6..]) as usize
        };
        let mut rest = data
            .get(header + bd_len..)
            .ok_or(Sense::PARAMETER_LIST_LENGTH_ERROR)?;
        // Pages may only restate current values: nothing is changeable.
        while rest.len() >= 2 {
            let page = rest[0] & 0x3f;
            let plen = rest[1] as usize + 2;
            let current = self.mode_pages(page, 0, 0).map_err(|_| {
                Sense::INVALID_FIELD_IN_PARAMETER_LIST
                    .at_parameter((data.len() - rest.len()) as u16)
            })?;
            let given = rest.get(..plen).ok_or(Sense::PARAMETER_LIST_LENGTH_ERROR)?;
            if given[2..] != current[2..plen.min(current.len())] {
                return Err(Sense::INVALID_FIELD_IN_PARAMETER_LIST
                    .at_parameter((data.len() - rest.len()) as u16));
            }
            rest = &rest[plen..];
        }
        Ok(result)
    }

    fn start_stop_unit(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let loej = cdb[4] & 0x02 != 0;
        let start = cdb[4] & 0x01 != 0;
        if loej && !start && !self.state.lock().unwrap().prevent_removal.is_empty() {
            return Err(Sense::MEDIUM_REMOVAL_PREVENTED);
        }
        // The medium is not removable and always spinning: accepted.
        Ok(ScsiResult::good(Vec::new()))
    }

    fn prevent_allow(&self, nexus: &str, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let mut state = self.state.lock().unwrap();
        match cdb[4] & 0x03 {
            0 => {
                state.prevent_removal.remove(nexus);
            }
            1 => {
                state.prevent_removal.insert(nexus.to_string());
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(4, Some(1))),
        }
        Ok(ScsiResult::good(Vec::new()))
    }

    fn persistent_reserve_in(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let alloc = be16(&cdb[7..]) as usize;
        let mut data = self
            .state
            .lock()
            .unwrap()
            .reservations
            .read(cdb[1] & 0x1f)?;
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }

    fn persistent_reserve_out(
        &self,
        nexus: &str,
        cdb: &[u8],
        data: &[u8],
    ) -> Result<ScsiResult, Sense> {
        let len = be32(&cdb[5..]) as usize;
        let params = &data[..len.min(data.len())];
        let mut state = self.state.lock().unwrap();
        let mut result = match state.reservations.out(nexus, cdb[1] & 0x1f, cdb[2], params) {
            Ok(PrOutcome::Done) => ScsiResult::good(Vec::new()),
            Ok(PrOutcome::Notify(nexuses, sense)) => {
                for n in nexuses {
                    Self::raise_locked(&mut state, sense, Some(&n), None);
                }
                ScsiResult::good(Vec::new())
            }
            Err(PrError::Conflict) => ScsiResult::conflict(),
            Err(PrError::Check(sense)) => ScsiResult::check(sense, false),
        };
        result.wanted_out = len;
        Ok(result)
    }

    fn report_supported_opcodes(&self, cdb: &[u8]) -> Result<ScsiResult, Sense> {
        let rctd = cdb[2] & 0x80 != 0;
        let options = cdb[2] & 0x07;
        let opcode = cdb[3];
        let sa = be16(&cdb[4..]) as u16;
        let alloc = be32(&cdb[6..]) as usize;
        let commands = supported_commands();
        let timeout = |out: &mut Vec<u8>| {
            out.extend_from_slice(&[0, 0x0a, 0, 0]);
            out.extend_from_slice(&30u32.to_be_bytes());
            out.extend_from_slice(&60u32.to_be_bytes());
        };
        let mut data = Vec::new();
        match options {
            0 => {
                data.extend_from_slice(&[0, 0, 0, 0]);
                for (op, service_action, usage) in &commands {
                    data.push(*op);
                    data.push(0);
                    data.extend_from_slice(&service_action.unwrap_or(0).to_be_bytes());
                    data.push(0);
                    let mut flags = if service_action.is_some() { 0x01 } else { 0 };
                    if rctd {
                        flags |= 0x02;
                    }
                    data.push(flags);
                    data.extend_from_slice(&(usage.len() as u16).to_be_bytes());
                    if rctd {
                        timeout(&mut data);
                    }
                }
                let len = (data.len() - 4) as u32;
                data[0..4].copy_from_slice(&len.to_be_bytes());
            }
            1..=3 => {
                let has_sa = commands
                    .iter()
                    .any(|(op, s, _)| *op == opcode && s.is_some());
                if options == 1 && has_sa {
                    return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None));
                }
                if options == 2 && !has_sa && commands.iter().any(|(op, _, _)| *op == opcode) {
                    return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None));
                }
                let found = commands
                    .iter()
                    .find(|(op, s, _)| *op == opcode && (!has_sa || *s == Some(sa)));
                match found {
                    Some((_, _, usage)) => {
                        data.push(0);
                        data.push(0x03 | if rctd { 0x80 } else { 0 });
                        data.extend_from_slice(&(usage.len() as u16).to_be_bytes());
                        data.extend_from_slice(usage);
                        if rctd {
                            timeout(&mut data);
                        }
                    }
                    None => data.extend_from_slice(&[0, 0x01, 0, 0]),
                }
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None)),
        }
        data.truncate(alloc);
        Ok(ScsiResult::good(data))
    }
}
