//! iSCSI PDUs (RFC 7143 section 11): the 48-byte Basic Header Segment,
//! additional header segments, the data segment, and the optional CRC32C
//! header and data digests.
//!
//! A [`Pdu`] keeps its BHS as bytes and offers typed accessors, so that a
//! PDU the target does not understand can still be echoed in a Reject.

use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const BHS_LEN: usize = 48;
/// Tag value meaning "no tag" (RFC 7143 11.2.1.5).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Initiator opcodes.
pub mod op {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK_REQUEST: u8 = 0x10;
    // Target opcodes.
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Reject reasons (RFC 7143 11.17.1).
pub mod reject {
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
}

/// Why a PDU could not be read. Every variant ends the connection except
/// `DataDigest`, after which the stream is still in step (RFC 7143 7.8).
#[derive(Debug)]
pub enum PduError {
    Io(std::io::Error),
    /// The peer closed the connection between PDUs.
    Closed,
    HeaderDigest {
        expected: u32,
        received: u32,
    },
    /// The data segment's digest is wrong; the PDU was read whole and the
    /// stream is still aligned.
    DataDigest {
        pdu: Box<Pdu>,
    },
    /// The data segment is longer than this side declared it accepts.
    TooLong {
        length: usize,
        limit: usize,
    },
    /// An opcode that cannot come now (not a login during login).
    Unexpected {
        opcode: u8,
    },
}

impl fmt::Display for PduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PduError::Io(e) => write!(f, "reading a PDU failed: {e}"),
            PduError::Closed => write!(f, "the initiator closed the connection"),
            PduError::HeaderDigest { expected, received } => write!(
                f,
                "header digest mismatch (computed {expected:#010x}, received {received:#010x})"
            ),
            PduError::DataDigest { .. } => write!(f, "data digest mismatch"),
            PduError::Unexpected { opcode } => {
                write!(f, "opcode {opcode:#04x} is not expected here")
            }
            PduError::TooLong { length, limit } => write!(
                f,
                "data segment of {length} bytes exceeds MaxRecvDataSegmentLength {limit}"
            ),
        }
    }
}

impl std::error::Error for PduError {}

/// One PDU: header, additional header segments and data.
#[derive(Clone, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: [u8; BHS_LEN],
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

impl fmt::Debug for Pdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pdu")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("itt", &format_args!("{:#010x}", self.itt()))
            .field("ahs", &self.ahs.len())
            .field("data", &self.data.len())
            .finish()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Digests are CRC32C, sent least significant byte first (as libiscsi and
/// Linux do).
pub fn digest(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

impl Pdu {
    pub fn new(opcode: u8) -> Pdu {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = opcode & 0x3f;
        Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }

    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
    pub fn immediate(&self) -> bool {
        self.bhs[0] & 0x40 != 0
    }
    pub fn flags(&self) -> u8 {
        self.bhs[1]
    }
    pub fn set_flags(&mut self, flags: u8) {
        self.bhs[1] = flags;
    }
    /// The F (final) bit of most PDUs.
    pub fn final_bit(&self) -> bool {
        self.bhs[1] & 0x80 != 0
    }
    pub fn total_ahs_len(&self) -> usize {
        self.bhs[4] as usize * 4
    }
    pub fn data_segment_len(&self) -> usize {
        u32::from_be_bytes([0, self.bhs[5], self.bhs[6], self.bhs[7]]) as usize
    }
    pub fn lun(&self) -> u64 {
        u64::from_be_bytes(self.bhs[8..16].try_into().unwrap())
    }
    pub fn set_lun(&mut self, lun: u64) {
        self.bhs[8..16].copy_from_slice(&lun.to_be_bytes());
    }
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn set_itt(&mut self, itt: u32) {
        self.set_u32_at(16, itt);
    }
    pub fn u32_at(&self, offset: usize) -> u32 {
        be32(&self.bhs[offset..offset + 4])
    }
    pub fn set_u32_at(&mut self, offset: usize, value: u32) {
        self.bhs[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    }
    pub fn u16_at(&self, offset: usize) -> u16 {
        u16::from_be_bytes([self.bhs[offset], self.bhs[offset + 1]])
    }
    pub fn set_u16_at(&mut self, offset: usize, value: u16) {
        self.bhs[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
    }
    /// CmdSN of a request (bytes 24..28).
    pub fn cmd_sn(&self) -> u32 {
        self.u32_at(24)
    }
    /// ExpStatSN of a request (bytes 28..32).
    pub fn exp_stat_sn(&self) -> u32 {
        self.u32_at(28)
    }
    /// Sets StatSN, ExpCmdSN and MaxCmdSN of a response (bytes 24..36).
    pub fn set_sequence(&mut self, stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
        self.set_u32_at(24, stat_sn);
        self.set_u32_at(28, exp_cmd_sn);
        self.set_u32_at(32, max_cmd_sn);
    }

    /// Sets the data segment and its length field.
    pub fn set_data(&mut self, data: Vec<u8>) {
        let len = data.len() as u32;
        self.bhs[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
        self.data = data;
    }

    /// The CDB of a SCSI command: the 16 bytes of the BHS plus the tail
    /// from an Extended CDB AHS (type 1) if one is present.
    pub fn cdb(&self) -> Vec<u8> {
        let mut cdb = self.bhs[32..48].to_vec();
        let mut rest = &self.ahs[..];
        while rest.len() >= 4 {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let kind = rest[2];
            let body_end = (3 + len).min(rest.len());
            if kind == 1 && len > 1 {
                // The AHS length counts the reserved byte after the type.
                cdb.extend_from_slice(&rest[4..body_end.max(4)]);
            }
            let step = (3 + len + pad4(3 + len)).max(4);
            if step >= rest.len() {
                break;
            }
            rest = &rest[step..];
        }
        cdb
    }

    /// Reads one PDU. `max_data` is the MaxRecvDataSegmentLength this side
    /// declared; a longer data segment is a protocol error.
    pub async fn read<R: AsyncRead + Unpin>(
        reader: &mut R,
        header_digest: bool,
        data_digest: bool,
        max_data: usize,
    ) -> Result<Pdu, PduError> {
        Self::read_checked(reader, header_digest, data_digest, max_data, |_| true).await
    }

    /// Like [`Pdu::read`], but gives up right after the BHS unless
    /// `expected(opcode)` holds, so that garbage does not make the reader
    /// wait for segments that will never come.
    pub async fn read_checked<R: AsyncRead + Unpin>(
        reader: &mut R,
        header_digest: bool,
        data_digest: bool,
        max_data: usize,
        expected: impl Fn(u8) -> bool,
    ) -> Result<Pdu, PduError> {
        let mut bhs = [0u8; BHS_LEN];
        match reader.read_exact(&mut bhs).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(PduError::Closed)
            }
            Err(e) => return Err(PduError::Io(e)),
        }
        let mut pdu = Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        };
        if !expected(pdu.opcode()) {
            return Err(PduError::Unexpected {
                opcode: pdu.opcode(),
            });
        }
        let data_len = pdu.data_segment_len();
        if data_len > max_data {
            return Err(PduError::TooLong {
                length: data_len,
                limit: max_data,
            });
        }
        let ahs_len = pdu.total_ahs_len();
        if ahs_len > 0 {
            pdu.ahs = vec![0; ahs_len];
            reader
                .read_exact(&mut pdu.ahs)
                .await
                .map_err(PduError::Io)?;
        }
        if header_digest {
            let mut crc = [0u8; 4];
            reader.read_exact(&mut crc).await.map_err(PduError::Io)?;
            let received = u32::from_le_bytes(crc);
            let expected = digest(&[&pdu.bhs, &pdu.ahs]);
            if expected != received {
                return Err(PduError::HeaderDigest { expected, received });
            }
        }
        if data_len > 0 {
            let padded = data_len + pad4(data_len);
            let mut data = vec![0u8; padded];
            reader.read_exact(&mut data).await.map_err(PduError::Io)?;
            let mut bad_digest = false;
            if data_digest {
                let mut crc = [0u8; 4];
                reader.read_exact(&mut crc).await.map_err(PduError::Io)?;
                bad_digest = digest(&[&data]) != u32::from_le_bytes(crc);
            }
            data.truncate(data_len);
            pdu.data = data;
            if bad_digest {
                return Err(PduError::DataDigest { pdu: Box::new(pdu) });
            }
        }
        Ok(pdu)
    }

    /// The PDU as bytes on the wire.
    pub fn encode(&self, header_digest: bool, data_digest: bool) -> Vec<u8> {
        let pad = pad4(self.data.len());
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + 8 + self.data.len() + pad);
        out.extend_from_slice(&self.bhs);
        out.extend_from_slice(&self.ahs);
        if header_digest {
            out.extend_from_slice(&digest(&[&self.bhs, &self.ahs]).to_le_bytes());
        }
        if !self.data.is_empty() {
            out.extend_from_slice(&self.data);
            out.extend(std::iter::repeat_n(0u8, pad));
            if data_digest {
                let crc = digest(&[&self.data, &[0u8; 3][..pad]]);
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        out
    }

    pub async fn write<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        header_digest: bool,
        data_digest: bool,
    ) -> std::io::Result<()> {
        writer
            .write_all(&self.encode(header_digest, data_digest))
            .await
    }
}

/// Parses PDUs out of a byte buffer without I/O: the fuzz target's entry
/// point. Returns how many PDUs parsed before the buffer ran out or an
/// error ended the stream.
pub fn parse_stream(bytes: &[u8], header_digest: bool, data_digest: bool) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(async {
        let mut reader = bytes;
        let mut count = 0;
        while let Ok(pdu) = Pdu::read(&mut reader, header_digest, data_digest, 1 << 24).await {
            let _ = pdu.cdb();
            count += 1;
        }
        count
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_with_digests_and_padding() {
        let mut pdu = Pdu::new(op::SCSI_RESPONSE);
        pdu.set_flags(0x80);
        pdu.set_itt(0x1234);
        pdu.set_data(vec![1, 2, 3, 4, 5]);
        for (hd, dd) in [(false, false), (true, false), (false, true), (true, true)] {
            let wire = pdu.encode(hd, dd);
            assert_eq!(
                wire.len(),
                48 + 8 + if hd { 4 } else { 0 } + if dd { 4 } else { 0 }
            );
            let back = Pdu::read(&mut &wire[..], hd, dd, 8192).await.unwrap();
            assert_eq!(back, pdu);
        }
    }

    #[tokio::test]
    async fn corrupt_digests_and_long_segments_are_errors() {
        let mut pdu = Pdu::new(op::NOP_IN);
        pdu.set_data(vec![9; 100]);
        let mut wire = pdu.encode(true, true);
        wire[3] ^= 1;
        assert!(matches!(
            Pdu::read(&mut &wire[..], true, true, 8192).await,
            Err(PduError::HeaderDigest { .. })
        ));
        let mut wire = pdu.encode(true, true);
        wire[60] ^= 1;
        assert!(matches!(
            Pdu::read(&mut &wire[..], true, true, 8192).await,
            Err(PduError::DataDigest { .. })
        ));
        let wire = pdu.encode(false, false);
        assert!(matches!(
            Pdu::read(&mut &wire[..], false, false, 64).await,
            Err(PduError::TooLong {
                length: 100,
                limit: 64
            })
        ));
        assert!(matches!(
            Pdu::read(&mut &wire[..20], false, false, 8192).await,
            Err(PduError::Closed)
        ));
    }

    #[test]
    fn extended_cdb_comes_from_the_ahs() {
        let mut pdu = Pdu::new(op::SCSI_COMMAND);
        pdu.bhs[32] = 0x7f;
        // AHS: length 17 (reserved byte + 16 CDB bytes), type 1.
        let mut ahs = vec![0, 17, 1, 0];
        ahs.extend(1..=16u8);
        ahs.extend([0u8; 3]);
        pdu.bhs[4] = (ahs.len() / 4) as u8;
        pdu.ahs = ahs;
        let cdb = pdu.cdb();
        assert_eq!(cdb.len(), 32);
        assert_eq!(cdb[0], 0x7f);
        assert_eq!(&cdb[16..], &(1..=16u8).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        for _ in 0..2000 {
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            parse_stream(&bytes, seed.is_multiple_of(2), seed.is_multiple_of(3));
        }
    }
}
