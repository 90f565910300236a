//! `hpchain volume import` and `export`: a file to or from a volume in
//! object-sized chunks over the API, with a progress line on stderr.

use serde_json::json;
use std::io::{Read, Write};
use std::time::Instant;

use crate::client::{ApiClient, CallError};
use crate::units::format_size;

/// Bytes per request: one default object.
const CHUNK_BYTES: usize = 4 << 20;

fn io_error(what: String) -> CallError {
    CallError {
        message: what,
        code: Some("local.io".into()),
        status: None,
    }
}

struct Progress {
    verb: &'static str,
    name: String,
    total: u64,
    started: Instant,
    last_drawn: Option<Instant>,
}

impl Progress {
    fn new(verb: &'static str, name: &str, total: u64) -> Progress {
        Progress {
            verb,
            name: name.to_string(),
            total,
            started: Instant::now(),
            last_drawn: None,
        }
    }

    fn draw(&mut self, done: u64, last: bool) {
        let now = Instant::now();
        if !last
            && self
                .last_drawn
                .is_some_and(|t| now.duration_since(t).as_millis() < 200)
        {
            return;
        }
        self.last_drawn = Some(now);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{} {}: {} / {} ({percent:.0}%) {}/s   ",
            self.verb,
            self.name,
            format_size(done),
            format_size(self.total),
            format_size((done as f64 / seconds) as u64)
        );
        if last {
            let _ = writeln!(err);
        }
    }
}

fn volume_size(api: &ApiClient, volume: &str) -> Result<u64, CallError> {
    let info = api.get(&format!("/v1/volumes/{volume}"))?;
    Ok(info["size_bytes"].as_u64().unwrap_or(0))
}

/// Copies `file` into `volume` from offset 0. All-zero chunks are
/// discarded rather than written, so the volume stays thin.
pub fn import(api: &ApiClient, file: &str, volume: &str) -> Result<(), CallError> {
    let mut input =
        std::fs::File::open(file).map_err(|e| io_error(format!("cannot open {file}: {e}")))?;
    let length = input
        .metadata()
        .map_err(|e| io_error(format!("cannot stat {file}: {e}")))?
        .len();
    let size = volume_size(api, volume)?;
    if length > size {
        return Err(CallError {
            message: format!(
                "{file} is {} but volume {volume:?} holds {}; grow it with `hpchain volume resize {volume} --size ...`",
                format_size(length),
                format_size(size)
            ),
            code: Some("volume.out_of_range".into()),
            status: None,
        });
    }
    let mut progress = Progress::new("import", volume, length);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < length {
        let want = ((length - offset) as usize).min(CHUNK_BYTES);
        input
            .read_exact(&mut buffer[..want])
            .map_err(|e| io_error(format!("reading {file} at {offset}: {e}")))?;
        let chunk = &buffer[..want];
        if chunk.iter().all(|&b| b == 0) {
            api.post(
                &format!("/v1/volumes/{volume}/discard"),
                &json!({"offset_bytes": offset, "length_bytes": want}),
            )?;
        } else {
            api.put_bytes(&format!("/v1/volumes/{volume}/data?offset={offset}"), chunk)?;
        }
        offset += want as u64;
        progress.draw(offset, false);
    }
    progress.draw(offset, true);
    Ok(())
}

/// Copies the whole of `volume`, or of snapshot `VOLUME@SNAPSHOT`, into
/// `file`.
pub fn export(api: &ApiClient, volume: &str, file: &str) -> Result<(), CallError> {
    let (size, data_path) = match volume.split_once('@') {
        Some(_) => {
            let (v, s) = crate::snap::split_snapshot(volume)?;
            let info = api.get(&format!("/v1/volumes/{v}/snapshots/{s}"))?;
            (
                info["size_bytes"].as_u64().unwrap_or(0),
                format!("/v1/volumes/{v}/snapshots/{s}/data"),
            )
        }
        None => (
            volume_size(api, volume)?,
            format!("/v1/volumes/{volume}/data"),
        ),
    };
    let mut output =
        std::fs::File::create(file).map_err(|e| io_error(format!("cannot create {file}: {e}")))?;
    let mut progress = Progress::new("export", volume, size);
    let mut offset = 0u64;
    while offset < size {
        let want = (size - offset).min(CHUNK_BYTES as u64);
        let data = api.get_bytes(&format!("{data_path}?offset={offset}&length={want}"))?;
        if data.len() as u64 != want {
            return Err(io_error(format!(
                "volume {volume:?} answered {} bytes at {offset}, expected {want}",
                data.len()
            )));
        }
        output
            .write_all(&data)
            .map_err(|e| io_error(format!("writing {file} at {offset}: {e}")))?;
        offset += want;
        progress.draw(offset, false);
    }
    output
        .sync_all()
        .map_err(|e| io_error(format!("syncing {file}: {e}")))?;
    progress.draw(offset, true);
    Ok(())
}
