//! Files of framed table records: checkpoints and spill files (see `crate::unload`).
//! Both are a header, frames numbered from 0 (each with its CRC32, as a log frame
//! whose "LSN" is the sequence number) and an end frame holding the frame count:
//!
//! ```text
//! file:  header | frame* | end frame
//! table: create table | rows* | create index* | residency?
//! end:   0xFE | frames u64
//! ```
//! One writer of tables ([`TableWriter::write_table`]) and one reader of frames
//! ([`FrameReader`]), so the two kinds of file cannot drift apart.

use super::files::{file_header, read_header, HEADER_LEN};
use super::payload::{LogRecord, RowsEncoder};
use super::segment::{frame_at, frame_header, FRAME_HEADER_LEN};
use crate::engine::{Engine, TableHandle};
use crate::ids::{Lsn, Tid};
use crate::txn::{RowBatch, ScanCursor};
use std::io::{self, Write};

/// First byte of the end frame.
pub const END_MARK: u8 = 0xFE;
/// Committed rows per rows frame.
pub const ROWS_PER_FRAME: usize = 1024;

/// Bytes a writer hands to the kernel between two requests to start writing them out.
const WRITEBACK_CHUNK: u64 = 4 << 20;

/// Writes a framed file (call outside the engine scope: it allocates privately).
///
/// A checkpoint writes every row of every table. Left dirty in the page cache, hundreds
/// of megabytes were written out at once by the final `fsync`, and the log's commit
/// syncs on the same device waited behind them: a 526 MB checkpoint (pgbench scale
/// 100) stalled single-client commits for about a second. So, as PostgreSQL's
/// `checkpoint_flush_after` does, the writer asks the kernel to start writing out each
/// 4 MiB it has written (`sync_file_range`), and waits for the 4 MiB before it to be
/// written: what is being written out ahead of a commit's sync stays a few MiB, and
/// the final `fsync` finds little to do (the same checkpoint: commit latency 2-4 ms on
/// average while it writes, at most 120-170 ms).
pub struct TableWriter {
    f: io::BufWriter<std::fs::File>,
    payload: Vec<u8>,
    /// File offset up to which write-out was requested.
    writeback_from: u64,
    /// File offset up to which write-out was waited for.
    waited_to: u64,
    /// The kernel has no `sync_file_range` (ENOSYS: a sandbox's filter, say): not
    /// asked again; the final `fsync` writes everything, as before.
    no_write_out: bool,
    /// Frames written so far (the end frame excluded).
    pub frames: u64,
    /// Bytes written so far (header included).
    pub bytes: u64,
    /// Rows written so far.
    pub rows: u64,
    /// The newest TID among them.
    pub max_tid: Tid,
}

impl TableWriter {
    /// Starts file `file` (already created) with a header of kind `magic`.
    pub fn start(file: std::fs::File, magic: &[u8; 8], version: u32, lsn: Lsn) -> io::Result<Self> {
        let mut f = io::BufWriter::with_capacity(1 << 20, file);
        f.write_all(&file_header(magic, version, lsn))?;
        Ok(TableWriter {
            f,
            payload: Vec::new(),
            writeback_from: 0,
            waited_to: 0,
            no_write_out: false,
            frames: 0,
            bytes: HEADER_LEN as u64,
            rows: 0,
            max_tid: Tid::NONE,
        })
    }

    /// Appends one frame holding `payload` (written from where it is: the header, then
    /// the payload, into the file's buffer).
    pub fn emit(&mut self, payload: &[u8]) -> io::Result<()> {
        let header = frame_header(self.frames, payload);
        self.frames += 1;
        self.bytes += (header.len() + payload.len()) as u64;
        self.f.write_all(&header)?;
        self.f.write_all(payload)?;
        self.write_out()
    }

    /// Once this writer has handed the kernel [`WRITEBACK_CHUNK`] or more since its last
    /// request, asks it to start writing that out and waits for the previous request's
    /// range to be written.
    ///
    /// Errors are returned, not left to the final `fsync`: a `sync_file_range` that
    /// waits consumes the file's write error (Linux reports it to one caller), so a
    /// failed write-out ignored here would let the final `fsync` succeed on a file
    /// with a hole (PostgreSQL treats a failed flush request the same way). Only a
    /// kernel without the call (ENOSYS, which consumed nothing) stops the requests.
    fn write_out(&mut self) -> io::Result<()> {
        let in_file = self.bytes - self.f.buffer().len() as u64;
        if self.no_write_out || in_file - self.writeback_from < WRITEBACK_CHUNK {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.f.get_ref().as_raw_fd();
            let range = |from: u64, to: u64, flags: std::ffi::c_uint| {
                // SAFETY: a plain system call on this writer's open file descriptor;
                // it reads no memory of ours.
                let r = unsafe {
                    libc::sync_file_range(
                        fd,
                        from as libc::off64_t,
                        (to - from) as libc::off64_t,
                        flags,
                    )
                };
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            };
            if let Err(e) = range(self.writeback_from, in_file, libc::SYNC_FILE_RANGE_WRITE) {
                if e.raw_os_error() == Some(libc::ENOSYS) {
                    self.no_write_out = true;
                    return Ok(());
                }
                return Err(e);
            }
            if self.waited_to < self.writeback_from {
                range(
                    self.waited_to,
                    self.writeback_from,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )?;
            }
        }
        self.waited_to = self.writeback_from;
        self.writeback_from = in_file;
        Ok(())
    }

    /// Appends a record.
    pub fn record(&mut self, rec: &LogRecord) -> io::Result<()> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        rec.encode(&mut payload);
        let r = self.emit(&payload);
        self.payload = payload;
        r
    }

    /// Writes table `t` as it is committed now: its definition, rows with their TIDs
    /// (`ROWS_PER_FRAME` to a frame), indexes, and residency if it is not loaded.
    /// `report()` is called after each frame of rows.
    ///
    /// Indexes after rows: loading a checkpoint builds each index over the rows from
    /// its keys sorted (a B+tree filled row by row would take up to half as much
    /// again when its keys are not in row order, and recovery could then run out of
    /// memory where the rows fitted before). Files written with indexes first (by
    /// earlier versions) load as well: the rows then maintain them. A spill file's
    /// reader takes index records anywhere after the table's.
    pub fn write_table(
        &mut self,
        engine: &'static Engine,
        t: &TableHandle,
        mut report: impl FnMut(&Self),
    ) -> io::Result<()> {
        let table = t.id;
        self.record(&LogRecord::CreateTable {
            table,
            def: t.def.clone(),
        })?;
        let mut txn = engine.begin();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        // The rows record being filled, encoded straight from the scan's batches (no
        // copy of each row of its own: a checkpoint writes every row of every table).
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let mut rows: Option<RowsEncoder> = None;
        let result = loop {
            // A read-committed scan never conflicts.
            if let Err(e) = txn.scan(t, &mut cursor, u32::MAX, &mut batch, ROWS_PER_FRAME) {
                break Err(io::Error::other(e.to_string()));
            }
            while let Some(r) = batch.next() {
                self.max_tid = self.max_tid.max(r.tid);
                rows.get_or_insert_with(|| RowsEncoder::start(&mut payload, table))
                    .push(&mut payload, r.rowid, r.tid, r.data);
            }
            let full = rows
                .as_ref()
                .is_some_and(|r| r.rows as usize >= ROWS_PER_FRAME || cursor.done());
            if full {
                let enc = rows.take().expect("checked above");
                self.rows += u64::from(enc.rows);
                enc.finish(&mut payload);
                if let Err(e) = self.emit(&payload) {
                    break Err(e);
                }
                payload.clear();
                report(self);
            }
            if cursor.done() {
                break Ok(());
            }
        };
        self.payload = payload;
        result?;
        let _ = txn.commit();
        for def in t.index_defs() {
            self.record(&LogRecord::CreateIndex { table, def })?;
        }
        if *t.residency() != crate::unload::Residency::Loaded {
            let residency = t.residency().clone();
            self.record(&LogRecord::Residency { table, residency })?;
        }
        Ok(())
    }

    /// Writes the end frame and syncs the file; returns it and its length.
    pub fn finish(mut self) -> io::Result<(std::fs::File, u64)> {
        let mut end = vec![END_MARK];
        end.extend_from_slice(&self.frames.to_le_bytes());
        self.emit(&end)?;
        let file = self.f.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((file, self.bytes))
    }
}

/// What is wrong with a framed file, and where.
#[derive(Debug)]
pub struct Damage {
    pub offset: usize,
    pub what: String,
}

/// Reads the frames of a framed file in order, checking each one's CRC and number,
/// and the end frame's count.
pub struct FrameReader<'a> {
    data: &'a [u8],
    /// Offset of the next frame.
    pub pos: usize,
    seq: u64,
    done: bool,
}

impl<'a> FrameReader<'a> {
    /// A reader of `data` if its header is of kind `magic`, format `version`; returns
    /// the header's LSN too.
    pub fn open(data: &'a [u8], magic: &[u8; 8], version: u32) -> Result<(Self, Lsn), Damage> {
        let damage = |what: String| Damage { offset: 0, what };
        let Some(lsn) = read_header(data, magic, version) else {
            if super::files::other_version(data, magic, version) {
                let v = u32::from_le_bytes(data[8..12].try_into().unwrap());
                return Err(damage(format!(
                    "file of format version {v} (this memfdw reads format {version})"
                )));
            }
            return Err(damage("bad header".into()));
        };
        Ok((
            FrameReader {
                data,
                pos: HEADER_LEN,
                seq: 0,
                done: false,
            },
            lsn,
        ))
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.seq
    }

    /// The next frame's payload (with its offset), or None after a valid end frame.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(usize, &'a [u8])>, Damage> {
        if self.done {
            return Ok(None);
        }
        let at = self.pos;
        let Some(len) = frame_at(self.data, at, self.seq) else {
            return Err(Damage {
                offset: at,
                what: "bad or missing frame (incomplete file?)".into(),
            });
        };
        let payload = &self.data[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len];
        if payload.first() == Some(&END_MARK) {
            if payload.len() != 9
                || u64::from_le_bytes(payload[1..9].try_into().unwrap()) != self.seq
            {
                return Err(Damage {
                    offset: at,
                    what: "bad end frame".into(),
                });
            }
            self.done = true;
            return Ok(None);
        }
        self.pos = at + FRAME_HEADER_LEN + len;
        self.seq += 1;
        Ok(Some((at, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed write-out request fails the write (a waiting `sync_file_range` would
    /// have consumed the file's error, and the final `fsync` would then pass): a
    /// character device refuses it, as a failing disk would.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_out_fails_the_file() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut w = TableWriter::start(f, b"MEMFDWTS", 1, Lsn(0)).unwrap();
        let payload = vec![7u8; 64 << 10];
        let mut failed = None;
        for i in 0..(2 * WRITEBACK_CHUNK / payload.len() as u64) {
            if let Err(e) = w.emit(&payload) {
                failed = Some((i, e));
                break;
            }
        }
        let (i, e) = failed.expect("the write-out request fails");
        assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{e}");
        // Not before a chunk was handed to the kernel.
        assert!((i + 1) * payload.len() as u64 >= WRITEBACK_CHUNK - (1 << 20));
    }
}
