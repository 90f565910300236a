//! How the object store moves bytes to and from its files: through
//! io_uring (the `io-uring` crate), or positional system calls where
//! io_uring cannot be set up (an old kernel, a seccomp profile, or
//! `io_uring_disabled`). Both sit behind [`FileIo`].
//!
//! The store's calls are synchronous, so each thread keeps its own small
//! ring and waits for what it submitted; the gain is in batches: the
//! fdatasyncs of every file an entry touched go to the kernel in one
//! submission and run together, where positional I/O syncs them one after
//! the other. Small writes skip the ring (`RING_WRITE_MIN`): a buffered
//! write submitted alone costs a kernel worker's round trip.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Byte movement for the object store's files.
pub trait FileIo: Send + Sync {
    /// `io_uring` or `positional`, for logs and status.
    fn name(&self) -> &'static str;
    /// Reads into `buf` from `offset`; fewer bytes only at the end of file.
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the data of every file durable (fdatasync).
    fn sync_data(&self, files: &[&File]) -> io::Result<()>;
}

/// `pread`/`pwrite`/`fdatasync`, one call each.
pub struct PositionalIo;

impl FileIo for PositionalIo {
    fn name(&self) -> &'static str {
        "positional"
    }

    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        write_chunks(offset, buf.len())
            .try_for_each(|(at, len)| file.write_all_at(&buf[at..at + len], offset + at as u64))
    }

    fn sync_data(&self, files: &[&File]) -> io::Result<()> {
        files.iter().try_for_each(|f| f.sync_data())
    }
}

/// Writes smaller than this go through `pwrite` (see `write_all_at`).
const RING_WRITE_MIN: usize = 1 << 20;

/// The most one write system call covers: a longer write is split on
/// boundaries of this size.
///
/// A buffered write makes page-cache folios as large as itself (ext4 from
/// Linux 6.16), and every later 4 KiB write into such a folio walks all of
/// its buffer heads: 512 for a 2 MiB folio. Measured under 4 KiB random
/// writes on a volume filled with 4 MiB writes: that walk was 13.5% of the
/// machine's CPU, and writes ran at 1,900 IOPS against 2,600 with the page
/// cache dropped (docs/benchmarks.md, "Large page-cache folios").
const WRITE_CHUNK_MAX: usize = 64 << 10;

/// Turns readahead off for `file`.
///
/// Readahead fills the page cache with folios as large as its window, which
/// later small writes pay for as large writes' folios do (see
/// `WRITE_CHUNK_MAX`). The store's reads name exactly the blocks they need,
/// so without readahead a read from disk reads just those, in small folios.
pub fn advise_random(file: &File) {
    // Advice only: a file that refuses it is still read correctly.
    // SAFETY: a system call on a descriptor `file` keeps open.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
}

/// `(start in the buffer, length)` of each piece a write of `len` bytes at
/// `offset` is split into: pieces end on `WRITE_CHUNK_MAX` boundaries of
/// the file, so their folios stay aligned and small.
fn write_chunks(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= len {
            return None;
        }
        let file_at = offset + at as u64;
        let to_boundary = WRITE_CHUNK_MAX - (file_at % WRITE_CHUNK_MAX as u64) as usize;
        let piece = to_boundary.min(len - at);
        let start = at;
        at += piece;
        Some((start, piece))
    })
}

/// Entries in each thread's ring: the most operations in flight at once.
const RING_ENTRIES: u32 = 64;

thread_local! {
    static RING: RefCell<Option<io_uring::IoUring>> = const { RefCell::new(None) };
}

/// io_uring, one ring per thread, created on the thread's first use.
pub struct UringIo;

impl UringIo {
    /// `Some` if this process can set up a ring here.
    pub fn probe() -> io::Result<UringIo> {
        io_uring::IoUring::new(2).map(|_| UringIo)
    }

    /// Submits `entries` (at most [`RING_ENTRIES`]) on this thread's ring
    /// and waits for all of them; returns each result in submission order.
    fn run(&self, entries: &[io_uring::squeue::Entry]) -> io::Result<Vec<i32>> {
        RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(io_uring::IoUring::new(RING_ENTRIES)?);
            }
            let ring = slot.as_mut().expect("ring set above");
            for (i, entry) in entries.iter().enumerate() {
                let entry = entry.clone().user_data(i as u64);
                // SAFETY: the buffers and descriptors an entry names belong
                // to the caller, who is blocked here until every entry has
                // completed (below), so they outlive the operation.
                unsafe { ring.submission().push(&entry) }
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            let mut results = vec![0i32; entries.len()];
            let mut seen = 0;
            while seen < entries.len() {
                match ring.submit_and_wait(entries.len() - seen) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Nothing may stay in flight with a caller's buffer:
                        // this ring is unusable, drop it once all completed.
                        while seen < entries.len() {
                            if ring.submit_and_wait(1).is_err() {
                                std::process::abort();
                            }
                            seen += ring.completion().count();
                        }
                        *slot = None;
                        return Err(e);
                    }
                }
                for cqe in ring.completion() {
                    results[cqe.user_data() as usize] = cqe.result();
                    seen += 1;
                }
            }
            Ok(results)
        })
    }

    fn one(&self, entry: io_uring::squeue::Entry) -> io::Result<usize> {
        let result = self.run(&[entry])?[0];
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        Ok(result as usize)
    }
}

impl FileIo for UringIo {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use io_uring::{opcode, types};
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            let entry = opcode::Read::new(types::Fd(file.as_raw_fd()), rest.as_mut_ptr(), len)
                .offset(offset + done as u64)
                .build();
            match self.one(entry) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        use io_uring::{opcode, types};
        if buf.len() < RING_WRITE_MIN {
            // A small buffered write through the ring is handed to a kernel
            // worker thread (ext4 cannot complete it inline): two context
            // switches per write. Measured under a 4 KiB random write load
            // on three nodes: 395 us per write through the ring, 50 us with
            // pwrite (docs/benchmarks.md, "Where a 4 KiB write's time goes").
            return PositionalIo.write_all_at(file, buf, offset);
        }
        // The pieces (see WRITE_CHUNK_MAX) go to the kernel together, a
        // ring's worth at a time.
        let pieces: Vec<(usize, usize)> = write_chunks(offset, buf.len()).collect();
        for batch in pieces.chunks(RING_ENTRIES as usize) {
            let entries: Vec<_> = batch
                .iter()
                .map(|&(at, len)| {
                    opcode::Write::new(types::Fd(file.as_raw_fd()), buf[at..].as_ptr(), len as u32)
                        .offset(offset + at as u64)
                        .build()
                })
                .collect();
            for (&(at, len), result) in batch.iter().zip(self.run(&entries)?) {
                if result < 0 {
                    return Err(io::Error::from_raw_os_error(-result));
                }
                // A short write (rare on a regular file): the rest of the
                // piece the plain way.
                let written = result as usize;
                if written < len {
                    let from = at + written;
                    file.write_all_at(&buf[from..at + len], offset + from as u64)?;
                }
            }
        }
        Ok(())
    }

    fn sync_data(&self, files: &[&File]) -> io::Result<()> {
        use io_uring::{opcode, types};
        // io_uring hands every fsync to a kernel worker thread: for a
        // single file that hop only adds latency.
        if let [file] = files {
            return file.sync_data();
        }
        for chunk in files.chunks(RING_ENTRIES as usize) {
            let entries: Vec<_> = chunk
                .iter()
                .map(|f| {
                    opcode::Fsync::new(types::Fd(f.as_raw_fd()))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                })
                .collect();
            if let Some(&e) = self.run(&entries)?.iter().find(|&&r| r < 0) {
                return Err(io::Error::from_raw_os_error(-e));
            }
        }
        Ok(())
    }
}

/// Which [`FileIo`] a store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FileIoKind {
    /// io_uring if it can be set up here, else positional.
    #[default]
    Auto,
    IoUring,
    Positional,
}

/// The backend for `kind`; `Auto` falls back to positional I/O, saying why.
pub fn file_io(kind: FileIoKind) -> io::Result<Box<dyn FileIo>> {
    match kind {
        FileIoKind::Positional => Ok(Box::new(PositionalIo)),
        FileIoKind::IoUring => Ok(Box::new(UringIo::probe()?)),
        FileIoKind::Auto => match UringIo::probe() {
            Ok(u) => Ok(Box::new(u)),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}); the object store uses positional I/O");
                Ok(Box::new(PositionalIo))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(io: &dyn FileIo) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let data: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
        io.write_all_at(&file, &data, 4096).unwrap();
        // A write split into pieces, starting and ending between boundaries:
        // long enough for the ring (RING_WRITE_MIN), and for more pieces than
        // one submission takes.
        let long: Vec<u8> = (0..(RING_ENTRIES as usize + 2) * WRITE_CHUNK_MAX + 999)
            .map(|i| (i * 13 % 241) as u8)
            .collect();
        let long_at = 5 * WRITE_CHUNK_MAX as u64 - 3000;
        io.write_all_at(&file, &long, long_at).unwrap();
        let other = std::fs::File::create(dir.path().join("g")).unwrap();
        io.sync_data(&[&file, &other]).unwrap();
        let mut back = vec![0u8; data.len()];
        assert_eq!(io.read_at(&file, &mut back, 4096).unwrap(), data.len());
        assert_eq!(back, data);
        // Reading past the end is short, not an error.
        let mut tail = vec![0u8; long.len() + 100];
        assert_eq!(io.read_at(&file, &mut tail, long_at).unwrap(), long.len());
        assert_eq!(&tail[..long.len()], &long[..]);
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(whole[4096..4096 + data.len()], data[..]);
        assert_eq!(whole[long_at as usize..], long[..]);
        let read_only = std::fs::File::open(&path).unwrap();
        let e = io.write_all_at(&read_only, b"x", 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    }

    #[test]
    fn long_writes_split_on_chunk_boundaries_and_cover_every_byte() {
        const K: usize = 1024;
        let pieces: Vec<_> = write_chunks(60 * K as u64, 200 * K).collect();
        assert_eq!(
            pieces,
            [
                (0, 4 * K),
                (4 * K, 64 * K),
                (68 * K, 64 * K),
                (132 * K, 64 * K),
                (196 * K, 4 * K)
            ]
        );
        for (offset, len) in [(0u64, 1usize), (0, 64 * K), (1, 64 * K), (4 << 20, 4 << 20)] {
            let pieces: Vec<_> = write_chunks(offset, len).collect();
            let mut next = 0;
            for &(at, piece) in &pieces {
                assert_eq!(at, next, "pieces are contiguous");
                let start = offset + at as u64;
                let end = start + piece as u64 - 1;
                assert_eq!(
                    start / 65536,
                    end / 65536,
                    "{start}..={end} crosses a boundary"
                );
                next = at + piece;
            }
            assert_eq!(next, len, "pieces cover the write");
        }
        assert_eq!(write_chunks(7, 0).count(), 0);
    }

    #[test]
    fn both_backends_read_write_and_sync_alike() {
        exercise(&PositionalIo);
        match UringIo::probe() {
            Ok(u) => exercise(&u),
            // Not a pass in disguise: say it, so a run without io_uring shows.
            Err(e) => eprintln!("SKIPPED io_uring half: cannot set up a ring here: {e}"),
        }
    }
}
