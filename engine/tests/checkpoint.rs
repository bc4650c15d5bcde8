//! Fuzzy checkpoints through the shared log: taken while four threads write, then
//! more writes, then recovery (checkpoint + log from its start LSN) must rebuild the
//! same rows; covered segments are gone; incomplete and corrupt checkpoints.

mod common;

use common::*;
use memfdw_engine::recovery::{recover_engine, RecoveryError};
use memfdw_engine::redo::checkpoint::{write_checkpoint, CheckpointError, CHECKPOINT_FILE};
use memfdw_engine::redo::files::segments;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::redo::RedoSink;
use memfdw_engine::*;

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit: 1 << 30,
    }
}

fn fresh_dir(name: &str) -> String {
    let dir = format!("/tmp/memfdw-ckpt-{name}-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn logged_engine(dir: &str) -> (&'static Engine, &'static SharedLog) {
    let log: &'static SharedLog = Box::leak(SharedLog::start(dir, Lsn(0), 64 << 10).unwrap());
    let e: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(LogSink(log)))));
    (e, log)
}

#[test]
fn checkpoint_under_concurrent_writes_then_recovery_rebuilds_everything() {
    let dir = fresh_dir("live");
    let (a, log) = logged_engine(&dir);
    a.create_table(table_id(1), table_def()).unwrap();
    a.create_table(table_id(2), table_def()).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || run_worker(a, 1 + (w as u32 % 2), w, 40 + w as u64, 600, 0))
        })
        .collect();
    // Checkpoints while the writers run.
    let mut infos = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        match write_checkpoint(a, log) {
            Ok(i) => infos.push(i),
            Err(CheckpointError::Busy) => {}
            Err(e) => panic!("{e}"),
        }
    }
    writers.into_iter().for_each(|t| t.join().unwrap());
    assert!(
        infos.iter().filter(|i| i.rows > 0).count() >= 2,
        "checkpoints saw the writes: {infos:?}"
    );
    assert!(
        infos.iter().any(|i| i.segments_removed > 0),
        "covered segments are deleted: {infos:?}"
    );
    assert!(infos.iter().all(|i| i.tables == 2));
    // A table created after the last checkpoint, and one dropped after it.
    a.create_table(table_id(3), table_def()).unwrap();
    let t3 = a.table(table_id(3)).unwrap();
    let mut txn = a.begin();
    txn.insert(
        &t3,
        &pack(&t3.layout, 1, 1, "after"),
        Stmt { cid: 0, sub: 1 },
    )
    .unwrap();
    txn.commit().unwrap();
    drop(t3);
    assert!(a.drop_table(table_id(2)).unwrap());

    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert!(r.truncated.is_none());
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    assert_eq!(scan_all(b, 3), scan_all(a, 3));
    assert!(b.table(table_id(2)).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_incomplete_checkpoint_is_ignored_and_a_corrupt_one_stops_recovery() {
    let dir = fresh_dir("bad");
    let (a, log) = logged_engine(&dir);
    a.create_table(table_id(1), table_def()).unwrap();
    run_worker(a, 1, 0, 7, 300, 0);
    write_checkpoint(a, log).unwrap();
    run_worker(a, 1, 1, 8, 100, 0);
    // A checkpoint that crashed before its rename: ignored (and removed).
    std::fs::write(format!("{dir}/checkpoint.tmp"), b"MEMFDWCP garbage").unwrap();
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    recover_engine(b, &dir).unwrap();
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    assert!(!std::path::Path::new(&format!("{dir}/checkpoint.tmp")).exists());
    // A damaged checkpoint (its segments are gone): an error naming it, nothing applied
    // from past the damage.
    let path = format!("{dir}/{CHECKPOINT_FILE}");
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x10;
    std::fs::write(&path, &data).unwrap();
    let c: &'static Engine = Box::leak(Engine::new(config(), None));
    match recover_engine(c, &dir).unwrap_err() {
        RecoveryError::Checkpoint(CheckpointError::Corrupt { file, .. }) => {
            assert!(file.ends_with(CHECKPOINT_FILE))
        }
        e => panic!("unexpected {e}"),
    }
    // Cut short: also an error.
    std::fs::write(&path, &data[..mid]).unwrap();
    let d: &'static Engine = Box::leak(Engine::new(config(), None));
    assert!(recover_engine(d, &dir).is_err());
    assert!(!segments(&dir).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log with a checkpoint in the middle: small segments, rows before and after.
fn log_with_checkpoint(name: &str) -> (String, &'static Engine) {
    let dir = fresh_dir(name);
    // Small segments: the checkpoint deletes some.
    let log: &'static SharedLog = Box::leak(SharedLog::start(&dir, Lsn(0), 8 << 10).unwrap());
    let a: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(LogSink(log)))));
    a.create_table(table_id(1), table_def()).unwrap();
    run_worker(a, 1, 0, 11, 400, 0);
    let info = write_checkpoint(a, log).unwrap();
    assert!(info.segments_removed > 0, "{info:?}");
    run_worker(a, 1, 1, 12, 400, 0);
    log.make_durable(log.written_lsn()).unwrap();
    log.update_durable_marker().unwrap();
    (dir, a)
}

fn incomplete(dir: &str) -> String {
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    match recover_engine(b, dir) {
        Err(RecoveryError::Incomplete { what, .. }) => what,
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("recovery succeeded with data missing"),
    }
}

#[test]
fn a_deleted_checkpoint_is_an_error_not_a_silent_loss() {
    let (dir, a) = log_with_checkpoint("no-ckpt");
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    recover_engine(b, &dir).unwrap();
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    std::fs::remove_file(format!("{dir}/{CHECKPOINT_FILE}")).unwrap();
    let what = incomplete(&dir);
    assert!(
        what.contains("checkpoint") && what.contains("missing"),
        "{what}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_deleted_segment_the_checkpoint_needs_is_an_error() {
    let (dir, _a) = log_with_checkpoint("no-seg");
    let first = segments(&dir).unwrap().remove(0);
    std::fs::remove_file(format!("{dir}/{first}")).unwrap();
    let what = incomplete(&dir);
    assert!(what.contains("are missing"), "{what}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_deleted_control_file_is_an_error_and_an_empty_directory_is_a_fresh_start() {
    let (dir, _a) = log_with_checkpoint("no-control");
    std::fs::remove_file(format!("{dir}/control")).unwrap();
    let what = incomplete(&dir);
    assert!(what.contains("control file"), "{what}");
    let empty = fresh_dir("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &empty).unwrap();
    assert_eq!(r.end_lsn, Lsn(0));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn a_tail_cut_below_the_durable_mark_is_an_error_and_is_not_cut_further() {
    let (dir, _a) = log_with_checkpoint("cut");
    let last = segments(&dir).unwrap().pop().unwrap();
    let path = format!("{dir}/{last}");
    let len = frames_end(&path);
    // Lose the last few hundred bytes that were synced and recorded as durable.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 300).unwrap();
    drop(f);
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let e = recover_engine(b, &dir).unwrap_err();
    assert!(
        e.to_string().contains("durable"),
        "names the lost acknowledged data: {e}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len - 300,
        "the damaged file is left as it is"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bytes_past_the_durable_mark_are_still_a_torn_tail() {
    let dir = fresh_dir("torn-ok");
    let (a, log) = logged_engine(&dir);
    a.create_table(table_id(1), table_def()).unwrap();
    run_worker(a, 1, 0, 13, 50, 0);
    log.make_durable(log.written_lsn()).unwrap();
    log.update_durable_marker().unwrap();
    let marked = log.written_lsn();
    // More commits, not yet recorded as durable in the control file, then a torn
    // write at the end.
    run_worker(a, 1, 1, 14, 50, 0);
    let last = segments(&dir).unwrap().pop().unwrap();
    let path = format!("{dir}/{last}");
    let len = frames_end(&path);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert!(r.truncated.is_some());
    assert!(r.end_lsn >= marked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deleting_every_segment_after_a_checkpoint_is_an_error() {
    let (dir, _a) = log_with_checkpoint("no-segs");
    for s in segments(&dir).unwrap() {
        std::fs::remove_file(format!("{dir}/{s}")).unwrap();
    }
    let what = incomplete(&dir);
    assert!(what.contains("no segment"), "{what}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Segments are written out to their full size in advance (zeros); recovery reads the
/// zero tail of sealed segments and of the last one as their end, not as damage.
#[test]
fn segments_written_out_in_advance_end_at_their_zero_tail() {
    let dir = fresh_dir("zero-tail");
    let (a, log) = logged_engine(&dir);
    a.create_table(table_id(1), table_def()).unwrap();
    // The first rotation takes the spare segment (written out here as the background
    // worker does), the others write theirs out themselves.
    assert!(log.prepare_spare().unwrap());
    run_worker(a, 1, 0, 21, 3000, 0);
    log.make_durable(log.written_lsn()).unwrap();
    log.update_durable_marker().unwrap();
    let (from_spare, created) = log.segments_begun();
    assert_eq!(from_spare, 1);
    assert!(created >= 1);
    let segs = segments(&dir).unwrap();
    assert!(segs.len() > 2, "rotations happened: {segs:?}");
    for s in &segs {
        let path = format!("{dir}/{s}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 10, "{s}");
        assert!(frames_end(&path) < 64 << 10, "{s} has a zero tail");
    }
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert!(r.truncated.is_none(), "a zero tail is no torn write");
    assert_eq!(r.end_lsn, log.written_lsn());
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint holds a table's indexes after its rows, so loading it builds each
/// B+tree from its keys sorted: an index whose keys are not in row order (built by
/// CREATE INDEX, so full) comes back no larger, where filling it row by row made it
/// about half as large again (and a full engine could not recover).
#[test]
fn a_checkpoint_loads_b_tree_indexes_sorted() {
    let dir = fresh_dir("sorted");
    let (a, log) = logged_engine(&dir);
    a.create_table(table_id(1), table_def()).unwrap();
    let t = a.table(table_id(1)).unwrap();
    let mut txn = a.begin();
    for i in 0..50_000i64 {
        // Keys in an order unrelated to the row ids.
        let key = (i * 7919) % 50_021;
        txn.insert(&t, &pack(&t.layout, 1, key, "x"), Stmt { cid: 0, sub: 1 })
            .unwrap();
    }
    txn.commit().unwrap();
    let mut txn = a.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: 1,
            name: "by_key".into(),
            columns: vec![1],
            unique: true,
            primary: false,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    drop(t);
    write_checkpoint(a, log).unwrap();
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    recover_engine(b, &dir).unwrap();
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    let bytes = |e: &'static Engine| {
        let m = e.table_memory(table_id(1)).unwrap();
        assert!(!m.indexes[0].estimated, "a B+tree");
        (m.indexes[0].entries, m.indexes[0].entry_bytes)
    };
    let (before, after) = (bytes(a), bytes(b));
    assert_eq!(before.0, 50_000);
    assert_eq!(after.0, before.0);
    assert!(after.1 <= before.1, "{after:?} vs {before:?}");
    // The recovered index answers lookups.
    let t = b.table(table_id(1)).unwrap();
    assert_eq!(t.index_entries(1), Some(50_000));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows frames hold `ROWS_PER_FRAME` rows each, encoded straight from the scan's
/// batches: tables of 0, 1, exactly a frame, a frame and one, and several frames of
/// rows of many lengths (empty values to 8 KiB) come back whole, and the checkpoint
/// counts the frames a table of that many rows needs. (The file, about 20 MB, is
/// written out in 4 MiB chunks as it is written.)
#[test]
fn checkpoint_rows_frames_hold_every_row_at_each_frame_boundary() {
    use memfdw_engine::redo::table_file::ROWS_PER_FRAME;
    let dir = fresh_dir("frames");
    let (a, log) = logged_engine(&dir);
    let sizes = [
        0,
        1,
        ROWS_PER_FRAME,
        ROWS_PER_FRAME + 1,
        3 * ROWS_PER_FRAME + 17,
    ];
    for (n, &rows) in sizes.iter().enumerate() {
        let rel = 1 + n as u32;
        a.create_table(table_id(rel), table_def()).unwrap();
        let t = a.table(table_id(rel)).unwrap();
        let mut txn = a.begin();
        for i in 0..rows as i64 {
            let val = "v".repeat((i as usize * 37) % 8193);
            txn.insert(
                &t,
                &pack(&t.layout, rel as i32, i, &val),
                Stmt { cid: 0, sub: 1 },
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }
    let info = write_checkpoint(a, log).unwrap();
    let total: usize = sizes.iter().sum();
    assert_eq!(info.rows, total as u64);
    assert_eq!(info.tables, sizes.len());
    // A create-table frame per table, and its rows in frames of ROWS_PER_FRAME.
    let row_frames: usize = sizes.iter().map(|n| n.div_ceil(ROWS_PER_FRAME)).sum();
    assert_eq!(
        info.frames,
        (sizes.len() + row_frames + 1) as u64,
        "{info:?}"
    );
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    recover_engine(b, &dir).unwrap();
    for (n, &rows) in sizes.iter().enumerate() {
        let rel = 1 + n as u32;
        let got = scan_all(b, rel);
        assert_eq!(got.len(), rows, "table {rel}");
        assert_eq!(got, scan_all(a, rel), "table {rel}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
