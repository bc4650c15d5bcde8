//! Recovery: rebuild an engine from its data directory at start-up. Loads the newest
//! complete checkpoint, then replays the redo log from the checkpoint's start LSN
//! through one [`Replayer`], cutting a torn tail; reports progress about once a second
//! and stops when asked to (a shutdown).
//!
//! Errors name what is wrong and where: a file and offset for a corrupt log or
//! checkpoint ([`crate::redo::segment::LogError`], [`CheckpointError`]), the LSN of a
//! record that cannot be applied.

mod replayer;

pub use crate::redo::segment::{LoadedCheckpoint, Recovered, Truncation};
pub use replayer::Replayer;

use crate::engine::Engine;
use crate::ids::Lsn;
use crate::redo::checkpoint::{self, CheckpointError};
use crate::redo::control;
use crate::redo::files::list_segments;
use crate::redo::segment::{self, LogError};
use crate::redo::storage::{FsDir, LogDir};
use crate::scope;
use std::path::Path;

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("redo record at LSN {lsn:X}: {what}")]
    Record { lsn: Lsn, what: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("recovery was interrupted")]
    Interrupted,
    /// Something recovery needs is missing: a checkpoint, segments, or the end of the
    /// log up to where it was known durable.
    #[error("redo log in {dir} is incomplete: {what}")]
    Incomplete { dir: String, what: String },
}

/// Replays every valid record of the log in `dir` into `engine` (cutting a torn tail).
pub fn recover_engine(engine: &'static Engine, dir: &str) -> Result<Recovered, RecoveryError> {
    recover_engine_with_progress(engine, dir, |_| true)
}

/// Progress of a recovery, reported about once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// "checkpoint" while the checkpoint loads, then "log".
    pub phase: &'static str,
    /// Frames of the checkpoint, or records of the log, applied so far.
    pub records: u64,
    /// Bytes of them.
    pub bytes: u64,
    /// Since recovery started.
    pub seconds: f64,
}

/// [`recover_engine`], calling `progress` about once a second (while the checkpoint
/// loads and while the log replays); recovery stops with
/// [`RecoveryError::Interrupted`] when it returns false (a shutdown request).
pub fn recover_engine_with_progress(
    engine: &'static Engine,
    dir: &str,
    progress: impl FnMut(Progress) -> bool,
) -> Result<Recovered, RecoveryError> {
    recover_engine_with(engine, dir, progress, |_| true)
}

/// [`recover_engine_with_progress`], applying a commit tagged with a PostgreSQL
/// transaction id only if `committed` says that transaction committed (see
/// [`crate::redo::payload`]).
pub fn recover_engine_with(
    engine: &'static Engine,
    dir: &str,
    mut progress: impl FnMut(Progress) -> bool,
    committed: fn(u32) -> bool,
) -> Result<Recovered, RecoveryError> {
    let started = std::time::Instant::now();
    let mut last_report = started;
    let (mut records, mut bytes) = (0u64, 0u64);
    let fs = scope::outside(|| FsDir::open(dir)).map_err(LogError::Io)?;
    let threads = crate::threads::helper_threads();
    let mut replayer = Replayer::new(engine, threads);
    replayer.set_commit_oracle(committed);
    replayer.set_spill_dir(std::path::Path::new(dir).join(crate::unload::SPILL_DIR));
    let mut tick = |frames: u64, at: u64| {
        if last_report.elapsed().as_secs_f64() < 1.0 {
            return true;
        }
        last_report = std::time::Instant::now();
        progress(Progress {
            phase: "checkpoint",
            records: frames,
            bytes: at,
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    let incomplete = |what: String| RecoveryError::Incomplete {
        dir: dir.to_owned(),
        what,
    };
    let control = scope::outside(|| control::read(&fs))?;
    let segs = scope::outside(|| list_segments(&fs)).map_err(LogError::Io)?;
    let has_checkpoint = Path::new(dir).join(checkpoint::CHECKPOINT_FILE).exists();
    let Some(control) = control else {
        if !segs.is_empty() || has_checkpoint {
            return Err(incomplete(format!(
                "the control file \"{}\" is missing",
                control::CONTROL_FILE
            )));
        }
        // A fresh directory: nothing to recover.
        return Ok(Recovered::default());
    };
    let loaded = match checkpoint::load_checkpoint(&mut replayer, dir, &mut tick) {
        Err(CheckpointError::Interrupted) => return Err(RecoveryError::Interrupted),
        r => r?,
    };
    if let Some(c) = control.checkpoint {
        match loaded {
            None => {
                return Err(incomplete(format!(
                    "the checkpoint at LSN {c:X} is missing (file \"{}\")",
                    checkpoint::CHECKPOINT_FILE
                )))
            }
            Some(s) if s < c => {
                return Err(incomplete(format!(
                    "the checkpoint file starts at LSN {s:X}, older than the last one taken at LSN {c:X}"
                )))
            }
            _ => {}
        }
    }
    // The log must reach back to where replay starts.
    let need = loaded.unwrap_or(control.origin);
    match segs.first() {
        Some((first, name)) if *first > need => {
            return Err(incomplete(format!(
                "segments before \"{name}\" (LSN {first:X}) are missing; replay must start at LSN {need:X}"
            )))
        }
        // Only a fresh directory whose first segment was never completed has none.
        None if loaded.is_some() || control.durable > control.origin => {
            return Err(incomplete(format!(
                "no segment is left, but the log was durable up to LSN {:X}{}",
                control.durable,
                if loaded.is_some() { " and a checkpoint was taken" } else { "" }
            )))
        }
        _ => {}
    }
    let start = loaded.unwrap_or_default();
    let checkpoint = loaded.map(|start_lsn| {
        let meta = std::fs::metadata(Path::new(dir).join(checkpoint::CHECKPOINT_FILE)).ok();
        LoadedCheckpoint {
            start_lsn,
            bytes: meta.as_ref().map_or(0, |m| m.len()),
            unix_ms: meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
        }
    });
    let mut failure = None;
    let r = scope::outside(|| {
        segment::recover_frames(&fs, control.durable, |lsn, data, range| {
            let payload = &data[range.clone()];
            if lsn < start {
                return Ok(()); // in the checkpoint already
            }
            records += 1;
            bytes += payload.len() as u64;
            if last_report.elapsed().as_secs_f64() >= 1.0 {
                last_report = std::time::Instant::now();
                let go_on = progress(Progress {
                    phase: "log",
                    records,
                    bytes,
                    seconds: started.elapsed().as_secs_f64(),
                });
                if !go_on {
                    failure = Some(RecoveryError::Interrupted);
                    return Err(LogError::Corrupt {
                        file: String::new(),
                        offset: lsn.get(),
                        what: "recovery interrupted",
                    });
                }
            }
            if let Err(what) = replayer
                .apply_in_segment(data, range)
                .map_err(|e| e.to_string())
            {
                failure = Some(RecoveryError::Record { lsn, what });
                // Stop reading: nothing after a bad record is applied.
                return Err(LogError::Corrupt {
                    file: String::new(),
                    offset: lsn.get(),
                    what: "record could not be applied",
                });
            }
            Ok(())
        })
    });
    let r = match (r, failure) {
        (_, Some(f)) => return Err(f),
        (r, None) => r?,
    };
    let mut r = r;
    if segs.is_empty() {
        r.origin = need;
        r.end_lsn = need;
    }
    if r.end_lsn < need {
        return Err(incomplete(format!(
            "the log ends at LSN {:X}, before the checkpoint's start at LSN {need:X}",
            r.end_lsn
        )));
    }
    if r.end_lsn < control.durable {
        return Err(incomplete(format!(
            "the log ends at LSN {:X}, but it was durable up to LSN {:X}: acknowledged commits are missing{}",
            r.end_lsn,
            control.durable,
            r.truncated
                .as_ref()
                .map(|t| format!(" (damaged at offset {} of \"{}\")", t.offset, t.file))
                .unwrap_or_default()
        )));
    }
    // What was read is durable from now on (the control file will say so).
    if let Some((_, last)) = scope::outside(|| list_segments(&fs))
        .map_err(LogError::Io)?
        .last()
    {
        scope::outside(|| fs.sync(last)).map_err(LogError::Io)?;
    }
    r.checkpoint = checkpoint;
    r.aborted_commits = replayer.aborted_commits();
    r.incomplete_commits = replayer.finish().map_err(|e| RecoveryError::Record {
        lsn: r.end_lsn,
        what: format!("building the indexes: {e}"),
    })?;
    Ok(r)
}
