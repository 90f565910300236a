//! A small iSCSI initiator: one connection, one command at a time, CHAP
//! optional. Tests use it to move data through a target and compare it
//! byte for byte (libiscsi's tools read and write nothing a test can
//! check), and it is the client of `hpchain`'s own iSCSI checks.

use crate::pdu::{op, Pdu};
use crate::text;
use md5::{Digest, Md5};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The answer to one command.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u8,
    /// Sense key, ASC, ASCQ when the status is CHECK CONDITION.
    pub sense: Option<(u8, u8, u8)>,
    pub data: Vec<u8>,
}

pub struct Initiator {
    stream: TcpStream,
    cmd_sn: u32,
    itt: u32,
    max_send: usize,
    first_burst: usize,
    immediate_data: bool,
    initial_r2t: bool,
    timeout: Duration,
}

fn fail(what: impl Into<String>) -> String {
    what.into()
}

impl Initiator {
    /// Logs in to `target` at `addr` (normal session) as `name`, with CHAP
    /// if `chap` = (user, secret) is given.
    pub async fn login(
        addr: &str,
        target: &str,
        name: &str,
        chap: Option<(&str, &str)>,
    ) -> Result<Initiator, String> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| fail(format!("connecting to {addr} timed out")))?
            .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut me = Initiator {
            stream,
            cmd_sn: 1,
            itt: 1,
            max_send: 8192,
            first_burst: 65536,
            immediate_data: true,
            initial_r2t: true,
            timeout: Duration::from_secs(60),
        };
        let isid = [0x80, 0, 0x3c, 0, 0, (std::process::id() & 0xff) as u8];
        let mut stage = if chap.is_some() { 0u8 } else { 1 };
        let mut keys: Vec<(String, String)> = vec![
            ("InitiatorName".into(), name.into()),
            ("SessionType".into(), "Normal".into()),
            ("TargetName".into(), target.into()),
        ];
        if chap.is_some() {
            keys.push(("AuthMethod".into(), "CHAP".into()));
        }
        let operational: Vec<(String, String)> = [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "Yes"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "65536"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if chap.is_none() {
            keys.extend(operational.clone());
        }
        let mut tsih = 0u16;
        loop {
            let transit_to = if stage == 0 { 1 } else { 3 };
            let mut login = Pdu::new(op::LOGIN_REQUEST);
            login.bhs[0] |= 0x40;
            // With CHAP, ask to transit only once the response is sent.
            let ready = stage == 1 || keys.iter().any(|(k, _)| k == "CHAP_R");
            login.set_flags(if ready { 0x80 | transit_to } else { 0 } | (stage << 2));
            login.bhs[8..14].copy_from_slice(&isid);
            login.set_u16_at(14, tsih);
            login.set_itt(me.itt);
            login.set_u32_at(24, me.cmd_sn);
            login.set_data(text::encode(&keys));
            me.stream
                .write_all(&login.encode(false, false))
                .await
                .map_err(|e| fail(format!("sending login: {e}")))?;
            let reply = me.next().await?;
            if reply.opcode() != op::LOGIN_RESPONSE {
                return Err(fail(format!(
                    "expected a login response, got opcode {:#04x}",
                    reply.opcode()
                )));
            }
            if reply.bhs[36] != 0 {
                return Err(fail(format!(
                    "login refused: status class {} detail {}",
                    reply.bhs[36], reply.bhs[37]
                )));
            }
            tsih = reply.u16_at(14);
            let answers = text::parse(&reply.data).map_err(|e| fail(e.to_string()))?;
            for (key, value) in &answers {
                match key.as_str() {
                    "MaxRecvDataSegmentLength" => me.max_send = value.parse().unwrap_or(8192),
                    "FirstBurstLength" => me.first_burst = value.parse().unwrap_or(65536),
                    "ImmediateData" => me.immediate_data = value == "Yes",
                    "InitialR2T" => me.initial_r2t = value == "Yes",
                    _ => {}
                }
            }
            keys = Vec::new();
            let get = |k: &str| {
                answers
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            if let (Some((user, secret)), Some(id), Some(challenge)) =
                (chap, get("CHAP_I"), get("CHAP_C"))
            {
                let id: u8 = id.parse().map_err(|_| fail("CHAP_I is not a byte"))?;
                let challenge = hex::decode(challenge.trim_start_matches("0x"))
                    .map_err(|_| fail("CHAP_C is not hex"))?;
                let mut md5 = Md5::new();
                md5.update([id]);
                md5.update(secret.as_bytes());
                md5.update(&challenge);
                keys.push(("CHAP_N".into(), user.into()));
                keys.push((
                    "CHAP_R".into(),
                    format!("0x{}", hex::encode(md5.finalize())),
                ));
                continue;
            }
            if stage == 0 && get("AuthMethod").is_some() {
                keys.push(("CHAP_A".into(), "5".into()));
                continue;
            }
            let transit = reply.flags() & 0x80 != 0;
            if transit && reply.flags() & 0x03 == 3 {
                return Ok(me);
            }
            if transit {
                stage = reply.flags() & 0x03;
                keys = operational.clone();
            }
        }
    }

    async fn next(&mut self) -> Result<Pdu, String> {
        tokio::time::timeout(
            self.timeout,
            Pdu::read(&mut self.stream, false, false, 1 << 24),
        )
        .await
        .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
        .map_err(|e| fail(e.to_string()))
    }

    /// Runs one command: `data_out` for writes, `read_len` bytes expected
    /// back for reads.
    pub async fn command(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<Response, String> {
        let mut pdu = Pdu::new(op::SCSI_COMMAND);
        let mut flags = 0x81u8; // final, simple task
        if read_len > 0 {
            flags |= 0x40;
        }
        if !data_out.is_empty() {
            flags |= 0x20;
        }
        pdu.set_flags(flags);
        self.itt = self.itt.wrapping_add(1);
        let itt = self.itt;
        pdu.set_itt(itt);
        pdu.set_u32_at(
            20,
            if data_out.is_empty() {
                read_len
            } else {
                data_out.len() as u32
            },
        );
        pdu.set_u32_at(24, self.cmd_sn);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        pdu.bhs[32..32 + cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let immediate = if self.immediate_data {
            data_out.len().min(self.first_burst).min(self.max_send)
        } else {
            0
        };
        pdu.set_data(data_out[..immediate].to_vec());
        self.stream
            .write_all(&pdu.encode(false, false))
            .await
            .map_err(|e| fail(format!("sending a command: {e}")))?;
        let mut data = Vec::new();
        loop {
            let reply = self.next().await?;
            match reply.opcode() {
                op::R2T => {
                    let offset = reply.u32_at(40) as usize;
                    let length = reply.u32_at(44) as usize;
                    let ttt = reply.u32_at(20);
                    let mut sent = 0;
                    let mut data_sn = 0;
                    while sent < length {
                        let n = (length - sent).min(self.max_send);
                        let mut out = Pdu::new(op::DATA_OUT);
                        out.set_flags(if sent + n == length { 0x80 } else { 0 });
                        out.set_itt(itt);
                        out.set_u32_at(20, ttt);
                        out.set_u32_at(36, data_sn);
                        out.set_u32_at(40, (offset + sent) as u32);
                        out.set_data(data_out[offset + sent..offset + sent + n].to_vec());
                        self.stream
                            .write_all(&out.encode(false, false))
                            .await
                            .map_err(|e| fail(format!("sending data: {e}")))?;
                        sent += n;
                        data_sn += 1;
                    }
                }
                op::DATA_IN => {
                    let offset = reply.u32_at(40) as usize;
                    if data.len() < offset + reply.data.len() {
                        data.resize(offset + reply.data.len(), 0);
                    }
                    data[offset..offset + reply.data.len()].copy_from_slice(&reply.data);
                    if reply.flags() & 0x01 != 0 {
                        return Ok(Response {
                            status: reply.bhs[3],
                            sense: None,
                            data,
                        });
                    }
                }
                op::SCSI_RESPONSE => {
                    let sense = (reply.data.len() >= 16).then(|| {
                        let s = &reply.data[2..];
                        (s[2] & 0x0f, s[12], s[13])
                    });
                    return Ok(Response {
                        status: reply.bhs[3],
                        sense,
                        data,
                    });
                }
                op::NOP_IN => {}
                other => return Err(fail(format!("unexpected opcode {other:#04x}"))),
            }
        }
    }

    /// Runs a command again after a unit attention (a reset, a capacity
    /// change), as initiators do: the attention is news, not a failure.
    pub async fn command_retrying(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<Response, String> {
        let mut attempts = 0;
        loop {
            let response = self.command(cdb, data_out, read_len).await?;
            attempts += 1;
            if response.sense.is_some_and(|(key, _, _)| key == 0x6) && attempts < 8 {
                continue;
            }
            return Ok(response);
        }
    }

    /// READ(16) of `blocks` blocks of `block_size` bytes at `lba`.
    pub async fn read(
        &mut self,
        lba: u64,
        blocks: u32,
        block_size: u32,
    ) -> Result<Vec<u8>, String> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        let response = self
            .command_retrying(&cdb, &[], blocks * block_size)
            .await?;
        if response.status != 0 {
            return Err(fail(format!(
                "READ(16) at {lba}: status {:#04x}, sense {:?}",
                response.status, response.sense
            )));
        }
        Ok(response.data)
    }

    /// WRITE(16) of `data` (whole blocks) at `lba`.
    pub async fn write(&mut self, lba: u64, data: &[u8], block_size: u32) -> Result<(), String> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8a;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&((data.len() as u32) / block_size).to_be_bytes());
        let response = self.command_retrying(&cdb, data, 0).await?;
        if response.status != 0 {
            return Err(fail(format!(
                "WRITE(16) at {lba}: status {:#04x}, sense {:?}",
                response.status, response.sense
            )));
        }
        Ok(())
    }

    /// Logs out (closing the session).
    pub async fn logout(mut self) -> Result<(), String> {
        let mut pdu = Pdu::new(op::LOGOUT_REQUEST);
        pdu.bhs[0] |= 0x40;
        pdu.set_flags(0x80);
        self.itt = self.itt.wrapping_add(1);
        pdu.set_itt(self.itt);
        pdu.set_u32_at(24, self.cmd_sn);
        self.stream
            .write_all(&pdu.encode(false, false))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let reply = self.next().await?;
        if reply.opcode() != op::LOGOUT_RESPONSE || reply.bhs[2] != 0 {
            return Err(fail("logout refused"));
        }
        Ok(())
    }
}
