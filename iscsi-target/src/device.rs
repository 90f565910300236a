//! The one thing the target knows about storage: a [`BlockDevice`]. The
//! node daemon implements it over an hpchain volume; tests and the
//! standalone target use [`FileDevice`].

use async_trait::async_trait;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a device operation failed; each maps to its own SCSI sense data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The range is outside the device (the SCSI layer checks first, so
    /// this means the device shrank underneath a command).
    OutOfRange,
    /// The data at this range cannot be read back correctly.
    Medium(String),
    /// No space left to allocate the write.
    NoSpace,
    /// The device is temporarily unreachable (a cluster election, a node
    /// down); the initiator should retry.
    Unavailable(String),
    /// Anything else.
    Io(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::OutOfRange => write!(f, "range outside the device"),
            DeviceError::Medium(why) => write!(f, "medium error: {why}"),
            DeviceError::NoSpace => write!(f, "no space left"),
            DeviceError::Unavailable(why) => write!(f, "temporarily unavailable: {why}"),
            DeviceError::Io(why) => write!(f, "I/O error: {why}"),
        }
    }
}

impl std::error::Error for DeviceError {}

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> DeviceError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => DeviceError::NoSpace,
            Some(libc::EIO) => DeviceError::Medium(e.to_string()),
            _ => DeviceError::Io(e.to_string()),
        }
    }
}

/// A byte-addressed block device. Offsets and lengths passed in are whole
/// blocks inside `size()`: the SCSI layer checks that before calling.
#[async_trait]
pub trait BlockDevice: Send + Sync + 'static {
    /// Bytes per logical block (512 or 4096).
    fn block_size(&self) -> u32;
    /// Current size in bytes; it may grow while the device is exported.
    fn size(&self) -> u64;
    async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, DeviceError>;
    /// Writes `data`; when it returns, the data is durable.
    async fn write(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError>;
    /// Makes every completed write durable.
    async fn flush(&self) -> Result<(), DeviceError>;
    /// Releases the space of a range; it reads as zeroes afterwards.
    async fn discard(&self, offset: u64, len: u64) -> Result<(), DeviceError>;
    /// Waits until no write that was aborted or failed can still change
    /// the medium. The target calls it before it answers a task abort:
    /// the initiator may then send the write again, also through another
    /// path, and the old one must not land after it. The default waits
    /// for nothing: right for a device whose writes stop when their call
    /// is dropped. ([`FileDevice`]'s go on to the end on their blocking
    /// threads; it is the standalone target's test device and does not
    /// track them.)
    async fn settle(&self) {}
    /// Runs of `(offset, len, mapped)` covering `[offset, offset + len)`:
    /// which parts hold allocated data. The default says all of it does.
    async fn mapped_ranges(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64, bool)>, DeviceError> {
        Ok(vec![(offset, len, true)])
    }
    /// The smallest aligned range in bytes whose discard really frees
    /// space (reported in the Block Limits VPD page).
    fn discard_granularity(&self) -> u64 {
        self.block_size() as u64
    }
}

/// A block device in a regular file: thin (sparse) by hole punching.
pub struct FileDevice {
    file: Arc<File>,
    block_size: u32,
    size: AtomicU64,
}

impl FileDevice {
    /// Opens or creates `path` as a device of `size` bytes.
    pub fn create(path: &Path, size: u64, block_size: u32) -> std::io::Result<FileDevice> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(size)?;
        Ok(FileDevice {
            file: Arc::new(file),
            block_size,
            size: AtomicU64::new(size),
        })
    }

    /// Grows (or shrinks) the device, as a volume resize would.
    pub fn resize(&self, size: u64) -> std::io::Result<()> {
        self.file.set_len(size)?;
        self.size.store(size, Ordering::SeqCst);
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, DeviceError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || work(&file))
            .await
            .map_err(|e| DeviceError::Io(e.to_string()))?
            .map_err(DeviceError::from)
    }
}

#[async_trait]
impl BlockDevice for FileDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }
    async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, DeviceError> {
        self.blocking(move |file| {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
    }
    async fn write(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let data = data.to_vec();
        self.blocking(move |file| file.write_all_at(&data, offset))
            .await
    }
    async fn flush(&self) -> Result<(), DeviceError> {
        self.blocking(|file| file.sync_data()).await
    }
    async fn discard(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        self.blocking(move |file| {
            // SAFETY: fallocate on an open descriptor with plain integers.
            let rc = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await
    }
    async fn mapped_ranges(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64, bool)>, DeviceError> {
        self.blocking(move |file| {
            let fd = file.as_raw_fd();
            let end = offset + len;
            let mut runs = Vec::new();
            let mut at = offset;
            while at < end {
                // SAFETY: lseek on an open descriptor.
                let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
                let data = if data < 0 {
                    end
                } else {
                    (data as u64).min(end)
                };
                if data > at {
                    runs.push((at, data - at, false));
                    at = data;
                    continue;
                }
                // SAFETY: as above.
                let hole = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_HOLE) };
                let hole = if hole < 0 {
                    end
                } else {
                    (hole as u64).min(end)
                };
                runs.push((at, hole.max(at + 1) - at, true));
                at = hole.max(at + 1);
            }
            Ok(runs)
        })
        .await
    }
    fn discard_granularity(&self) -> u64 {
        4096
    }
}
