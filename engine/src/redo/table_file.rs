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
use super::payload::LogRecord;
use super::segment::{encode_frame, frame_at, FRAME_HEADER_LEN};
use crate::engine::{Engine, TableHandle};
use crate::ids::{Lsn, Tid};
use crate::txn::{RowBatch, ScanCursor};
use std::io::{self, Write};

/// First byte of the end frame.
pub const END_MARK: u8 = 0xFE;
/// Committed rows per rows frame.
pub const ROWS_PER_FRAME: usize = 1024;

/// Writes a framed file (call outside the engine scope: it allocates privately).
pub struct TableWriter {
    f: io::BufWriter<std::fs::File>,
    frame: Vec<u8>,
    payload: Vec<u8>,
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
            frame: Vec::new(),
            payload: Vec::new(),
            frames: 0,
            bytes: HEADER_LEN as u64,
            rows: 0,
            max_tid: Tid::NONE,
        })
    }

    /// Appends one frame holding `payload`.
    pub fn emit(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        encode_frame(&mut self.frame, self.frames, payload);
        self.frames += 1;
        self.bytes += self.frame.len() as u64;
        self.f.write_all(&self.frame)
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
        let mut rows = Vec::with_capacity(ROWS_PER_FRAME);
        loop {
            // A read-committed scan never conflicts.
            txn.scan(t, &mut cursor, u32::MAX, &mut batch, ROWS_PER_FRAME)
                .map_err(|e| io::Error::other(e.to_string()))?;
            while let Some(r) = batch.next() {
                self.max_tid = self.max_tid.max(r.tid);
                rows.push((r.rowid, r.tid, r.data.to_vec()));
            }
            if rows.len() >= ROWS_PER_FRAME || (cursor.done() && !rows.is_empty()) {
                self.rows += rows.len() as u64;
                self.record(&LogRecord::Rows {
                    table,
                    rows: std::mem::take(&mut rows),
                })?;
                report(self);
            }
            if cursor.done() {
                break;
            }
        }
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
