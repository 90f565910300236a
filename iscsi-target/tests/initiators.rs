//! The target against real initiators (libiscsi's tools, package
//! libiscsi-bin) and against a hand-written one that sends what real
//! initiators never do: malformed PDUs, bad digests, unknown opcodes.
//!
//! Each test starts its own portal on a free loopback port over a sparse
//! file, and every process it starts is bounded by a timeout.

use hpchain_iscsi::pdu::{op, Pdu};
use hpchain_iscsi::{Chap, ExportConfig, FileDevice, Portal};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IQN: &str = "iqn.2026-11.io.hpchain:test";
const SIZE: u64 = 64 << 20;

struct Target {
    portal: Arc<Portal>,
    device: Arc<FileDevice>,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start(config: ExportConfig, size: u64) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let device = Arc::new(FileDevice::create(&dir.path().join("lun.img"), size, 512).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let portal = Portal::new(vec![addr.clone()]);
    portal.add_export("test", config, device.clone()).unwrap();
    tokio::spawn(portal.clone().serve(listener));
    Target {
        portal,
        device,
        addr,
        _dir: dir,
    }
}

fn plain() -> ExportConfig {
    ExportConfig {
        iqn: IQN.into(),
        ..Default::default()
    }
}

/// Runs a libiscsi tool with a time limit.
async fn tool(args: Vec<String>, limit: Duration) -> Output {
    let name = args[0].clone();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&args[0]);
        child.args(&args[1..]);
        let child = child
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; install libiscsi-bin (scripts/setup.sh does)",
                    args[0]
                )
            });
        let pid = child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(limit);
            // SAFETY: sending a signal to the child we started.
            unsafe { libc_kill(pid as i32) };
        });
        let out = child.wait_with_output().unwrap();
        drop(killer);
        out
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

unsafe fn libc_kill(pid: i32) {
    kill(pid, 9);
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn url(target: &Target, credentials: &str) -> String {
    format!("iscsi://{credentials}{}/{IQN}/0", target.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_inquiry_and_capacity_with_libiscsi() {
    let target = start(plain(), SIZE).await;
    let out = tool(
        vec![
            "iscsi-ls".into(),
            "-s".into(),
            format!("iscsi://{}/", target.addr),
        ],
        Duration::from_secs(20),
    )
    .await;
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains(&format!("Target:{IQN} Portal:{},1", target.addr)),
        "{listing}"
    );
    assert!(
        listing.contains("Size:64M") || listing.contains("Size:63M"),
        "{listing}"
    );

    let out = tool(
        vec!["iscsi-inq".into(), url(&target, "")],
        Duration::from_secs(20),
    )
    .await;
    let inquiry = text(&out);
    assert!(out.status.success(), "{inquiry}");
    assert!(inquiry.contains("Vendor:HPCHAIN"), "{inquiry}");
    assert!(
        inquiry.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{inquiry}"
    );

    // VPD 0x83: the NAA identifier initiators key multipath on.
    let out = tool(
        vec![
            "iscsi-inq".into(),
            "-e".into(),
            "1".into(),
            "-c".into(),
            "131".into(),
            url(&target, ""),
        ],
        Duration::from_secs(20),
    )
    .await;
    let ids = text(&out);
    assert!(out.status.success(), "{ids}");
    assert!(ids.contains("NAA"), "{ids}");

    let out = tool(
        vec!["iscsi-readcapacity16".into(), url(&target, "")],
        Duration::from_secs(20),
    )
    .await;
    let capacity = text(&out);
    assert!(out.status.success(), "{capacity}");
    assert!(
        capacity.contains(&format!("Total size:{SIZE}")),
        "{capacity}"
    );
    assert!(capacity.contains("LBPME:1 LBPRZ:1"), "{capacity}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_through_the_target_reads_back_identical() {
    use hpchain_iscsi::initiator::Initiator;
    let config = ExportConfig {
        iqn: IQN.into(),
        chap: Some(Chap {
            user: "bob".into(),
            secret: "bob-secret-1234".into(),
        }),
        ..Default::default()
    };
    let target = start(config, SIZE).await;
    assert!(
        Initiator::login(
            &target.addr,
            IQN,
            "iqn.2026-11.test:x",
            Some(("bob", "wrong-secret-00"))
        )
        .await
        .is_err(),
        "a wrong CHAP secret logged in"
    );
    let mut initiator = Initiator::login(
        &target.addr,
        IQN,
        "iqn.2026-11.test:x",
        Some(("bob", "bob-secret-1234")),
    )
    .await
    .unwrap();
    // Writes of one block up to 3 MiB (immediate data, R2T bursts, Data-In
    // split over many PDUs), at both ends of the LUN.
    let blocks = SIZE / 512;
    let mut seed = 11u64;
    for (lba, len) in [
        (0u64, 512usize),
        (7, 4096),
        (100, 65536 + 512),
        (2048, 3 << 20),
        (blocks - 16, 8192),
    ] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        initiator.write(lba, &data, 512).await.unwrap();
        let back = initiator.read(lba, (len / 512) as u32, 512).await.unwrap();
        assert!(back == data, "{len} bytes at LBA {lba} read back different");
    }
    // Unwritten blocks of the thin LUN read as zeroes.
    assert!(initiator
        .read(4096 * 4, 8, 512)
        .await
        .unwrap()
        .iter()
        .all(|b| *b == 0));
    initiator.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chap_mutual_chap_and_initiator_acl() {
    let config = ExportConfig {
        iqn: IQN.into(),
        chap: Some(Chap {
            user: "alice".into(),
            secret: "alice-secret-16b".into(),
        }),
        mutual_chap: Some(Chap {
            user: "target".into(),
            secret: "target-secret-16".into(),
        }),
        allowed_initiators: vec!["iqn.2026-11.test:allowed".into()],
        read_only: false,
    };
    let target = start(config, SIZE).await;
    let inq = |url: String, initiator: &str| {
        vec![
            "iscsi-inq".to_string(),
            "-i".into(),
            initiator.to_string(),
            url,
        ]
    };
    let limit = Duration::from_secs(20);
    // No credentials, wrong secret, unlisted initiator: refused.
    let out = tool(inq(url(&target, ""), "iqn.2026-11.test:allowed"), limit).await;
    assert!(
        !out.status.success(),
        "logged in without CHAP: {}",
        text(&out)
    );
    let out = tool(
        inq(
            url(&target, "alice%wrong-secret-00@"),
            "iqn.2026-11.test:allowed",
        ),
        limit,
    )
    .await;
    assert!(
        !out.status.success(),
        "logged in with a wrong secret: {}",
        text(&out)
    );
    let out = tool(
        inq(
            url(&target, "alice%alice-secret-16b@"),
            "iqn.2026-11.test:other",
        ),
        limit,
    )
    .await;
    assert!(
        !out.status.success(),
        "an initiator outside the ACL logged in: {}",
        text(&out)
    );
    // The right account from the allowed initiator: in.
    let out = tool(
        inq(
            url(&target, "alice%alice-secret-16b@"),
            "iqn.2026-11.test:allowed",
        ),
        limit,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // Mutual CHAP: the initiator checks the target's answer too.
    let mutual = format!(
        "iscsi://alice%alice-secret-16b@{}/{IQN}/0?target_user=target&target_password=target-secret-16",
        target.addr
    );
    let out = tool(inq(mutual, "iqn.2026-11.test:allowed"), limit).await;
    assert!(out.status.success(), "mutual CHAP: {}", text(&out));
    let wrong_mutual = format!(
        "iscsi://alice%alice-secret-16b@{}/{IQN}/0?target_user=target&target_password=not-the-secret",
        target.addr
    );
    let out = tool(inq(wrong_mutual, "iqn.2026-11.test:allowed"), limit).await;
    assert!(
        !out.status.success(),
        "accepted a target with the wrong mutual secret: {}",
        text(&out)
    );
    assert_eq!(target.portal.session_count(IQN), 0);
}

/// A minimal initiator: enough to log in and send PDUs real initiators
/// would not.
struct RawInitiator {
    stream: TcpStream,
    cmd_sn: u32,
    itt: u32,
}

fn key_values(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(format!("{k}={v}").as_bytes());
        out.push(0);
    }
    out
}

impl RawInitiator {
    async fn login(addr: &str) -> RawInitiator {
        Self::join(addr, 0, 0, 1).await.0
    }

    /// Logs in a connection `cid` of session `tsih` (0: a new session)
    /// whose next CmdSN is `cmd_sn`; returns it and the session's TSIH.
    async fn join(addr: &str, tsih: u16, cid: u16, cmd_sn: u32) -> (RawInitiator, u16) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut login = Pdu::new(op::LOGIN_REQUEST);
        login.bhs[0] |= 0x40;
        // Transit from operational negotiation straight to full feature.
        login.set_flags(0x80 | (1 << 2) | 3);
        login.bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 7]);
        login.set_u16_at(14, tsih);
        login.set_itt(1);
        login.set_u16_at(20, cid);
        login.set_u32_at(24, cmd_sn);
        login.set_data(key_values(&[
            ("InitiatorName", "iqn.2026-11.test:raw"),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxConnections", "4"),
        ]));
        stream.write_all(&login.encode(false, false)).await.unwrap();
        let reply = Pdu::read(&mut stream, false, false, 1 << 20).await.unwrap();
        assert_eq!(reply.opcode(), op::LOGIN_RESPONSE);
        assert_eq!((reply.bhs[36], reply.bhs[37]), (0, 0), "login refused");
        assert_eq!(reply.flags() & 0x83, 0x83, "not in full feature phase");
        let tsih = reply.u16_at(14);
        (
            RawInitiator {
                stream,
                cmd_sn,
                itt: 10 + 1000 * cid as u32,
            },
            tsih,
        )
    }

    /// Sends a command PDU with this CmdSN without waiting for the answer.
    async fn send_tur(&mut self, cmd_sn: u32) -> u32 {
        let mut pdu = Pdu::new(op::SCSI_COMMAND);
        pdu.set_flags(0x81);
        self.itt += 1;
        pdu.set_itt(self.itt);
        pdu.set_u32_at(24, cmd_sn);
        self.stream
            .write_all(&pdu.encode(false, false))
            .await
            .unwrap();
        self.itt
    }

    async fn answer(&mut self) -> Pdu {
        tokio::time::timeout(
            Duration::from_secs(10),
            Pdu::read(&mut self.stream, false, false, 1 << 20),
        )
        .await
        .expect("no answer in 10 s")
        .unwrap()
    }

    /// Sends a SCSI command without data and returns the PDUs up to and
    /// including its status.
    async fn command(&mut self, cdb: &[u8], read_len: u32) -> Vec<Pdu> {
        let mut pdu = Pdu::new(op::SCSI_COMMAND);
        pdu.set_flags(0x80 | if read_len > 0 { 0x40 } else { 0 } | 0x01);
        self.itt += 1;
        pdu.set_itt(self.itt);
        pdu.set_u32_at(20, read_len);
        pdu.set_u32_at(24, self.cmd_sn);
        self.cmd_sn += 1;
        pdu.bhs[32..32 + cdb.len()].copy_from_slice(cdb);
        self.stream
            .write_all(&pdu.encode(false, false))
            .await
            .unwrap();
        let mut replies = Vec::new();
        loop {
            let reply = tokio::time::timeout(
                Duration::from_secs(10),
                Pdu::read(&mut self.stream, false, false, 1 << 20),
            )
            .await
            .expect("no answer in 10 s")
            .unwrap();
            let done = reply.opcode() == op::SCSI_RESPONSE
                || (reply.opcode() == op::DATA_IN && reply.flags() & 0x01 != 0);
            replies.push(reply);
            if done {
                return replies;
            }
        }
    }
}

/// Status and sense key/ASC/ASCQ of a command's last PDU.
fn status_of(replies: &[Pdu]) -> (u8, Option<(u8, u8, u8)>) {
    let last = replies.last().unwrap();
    let status = last.bhs[3];
    let sense = (last.opcode() == op::SCSI_RESPONSE && last.data.len() >= 2 + 14).then(|| {
        let s = &last.data[2..];
        (s[2] & 0x0f, s[12], s[13])
    });
    (status, sense)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_raises_capacity_data_has_changed_once() {
    let target = start(plain(), SIZE).await;
    let mut initiator = RawInitiator::login(&target.addr).await;
    let tur = [0u8; 6];
    assert_eq!(status_of(&initiator.command(&tur, 0).await), (0, None));
    target.device.resize(2 * SIZE).unwrap();
    // The first command after the resize reports the unit attention...
    let (status, sense) = status_of(&initiator.command(&tur, 0).await);
    assert_eq!(status, 0x02);
    assert_eq!(sense, Some((0x06, 0x2a, 0x09)), "CAPACITY DATA HAS CHANGED");
    // ...once; then READ CAPACITY(16) shows the new size.
    assert_eq!(status_of(&initiator.command(&tur, 0).await), (0, None));
    let mut rc16 = [0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let replies = initiator.command(&rc16, 32).await;
    let data: Vec<u8> = replies
        .iter()
        .filter(|p| p.opcode() == op::DATA_IN)
        .flat_map(|p| p.data.clone())
        .collect();
    let last_lba = u64::from_be_bytes(data[0..8].try_into().unwrap());
    assert_eq!((last_lba + 1) * 512, 2 * SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_check_condition_or_a_reject_and_others_keep_working() {
    let target = start(plain(), SIZE).await;
    let mut initiator = RawInitiator::login(&target.addr).await;
    // A READ(10) past the end: ILLEGAL REQUEST, LBA OUT OF RANGE.
    let blocks = SIZE / 512;
    let mut read10 = [0u8; 10];
    read10[0] = 0x28;
    read10[2..6].copy_from_slice(&((blocks - 1) as u32).to_be_bytes());
    read10[8] = 2;
    assert_eq!(
        status_of(&initiator.command(&read10, 1024).await),
        (0x02, Some((0x05, 0x21, 0x00)))
    );
    // An opcode no one implements: INVALID COMMAND OPERATION CODE.
    assert_eq!(
        status_of(&initiator.command(&[0xc7, 0, 0, 0, 0, 0], 0).await),
        (0x02, Some((0x05, 0x20, 0x00)))
    );
    // A command for LUN 5: LOGICAL UNIT NOT SUPPORTED.
    let mut pdu = Pdu::new(op::SCSI_COMMAND);
    pdu.set_flags(0x81);
    pdu.set_lun(5 << 48);
    pdu.set_itt(99);
    pdu.set_u32_at(24, initiator.cmd_sn);
    initiator.cmd_sn += 1;
    initiator
        .stream
        .write_all(&pdu.encode(false, false))
        .await
        .unwrap();
    let reply = Pdu::read(&mut initiator.stream, false, false, 1 << 20)
        .await
        .unwrap();
    assert_eq!(status_of(&[reply]), (0x02, Some((0x05, 0x25, 0x00))));
    // An unknown PDU opcode: a Reject carrying its header, and the
    // connection stays usable.
    let mut unknown = Pdu::new(0x1d);
    unknown.set_itt(1234);
    initiator
        .stream
        .write_all(&unknown.encode(false, false))
        .await
        .unwrap();
    let reply = Pdu::read(&mut initiator.stream, false, false, 1 << 20)
        .await
        .unwrap();
    assert_eq!(reply.opcode(), op::REJECT);
    assert_eq!(reply.bhs[2], 0x05, "reason: command not supported");
    assert_eq!(&reply.data[..48], &unknown.bhs[..]);
    assert_eq!(status_of(&initiator.command(&[0u8; 6], 0).await), (0, None));

    // A data segment longer than the target accepts: the connection ends.
    let mut huge = Pdu::new(op::NOP_OUT);
    huge.bhs[0] |= 0x40;
    huge.bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    initiator.stream.write_all(&huge.bhs).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), initiator.stream.read(&mut buf))
        .await
        .expect("the target kept an oversized PDU's connection open");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed"
    );

    // Garbage instead of a login, and a truncated header: dropped too.
    let mut garbage = TcpStream::connect(&target.addr).await.unwrap();
    garbage.write_all(&[0xde; 100]).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await;
    assert!(read.is_ok(), "garbage login left hanging");
    let mut truncated = TcpStream::connect(&target.addr).await.unwrap();
    truncated.write_all(&[0x43, 0x87, 0, 0]).await.unwrap();
    drop(truncated);

    // Meanwhile a real initiator is served as if nothing happened.
    let out = tool(
        vec!["iscsi-inq".into(), url(&target, "")],
        Duration::from_secs(20),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
}

/// A connection the target drops for a protocol error closes with a FIN
/// and keeps swallowing what the initiator still sends, so the initiator
/// sees an end of stream and reconnects. A socket closed with data unread
/// answers with a reset instead, and libiscsi writing into it died of
/// SIGPIPE mid-suite (its `iSCSIDataSnInvalid` test, about one run in four
/// under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_ends_in_a_close_not_a_reset() {
    let target = start(plain(), SIZE).await;
    let mut initiator = RawInitiator::login(&target.addr).await;
    // WRITE(10) of two blocks without immediate data: the target asks for
    // the data with an R2T.
    let mut write10 = Pdu::new(op::SCSI_COMMAND);
    write10.set_flags(0x80 | 0x20 | 0x01);
    write10.set_itt(77);
    write10.set_u32_at(20, 1024);
    write10.set_u32_at(24, initiator.cmd_sn);
    write10.bhs[32] = 0x2a;
    write10.bhs[39] = 2;
    initiator
        .stream
        .write_all(&write10.encode(false, false))
        .await
        .unwrap();
    let r2t = initiator.answer().await;
    assert_eq!(r2t.opcode(), op::R2T);
    // Its Data-Out numbered 5 instead of 0: a protocol error at ERL 0.
    let mut data_out = Pdu::new(op::DATA_OUT);
    data_out.set_flags(0x80);
    data_out.set_itt(77);
    data_out.set_u32_at(20, r2t.u32_at(20));
    data_out.set_u32_at(36, 5);
    data_out.set_data(vec![0xab; 1024]);
    initiator
        .stream
        .write_all(&data_out.encode(false, false))
        .await
        .unwrap();
    assert_eq!(initiator.answer().await.opcode(), op::REJECT);
    let mut buf = [0u8; 512];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), initiator.stream.read(&mut buf))
            .await
            .expect("the connection stayed open after a protocol error");
        match read {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => panic!("the connection ended in an error, not a close: {e}"),
        }
    }
    // What an initiator sends before it notices the close is read and
    // dropped, not answered with a reset (the second write would fail).
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        initiator
            .stream
            .write_all(&data_out.encode(false, false))
            .await
            .expect("a write after the target's close met a reset");
    }
    // And the target still serves a new login.
    let mut again = RawInitiator::login(&target.addr).await;
    assert_eq!(status_of(&again.command(&[0u8; 6], 0).await), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_share_one_session_and_its_command_order() {
    let target = start(plain(), SIZE).await;
    let (mut first, tsih) = RawInitiator::join(&target.addr, 0, 0, 1).await;
    assert_ne!(tsih, 0, "the target assigned a session handle");
    let (mut second, same) = RawInitiator::join(&target.addr, tsih, 1, 1).await;
    assert_eq!(same, tsih);
    assert_eq!(
        target.portal.session_count(IQN),
        1,
        "one session, two connections"
    );
    // CmdSN 2 arrives on the second connection before CmdSN 1 on the
    // first: it waits for 1, then both run.
    let late = second.send_tur(2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let early = first.send_tur(1).await;
    let a = first.answer().await;
    let b = second.answer().await;
    assert_eq!(
        (a.opcode(), a.itt(), a.bhs[3]),
        (op::SCSI_RESPONSE, early, 0)
    );
    assert_eq!(
        (b.opcode(), b.itt(), b.bhs[3]),
        (op::SCSI_RESPONSE, late, 0)
    );
    // Both answers carry the session's ExpCmdSN: 3.
    assert_eq!(b.u32_at(28), 3);
    // A CmdSN outside the window is ignored, not answered.
    first.send_tur(1000).await;
    let in_window = first.send_tur(3).await;
    let reply = first.answer().await;
    assert_eq!(
        reply.itt(),
        in_window,
        "the out-of-window command was not answered"
    );
    // A third login naming a session that does not exist is refused.
    let mut stray = TcpStream::connect(&target.addr).await.unwrap();
    let mut login = Pdu::new(op::LOGIN_REQUEST);
    login.bhs[0] |= 0x40;
    login.set_flags(0x80 | (1 << 2) | 3);
    login.set_u16_at(14, tsih.wrapping_add(100));
    login.set_data(key_values(&[
        ("InitiatorName", "iqn.2026-11.test:raw"),
        ("TargetName", IQN),
    ]));
    stray.write_all(&login.encode(false, false)).await.unwrap();
    let reply = Pdu::read(&mut stray, false, false, 1 << 20).await.unwrap();
    assert_eq!(
        (reply.bhs[36], reply.bhs[37]),
        (2, 10),
        "session does not exist"
    );
}

fn login_bytes() -> Vec<u8> {
    let mut login = Pdu::new(op::LOGIN_REQUEST);
    login.bhs[0] |= 0x40;
    login.set_flags(0x80 | (1 << 2) | 3);
    login.bhs[8..14].copy_from_slice(&[0x80, 0, 0, 0, 0, 9]);
    login.set_itt(1);
    login.set_data(key_values(&[
        ("InitiatorName", "iqn.2026-11.test:mutant"),
        ("TargetName", IQN),
        ("HeaderDigest", "CRC32C,None"),
        ("MaxRecvDataSegmentLength", "8192"),
    ]));
    let mut bytes = login.encode(false, false);
    // A command and a NOP-Out after the login, for mutations to hit too.
    let mut read = Pdu::new(op::SCSI_COMMAND);
    read.set_flags(0xc1);
    read.set_itt(2);
    read.set_u32_at(20, 4096);
    read.set_u32_at(24, 0);
    read.bhs[32] = 0x28;
    read.bhs[40] = 8;
    bytes.extend(read.encode(false, false));
    let mut nop = Pdu::new(op::NOP_OUT);
    nop.set_itt(3);
    nop.set_data(vec![7; 100]);
    bytes.extend(nop.encode(false, false));
    bytes
}

/// A bounded fuzz run against a live portal: valid conversations with a
/// few bytes flipped, cut short, or repeated. The cargo fuzz targets in
/// iscsi-target/fuzz run the parsers longer (docs/iscsi.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_conversations_never_stop_the_portal() {
    let target = start(plain(), SIZE).await;
    let valid = login_bytes();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut connections = Vec::new();
    for _ in 0..400 {
        let mut bytes = valid.clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        match next() % 4 {
            0 => bytes.truncate((next() as usize) % bytes.len()),
            1 => {
                let copy = bytes.clone();
                bytes.extend(copy);
            }
            _ => {}
        }
        let mut stream = TcpStream::connect(&target.addr).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(5), stream.read(&mut sink)).await;
        // Some stay open half-way through a PDU while the next ones run.
        if next() % 8 == 0 {
            connections.push(stream);
        }
    }
    let out = tool(
        vec!["iscsi-inq".into(), url(&target, "")],
        Duration::from_secs(20),
    )
    .await;
    assert!(out.status.success(), "after the mutants: {}", text(&out));
    let mut initiator = RawInitiator::login(&target.addr).await;
    assert_eq!(status_of(&initiator.command(&[0u8; 6], 0).await), (0, None));
    drop(connections);
}

/// libiscsi's conformance suite against a file-backed LUN, with a second
/// path to the same target for its multipath tests. The count is recorded
/// in docs/iscsi.md; tgt 1.0.85 passes 598 of the 615 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libiscsi_conformance_suite() {
    let target = start(plain(), 1 << 30).await;
    let out = tool(
        vec![
            "iscsi-test-cu".into(),
            "--dataloss".into(),
            "--silent".into(),
            url(&target, ""),
            url(&target, ""),
        ],
        Duration::from_secs(600),
    )
    .await;
    let report = text(&out);
    let tests_line = report
        .lines()
        .find(|l| l.trim_start().starts_with("tests"))
        .unwrap_or_else(|| {
            panic!(
                "iscsi-test-cu ended ({}) without its summary:\n{report}",
                out.status
            )
        });
    let numbers: Vec<u32> = tests_line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (total, passed) = (numbers[0], numbers[2]);
    println!("iscsi-test-cu: {passed} of {total} passed");
    assert_eq!(total, 615, "{tests_line}");
    // tgt passes 598; the two known failures are documented in docs/iscsi.md.
    assert!(passed >= 613, "only {passed} of {total} passed:\n{report}");
}

/// A device whose writes never end by themselves and whose `settle` waits
/// for the test: a replicated volume with a write lost in flight, as the
/// target sees it.
struct StuckWrites {
    settled: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl hpchain_iscsi::BlockDevice for StuckWrites {
    fn block_size(&self) -> u32 {
        512
    }
    fn size(&self) -> u64 {
        SIZE
    }
    async fn read(&self, _offset: u64, len: usize) -> Result<Vec<u8>, hpchain_iscsi::DeviceError> {
        Ok(vec![0; len])
    }
    async fn write(&self, _offset: u64, _data: &[u8]) -> Result<(), hpchain_iscsi::DeviceError> {
        std::future::pending().await
    }
    async fn flush(&self) -> Result<(), hpchain_iscsi::DeviceError> {
        Ok(())
    }
    async fn discard(&self, _offset: u64, _len: u64) -> Result<(), hpchain_iscsi::DeviceError> {
        Ok(())
    }
    async fn settle(&self) {
        let _ = self.settled.clone().wait_for(|settled| *settled).await;
    }
}

/// ABORT TASK of a write is answered only once the device has settled
/// it: the initiator may send the write again at once (multipath: through
/// another node), and the aborted one must not land after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_write_is_answered_once_the_device_has_settled_it() {
    let (settle, settled) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let portal = Portal::new(vec![addr.clone()]);
    portal
        .add_export("test", plain(), Arc::new(StuckWrites { settled }))
        .unwrap();
    tokio::spawn(portal.clone().serve(listener));
    let mut initiator = RawInitiator::login(&addr).await;

    // WRITE(10) of one block at LBA 0, its data immediate.
    let mut write = Pdu::new(op::SCSI_COMMAND);
    write.set_flags(0x80 | 0x20 | 0x01);
    initiator.itt += 1;
    let write_itt = initiator.itt;
    write.set_itt(write_itt);
    write.set_u32_at(20, 512);
    let write_sn = initiator.cmd_sn;
    write.set_u32_at(24, write_sn);
    initiator.cmd_sn += 1;
    write.bhs[32..42].copy_from_slice(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    write.set_data(vec![0x5a; 512]);
    initiator
        .stream
        .write_all(&write.encode(false, false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut abort = Pdu::new(op::TASK_MGMT_REQUEST);
    abort.bhs[0] |= 0x40; // immediate
    abort.set_flags(0x80 | 1); // ABORT TASK
    initiator.itt += 1;
    abort.set_itt(initiator.itt);
    abort.set_u32_at(20, write_itt);
    abort.set_u32_at(24, initiator.cmd_sn);
    abort.set_u32_at(32, write_sn);
    initiator
        .stream
        .write_all(&abort.encode(false, false))
        .await
        .unwrap();
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        Pdu::read(&mut initiator.stream, false, false, 1 << 20),
    )
    .await;
    assert!(
        early.is_err(),
        "answered before the device settled: {:?}",
        early.map(|r| r.map(|p| (p.opcode(), p.bhs[2])))
    );
    settle.send(true).unwrap();
    let answer = initiator.answer().await;
    assert_eq!(answer.opcode(), op::TASK_MGMT_RESPONSE);
    assert_eq!(answer.itt(), initiator.itt);
    assert_eq!(answer.bhs[2], 0, "function complete");
}
