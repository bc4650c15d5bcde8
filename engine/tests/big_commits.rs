//! Commits bigger than one redo record are logged as commit parts plus a commit
//! record, in consecutive frames; recovery applies them together or not at all.
//! (Here the record limit is mostly lowered to a few KB; in production it is 256 KiB.)

mod common;

use common::*;
use memfdw_engine::recovery::recover_engine;
use memfdw_engine::redo::files::{segment_name, segments};
use memfdw_engine::redo::payload::{LogRecord, COMMIT, COMMIT_PART};
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::redo::storage::FsDir;
use memfdw_engine::redo::RedoSink;
use memfdw_engine::*;

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit: 1 << 30,
    }
}

fn fresh_dir(name: &str) -> String {
    let dir = format!("/tmp/memfdw-big-{name}-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn logged_engine(dir: &str, max_record: usize) -> &'static Engine {
    let log: &'static SharedLog = Box::leak(SharedLog::start(dir, Lsn(0), 1 << 20).unwrap());
    log.set_max_record(max_record);
    Box::leak(Engine::new(config(), Some(Box::new(LogSink(log)))))
}

fn insert_rows(e: &'static Engine, oid: u32, worker: i32, keys: std::ops::Range<i64>) {
    let t = e.table(table_id(oid)).unwrap();
    let mut txn = e.begin();
    for k in keys {
        txn.insert(
            &t,
            &pack(&t.layout, worker, k, &format!("value {k:>40}")),
            Stmt { cid: 0, sub: 1 },
        )
        .unwrap();
    }
    txn.commit().unwrap();
}

/// Frame kinds in the log, in order (the payload's first byte).
fn kinds(dir: &str) -> Vec<u8> {
    let fs = FsDir::open(dir).unwrap();
    let mut out = Vec::new();
    memfdw_engine::redo::segment::recover(&fs, |_, p| {
        out.push(p[0]);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn a_commit_bigger_than_a_record_is_logged_in_parts_and_recovered_whole() {
    let dir = fresh_dir("whole");
    let a = logged_engine(&dir, 4096);
    a.create_table(table_id(1), table_def()).unwrap();
    insert_rows(a, 1, 0, 0..3);
    insert_rows(a, 1, 1, 0..500); // ~40 KB of after-images: about ten parts
    insert_rows(a, 1, 2, 0..3);
    let k = kinds(&dir);
    let parts = k.iter().filter(|&&b| b == COMMIT_PART).count();
    assert!(parts >= 8, "{k:?}");
    // The parts are consecutive and followed by their commit record.
    let first = k.iter().position(|&b| b == COMMIT_PART).unwrap();
    assert!(k[first..first + parts].iter().all(|&b| b == COMMIT_PART));
    assert_eq!(k[first + parts], COMMIT);
    assert!(!segments(&dir).unwrap().is_empty());

    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert_eq!(r.incomplete_commits, 0);
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    assert_eq!(scan_all(b, 1).len(), 506);
}

/// Without a smaller limit set, the shared log cuts a commit's record into parts of
/// at most 256 KiB, each written as it is encoded (see `RedoSink::append_stream`).
#[test]
fn a_big_commit_is_streamed_in_parts_of_at_most_256_kib() {
    let dir = fresh_dir("streamed");
    let log: &'static SharedLog = Box::leak(SharedLog::start(&dir, Lsn(0), 8 << 20).unwrap());
    let a: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(LogSink(log)))));
    a.create_table(table_id(1), table_def()).unwrap();
    insert_rows(a, 1, 0, 0..3);
    insert_rows(a, 1, 1, 0..20_000); // about 1.5 MB of after-images
    insert_rows(a, 1, 2, 0..3);
    let fs = FsDir::open(&dir).unwrap();
    let mut frames = Vec::new();
    memfdw_engine::redo::segment::recover(&fs, |_, p| {
        frames.push((p[0], p.len()));
        Ok(())
    })
    .unwrap();
    let parts: Vec<usize> = frames
        .iter()
        .filter(|f| f.0 == COMMIT_PART)
        .map(|f| f.1)
        .collect();
    assert!(parts.len() >= 5, "{frames:?}");
    assert!(
        parts.iter().all(|&n| n <= 256 << 10 && n > 200 << 10),
        "{parts:?}"
    );
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert_eq!(r.incomplete_commits, 0);
    assert_eq!(scan_all(b, 1), scan_all(a, 1));
    assert_eq!(scan_all(b, 1).len(), 20_006);
}

#[test]
fn a_torn_big_commit_is_dropped_whole() {
    let dir = fresh_dir("torn");
    let a = logged_engine(&dir, 4096);
    a.create_table(table_id(1), table_def()).unwrap();
    insert_rows(a, 1, 0, 0..3);
    insert_rows(a, 1, 1, 0..500);
    let seg = format!("{dir}/{}", segments(&dir).unwrap().last().unwrap());
    // Where the frames end (the segment is written out with zeros beyond).
    let len = frames_end(&seg);
    // Cut inside the parts, in the final commit record, and one byte short of its end:
    // never any row of the big commit, always the small one.
    for cut in [len / 2, len - 100, len - 1] {
        let copy = fresh_dir(&format!("torn-{cut}"));
        std::fs::create_dir_all(&copy).unwrap();
        for s in segments(&dir).unwrap() {
            std::fs::copy(format!("{dir}/{s}"), format!("{copy}/{s}")).unwrap();
        }
        std::fs::copy(format!("{dir}/control"), format!("{copy}/control")).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!(
                "{copy}/{}",
                segments(&dir).unwrap().last().unwrap()
            ))
            .unwrap();
        f.set_len(cut).unwrap();
        let b: &'static Engine = Box::leak(Engine::new(config(), None));
        let r = recover_engine(b, &copy).unwrap();
        assert!(r.truncated.is_some());
        assert_eq!(r.incomplete_commits, 1, "cut at {cut} of {len}");
        let rows = scan_all(b, 1);
        assert_eq!(rows.len(), 3, "cut at {cut} of {len}");
        assert!(rows.keys().all(|&(w, _)| w == 0));
    }
}

/// A one-row commit of table 1 (key = row id), or a commit part with that content.
fn one_row(tid: u64, rowid: u64, part: bool) -> Vec<u8> {
    let layout = RowLayout::new(&table_def());
    let mut b = Vec::new();
    LogRecord::Commit {
        tid: Tid(tid),
        emptied: vec![],
        writes: vec![redo::payload::RowImage {
            table: table_id(1),
            rowid: RowId(rowid),
            after: Some(pack(&layout, 0, rowid as i64, "x")),
        }],
    }
    .encode(&mut b);
    if part {
        b[0] = COMMIT_PART;
    }
    b
}

/// Writes a log by hand in a fresh `dir`: CREATE TABLE 1, then `records`.
fn hand_written_log(dir: &str, records: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).unwrap();
    let w = SharedLog::start(dir, Lsn(0), 1 << 20).unwrap();
    let mut b = Vec::new();
    LogRecord::CreateTable {
        table: table_id(1),
        def: table_def(),
    }
    .encode(&mut b);
    w.append(&b).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
    w.make_durable(w.written_lsn()).unwrap();
}

#[test]
fn parts_not_followed_by_their_commit_are_dropped_and_later_commits_kept() {
    // Parts of TID 5 left by a failed append, then commit 6; then parts of TID 7
    // followed by the commit of TID 7: applied.
    let dir = fresh_dir("orphan");
    hand_written_log(
        &dir,
        &[
            one_row(5, 1, true),
            one_row(5, 1, true),
            one_row(6, 2, false),
            one_row(7, 3, true),
            one_row(7, 4, false),
        ],
    );
    assert!(std::path::Path::new(&format!("{dir}/{}", segment_name(Lsn(0)))).exists());
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert_eq!(r.incomplete_commits, 1);
    let keys: Vec<i64> = scan_all(b, 1).keys().map(|&(_, k)| k).collect();
    assert_eq!(keys, vec![2, 3, 4]);
}

#[test]
fn the_tid_of_dropped_parts_is_never_handed_out_again() {
    // The log ends with parts of TID 9 (the server died while logging a big commit):
    // the next commit must get a higher TID, or its record would complete those parts
    // at the next recovery.
    let dir = fresh_dir("tid");
    hand_written_log(&dir, &[one_row(3, 1, false), one_row(9, 2, true)]);
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    let r = recover_engine(b, &dir).unwrap();
    assert_eq!(r.incomplete_commits, 1);
    assert!(
        b.last_tid() >= Tid(9),
        "TID {} could be handed out again",
        b.last_tid()
    );
    let t = b.table(table_id(1)).unwrap();
    let mut txn = b.begin();
    txn.insert(&t, &pack(&t.layout, 0, 5, "y"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    assert!(txn.commit().unwrap() > Tid(9));
}

/// Recovery time of one commit of 300,000 rows logged in parts of `max_record` bytes
/// (`cargo test -p memfdw-engine --release --test big_commits -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing_recovery_of_a_big_commit() {
    for max_record in [256 << 10, 256 << 20] {
        let dir = fresh_dir(&format!("timing-{max_record}"));
        let a = logged_engine(&dir, max_record);
        a.create_table(table_id(1), table_def()).unwrap();
        insert_rows(a, 1, 0, 0..300_000);
        let b: &'static Engine = Box::leak(Engine::new(config(), None));
        let t = std::time::Instant::now();
        let r = recover_engine(b, &dir).unwrap();
        println!(
            "parts of {max_record} bytes: recovered in {:?} ({} incomplete)",
            t.elapsed(),
            r.incomplete_commits
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
