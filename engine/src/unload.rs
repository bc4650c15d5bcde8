//! Unloading a table from memory and loading it back (`memfdw.unload` and
//! `memfdw.load`).
//!
//! A table's [`Residency`] says where its rows are: in memory (loaded), in a spill
//! file under the data directory's `spill/` (spilled), or nowhere (discarded: only the
//! definition is kept). Changing it is a replacement, as TRUNCATE is (see
//! `crate::truncate`): the transaction gets an empty twin with the new residency (for
//! a load, filled with the spill file's rows, with their row ids and TIDs); its commit
//! logs a residency entry before its rows and puts the twin in the catalog. So after
//! a crash a table is in its old state or its new one, never between.
//!
//! A spill file is a framed table file (see `redo::table_file`): the table's
//! definition, indexes and committed rows, with CRC32 per frame and an end frame.
//!
//! # The life of a spill file
//! 1. An unload pins the file's name as in flight (in the engine, shared) before it
//!    creates the file; writes it; syncs it and the directory; then replaces the
//!    table. Its transaction unpins the name when it ends, committed or not.
//! 2. A spilled table names its file in the catalog, and checkpoints write the name.
//! 3. A load reads the file; its commit's residency entry names it, and replay reads
//!    it again. So its commit pins the file until a checkpoint that began after it
//!    (that checkpoint holds the loaded rows, and recovery starts after the entry).
//! 4. After each checkpoint, the sweep deletes the spill files that no table in the
//!    catalog, no pin and the checkpoint itself names. Nothing else deletes them: a
//!    transaction that aborted, a dropped table or database leaves its file to the
//!    next sweep.
//!
//! Invariant: a file that recovery may read (named by the last complete checkpoint,
//! or by a residency entry in the log after its start) is never deleted.

use crate::engine::{Engine, TableHandle};
use crate::error::{Error, Result};
use crate::ids::{Lsn, Tid};
use crate::redo::payload::{decode_rows, LogRecord, RowRef, ROWS};
use crate::redo::table_file::{FrameReader, TableWriter};
use crate::scope;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The directory of spill files, under memfdw's data directory.
pub const SPILL_DIR: &str = "spill";
const MAGIC: &[u8; 8] = b"MEMFDWSP";
const VERSION: u32 = 1;
const SUFFIX: &str = ".spill";

/// Where a table's rows are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Residency {
    /// In memory: the usual state.
    Loaded,
    /// In a spill file; the table in memory is empty and refuses to be read.
    Spilled(SpillFile),
    /// Gone: only the definition is kept.
    Discarded,
}

/// A spill file: its name under [`SPILL_DIR`], the rows and bytes it holds, and the
/// newest TID among its rows (the engine's TIDs must stay above it after a restart,
/// when the log that held it may be gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFile {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub max_tid: Tid,
}

impl Residency {
    /// `loaded`, `spilled` or `discarded`.
    pub fn state(&self) -> &'static str {
        match self {
            Residency::Loaded => "loaded",
            Residency::Spilled(_) => "spilled",
            Residency::Discarded => "discarded",
        }
    }

    pub fn spill_file(&self) -> Option<&SpillFile> {
        match self {
            Residency::Spilled(f) => Some(f),
            _ => None,
        }
    }
}

/// Is `name` one memfdw gives spill files (`{database}_{relation}_{hex}.spill`)? A
/// name read from a damaged log must not reach outside the spill directory.
pub fn valid_spill_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    let parts: Vec<&str> = stem.split('_').collect();
    parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && !parts[2].is_empty()
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What an unload does with the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadMode {
    Spill,
    Discard,
}

impl Engine {
    /// Counts a checkpoint that is beginning; returns its number (see the module
    /// documentation). Called before the checkpoint takes its start LSN.
    pub(crate) fn checkpoint_begun(&self) -> u64 {
        self.checkpoints_begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Keeps spill file `name` until the sweep of a checkpoint numbered `until` or
    /// more (`u64::MAX`: until [`Engine::unpin_spill_file`]).
    pub(crate) fn pin_spill_file(&self, name: &str, until: u64) {
        let _s = scope::enter();
        let name = name.to_owned();
        self.spill_pins.lock().push((name, until));
    }

    /// Drops the in-flight pin of `name` (its unload's transaction ended).
    pub(crate) fn unpin_spill_file(&self, name: &str) {
        let _s = scope::enter();
        let mut pins = self.spill_pins.lock();
        if let Some(i) = pins.iter().position(|(n, u)| n == name && *u == u64::MAX) {
            pins.swap_remove(i);
        }
    }

    /// After checkpoint number `seq`, which named the spill files `named`: deletes the
    /// files in `dir` that nothing needs any more (see the module documentation).
    /// Returns how many it deleted.
    pub fn sweep_spill_files(&self, dir: &Path, named: &[String], seq: u64) -> io::Result<usize> {
        // Listed first: a file created after the listing is not deleted, and one
        // created before it was pinned before it was created.
        let listed: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(SUFFIX))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if listed.is_empty() {
            return Ok(0);
        }
        // The pins, then the catalog, then the pins again: a load pins its file before
        // the catalog stops naming it, and an unload's transaction unpins its file
        // after the catalog names it, so each of them is seen in one of the three.
        let pinned = || -> Vec<String> {
            let _s = scope::enter();
            let mut pins = self.spill_pins.lock();
            pins.retain(|(_, until)| *until > seq);
            scope::outside(|| pins.iter().map(|(n, _)| n.clone()).collect())
        };
        let mut keep = pinned();
        for id in self.table_ids() {
            if let Some(t) = self.table(id) {
                if let Some(f) = t.residency().spill_file() {
                    keep.push(f.name.to_string());
                }
            }
        }
        keep.extend(pinned());
        keep.extend(named.iter().cloned());
        let mut deleted = 0;
        for name in listed {
            if !keep.contains(&name) {
                std::fs::remove_file(dir.join(&name))?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            crate::redo::files::sync_dir(dir)?;
        }
        Ok(deleted)
    }

    /// Writes the committed rows of `t` to a new spill file in `dir` (created if
    /// missing), synced with the directory. Its name is pinned as in flight: the
    /// caller unpins it when its transaction ends. Call outside the engine scope.
    pub(crate) fn write_spill_file(
        &'static self,
        t: &TableHandle,
        dir: &Path,
    ) -> Result<SpillFile> {
        let io_err = |e: io::Error| Error::SpillIo(format!("{}: {e}", dir.display()));
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
            if let Some(parent) = dir.parent() {
                crate::redo::files::sync_dir(parent).map_err(io_err)?;
            }
        }
        let (file, name) = loop {
            let name = format!(
                "{}_{}_{:x}{SUFFIX}",
                t.id.database,
                t.id.relation,
                unique_suffix()
            );
            self.pin_spill_file(&name, u64::MAX);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(&name))
            {
                Ok(f) => break (f, name),
                Err(e) => {
                    self.unpin_spill_file(&name);
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(io_err(e));
                    }
                }
            }
        };
        let written = (|| {
            let mut w = TableWriter::start(file, MAGIC, VERSION, Lsn(0))?;
            w.write_table(self, t, |_| {})?;
            let (rows, max_tid) = (w.rows, w.max_tid);
            let (file, bytes) = w.finish()?;
            drop(file);
            crate::redo::files::sync_dir(dir)?;
            Ok(SpillFile {
                name: name.clone(),
                rows,
                bytes,
                max_tid,
            })
        })();
        written.map_err(|e: io::Error| {
            let _ = std::fs::remove_file(dir.join(&name));
            self.unpin_spill_file(&name);
            Error::SpillIo(format!("{}: {e}", dir.join(&name).display()))
        })
    }

    /// Fills `twin` (an empty table nobody else can reach) with the rows of spill
    /// file `name` in `dir`, with their row ids and TIDs, by `threads` threads.
    /// Checks that the file is whole and holds this table's columns and indexes.
    /// Returns the rows loaded. `replay`: the load is replayed from the log (it may
    /// use the memory headroom, see `Engine::check_memory_for_replay`).
    pub(crate) fn read_spill_file(
        &'static self,
        twin: &TableHandle,
        dir: &Path,
        name: &str,
        threads: usize,
        replay: bool,
    ) -> Result<u64> {
        let path = dir.join(name);
        let corrupt = |offset: usize, what: &str| {
            Error::Corrupt(format!(
                "spill file \"{}\" is damaged at offset {offset}: {what}",
                path.display()
            ))
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::SpillIo(format!("{}: {e}", path.display())))?;
        // SAFETY: spill files are written once, before the commit that names them,
        // and never changed; the sweep deletes (unlinks) only files nothing names,
        // which leaves this mapping valid anyway.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::SpillIo(format!("{}: {e}", path.display())))?;
        let (mut frames, _) =
            FrameReader::open(&map, MAGIC, VERSION).map_err(|d| corrupt(d.offset, &d.what))?;
        // The twin's indexes (empty) are filled after its rows, from their keys
        // sorted: a B+tree filled in row order would be as large again when its keys
        // are in another order (a uuid key), and the load could fail where the table
        // fitted before it was unloaded.
        let detached = {
            let _s = crate::scope::enter();
            let list = twin.indexes();
            twin.set_indexes(Vec::new());
            list
        };
        let mut indexes = Vec::new();
        let mut rows: Vec<RowRef<'_>> = Vec::new();
        let mut seen_table = false;
        let mut loaded = 0u64;
        while let Some((at, payload)) = frames.next().map_err(|d| corrupt(d.offset, &d.what))? {
            if payload.first() == Some(&ROWS) {
                let batch = decode_rows(payload)
                    .map_err(|e| corrupt(at, &e.to_string()))?
                    .expect("a rows payload");
                if !seen_table || batch.iter().any(|r| r.table != twin.id) {
                    return Err(corrupt(at, "rows of another table"));
                }
                rows.extend(batch);
                if rows.len() >= 64 * 1024 {
                    loaded += rows.len() as u64;
                    self.fill_rows(twin, &rows, threads, replay)?;
                    rows.clear();
                }
                continue;
            }
            match LogRecord::decode(payload).map_err(|e| corrupt(at, &e.to_string()))? {
                LogRecord::CreateTable { table, def }
                    if !seen_table && table == twin.id && def.columns == twin.def.columns =>
                {
                    seen_table = true;
                }
                LogRecord::CreateIndex { table, def } if seen_table && table == twin.id => {
                    indexes.push(def);
                }
                _ => {
                    return Err(corrupt(
                        at,
                        "not the table's definition (columns or indexes differ)",
                    ))
                }
            }
        }
        let mut have: Vec<_> = detached.iter().map(|i| i.def.clone()).collect();
        have.sort_by_key(|d| d.id);
        indexes.sort_by_key(|d| d.id);
        if !seen_table || have != indexes {
            return Err(corrupt(0, "its indexes are not the table's"));
        }
        loaded += rows.len() as u64;
        self.fill_rows(twin, &rows, threads, replay)?;
        for index in detached.iter() {
            self.fill_index(twin, index, threads)?;
        }
        let _s = crate::scope::enter();
        twin.set_indexes(detached.to_vec());
        Ok(loaded)
    }
}

/// A suffix no other spill file of this data directory has had: the clock and the
/// process id (creation with `create_new` catches the impossible collision).
fn unique_suffix() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos << 32) | std::process::id() as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_names_are_checked() {
        assert!(valid_spill_name("5_16384_1a2b.spill"));
        for bad in [
            "../x_1_1.spill",
            "5_16384.spill",
            "5_16384_zz.spill",
            "5__1.spill",
            "5_1_1.spil",
            "5_1_1_1.spill",
            "",
        ] {
            assert!(!valid_spill_name(bad), "{bad}");
        }
    }
}
