//! Fuzzy checkpoints: a snapshot of every table, written while writers go on, after
//! which the log segments it covers are deleted.
//!
//! 1. Under the catalog lock, flip the log's checkpoint phase and take the start LSN;
//!    wait until every record appended before it is installed in memory, and make
//!    the log durable up to it.
//! 2. Scan every table (committed versions with their TIDs) into `checkpoint.tmp`, a
//!    framed table file (see [`super::table_file`]); sync it.
//! 3. Rename it to `checkpoint` (atomic), sync the directory: only now is it valid.
//! 4. Delete the segments that end at or before the start LSN, and the spill files
//!    nothing needs any more (see `crate::unload`).
//!
//! Recovery loads the checkpoint, then replays the log from its start LSN; rows the
//! scan saw newer than a replayed record win by TID (replay is last-writer-wins).

use super::files::{list_segments, sync_dir, HEADER_LEN};
use super::payload::{decode_rows, RowRef, ROWS};
use super::shared::SharedLog;
use super::table_file::{FrameReader, TableWriter};
use super::RedoSink;
use crate::engine::Engine;
use crate::ids::Lsn;
use crate::scope;
use std::io;
use std::path::Path;
use std::time::Instant;

pub const CHECKPOINT_FILE: &str = "checkpoint";
const TMP_FILE: &str = "checkpoint.tmp";
const MAGIC: &[u8; 8] = b"MEMFDWCP";

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    pub start_lsn: Lsn,
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
    pub segments_removed: usize,
    pub seconds: f64,
    /// Frames written (the end frame excluded).
    pub frames: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("a checkpoint is already running")]
    Busy,
    #[error("checkpoint I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("checkpoint file {file} is corrupt at offset {offset}: {what}")]
    Corrupt {
        file: String,
        offset: u64,
        what: String,
    },
    #[error("checkpoint loading was interrupted")]
    Interrupted,
}

/// Format 3: tables are named by (database, relation) (see `redo::payload`).
const VERSION: u32 = 3;

/// Writes a checkpoint of `engine` next to the log and deletes the segments it covers.
pub fn write_checkpoint(
    engine: &'static Engine,
    log: &SharedLog,
) -> Result<CheckpointInfo, CheckpointError> {
    write_checkpoint_reporting(engine, log, |_, _| {})
}

/// [`write_checkpoint`], calling `report(progress so far, tables to write)` after each
/// frame of rows and each table (a progress view).
pub fn write_checkpoint_reporting(
    engine: &'static Engine,
    log: &SharedLog,
    mut report: impl FnMut(&CheckpointInfo, u64),
) -> Result<CheckpointInfo, CheckpointError> {
    let started = Instant::now();
    // No table is redefined from before the start LSN until every table is written
    // (see `Engine::enter_redefine`).
    let gate = engine.close_redefines();
    // Counted before the start LSN is taken: a load whose commit ended before this
    // count is installed before the start LSN, so this checkpoint holds its rows (see
    // `crate::unload`).
    let seq = engine.checkpoint_begun();
    let Some((start, old_phase)) = engine.with_stable_catalog(|| log.begin_checkpoint()) else {
        return Err(CheckpointError::Busy);
    };
    struct Running<'a>(&'a SharedLog);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.end_checkpoint();
        }
    }
    let _running = Running(log);
    log.wait_installed(old_phase);
    log.make_durable(start)?;
    scope::outside(|| {
        let dir = Path::new(log.directory());
        let tmp = dir.join(TMP_FILE);
        let mut w = TableWriter::start(std::fs::File::create(&tmp)?, MAGIC, VERSION, start)?;
        let mut info = CheckpointInfo {
            start_lsn: start,
            tables: 0,
            rows: 0,
            bytes: w.bytes,
            segments_removed: 0,
            seconds: 0.0,
            frames: 0,
        };
        let progress = |info: &mut CheckpointInfo, w: &TableWriter| {
            info.rows = w.rows;
            info.bytes = w.bytes;
            info.frames = w.frames;
        };
        // Spill files the checkpoint names: kept by the sweep below.
        let mut spill_files = Vec::new();
        let ids = engine.table_ids();
        let total = ids.len() as u64;
        for table in ids {
            let Some(t) = engine.table(table) else {
                continue;
            };
            report(&info, total);
            info.tables += 1;
            if let Some(f) = t.residency().spill_file() {
                spill_files.push(f.name.clone());
            }
            w.write_table(engine, &t, |w| {
                progress(&mut info, w);
                report(&info, total);
            })?;
        }
        progress(&mut info, &w);
        report(&info, total);
        drop(gate);
        let (file, bytes) = w.finish()?;
        info.bytes = bytes;
        info.frames += 1;
        drop(file);
        std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
        sync_dir(dir)?;
        // Recovery now needs this checkpoint and the log from its start LSN: say so
        // before the segments it covers go.
        log.note_checkpoint(start)?;
        // Segments that end at or before the start LSN are covered.
        let segs = list_segments(log.dir())?;
        for (seg, next) in segs.iter().zip(segs.iter().skip(1)) {
            if next.0 <= start {
                log.dir().remove(&seg.1)?;
                info.segments_removed += 1;
            }
        }
        // Spill files nothing needs any more (see `crate::unload`): a failure to delete
        // one only leaves it for the next checkpoint.
        let _ = engine.sweep_spill_files(&dir.join(crate::unload::SPILL_DIR), &spill_files, seq);
        info.seconds = started.elapsed().as_secs_f64();
        log.checkpoint_done(start, info.bytes, info.seconds);
        Ok(info)
    })
}

/// Loads the checkpoint in `dir` through `replayer`, if there is one; returns its start
/// LSN. A leftover `checkpoint.tmp` (a checkpoint that never completed) is removed.
/// `tick(frames, bytes)` is called every 64 frames; loading stops with
/// [`CheckpointError::Interrupted`] when it returns false.
pub fn load_checkpoint(
    replayer: &mut crate::recovery::Replayer,
    dir: &str,
    tick: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Option<Lsn>, CheckpointError> {
    let dir = Path::new(dir);
    let _ = std::fs::remove_file(dir.join(TMP_FILE));
    let path = dir.join(CHECKPOINT_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |offset: usize, what: &str| CheckpointError::Corrupt {
        file: path.display().to_string(),
        offset: offset as u64,
        what: what.to_owned(),
    };
    if (file.metadata()?.len() as usize) < HEADER_LEN {
        return Err(corrupt(0, "bad header"));
    }
    // Mapped, not read: the rows are copied once, from the page cache into the arena.
    // SAFETY: nobody writes the checkpoint while recovery runs (the checkpointer starts
    // after it, and writes `checkpoint.tmp`, published by rename, never this file).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let data: &[u8] = &map;
    let (mut frames, start) = FrameReader::open(data, MAGIC, VERSION)
        .map_err(|d| corrupt(d.offset, &format!("checkpoint: {}", d.what)))?;
    // Rows of consecutive row frames, applied together (by several threads): every row
    // appears once in a checkpoint, so they are pairwise distinct. `batch_pos` is the
    // offset of the batch's first frame, named if applying it fails.
    let mut batch: Vec<RowRef<'_>> = Vec::new();
    let mut batch_pos = frames.pos;
    let flush = |replayer: &mut crate::recovery::Replayer,
                 batch: &mut Vec<RowRef<'_>>,
                 at: usize|
     -> Result<(), CheckpointError> {
        if !batch.is_empty() {
            replayer
                .apply_distinct_rows(batch)
                .map_err(|e| corrupt(at, &e.to_string()))?;
            batch.clear();
        }
        Ok(())
    };
    loop {
        let Some((pos, payload)) = frames.next().map_err(|d| corrupt(d.offset, &d.what))? else {
            flush(replayer, &mut batch, batch_pos)?;
            return Ok(Some(start));
        };
        let rows = if payload.first() == Some(&ROWS) {
            decode_rows(payload).map_err(|e| corrupt(pos, &e.to_string()))?
        } else {
            None
        };
        match rows {
            Some(rows) => {
                if batch.is_empty() {
                    batch_pos = pos;
                }
                batch.extend(rows);
                if batch.len() >= BATCH_ROWS {
                    flush(replayer, &mut batch, batch_pos)?;
                }
            }
            None => {
                flush(replayer, &mut batch, batch_pos)?;
                replayer
                    .apply(payload)
                    .map_err(|e| corrupt(pos, &e.to_string()))?;
            }
        }
        if frames.frames().is_multiple_of(64) && !tick(frames.frames(), frames.pos as u64) {
            return Err(CheckpointError::Interrupted);
        }
    }
}

/// Rows of a checkpoint applied as one batch at load.
const BATCH_ROWS: usize = 64 * 1024;
