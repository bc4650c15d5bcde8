//! The redo log's segments under crashes and corruption, through an in-memory
//! directory that can fail I/O and cut files at any byte. One test per corruption
//! kind; a randomized crash test against a model of synced records.

mod common;

use common::mem_dir::{Faults, MemDir};
use memfdw_engine::redo::files::{segment_name, HEADER_LEN};
use memfdw_engine::redo::segment::{recover, LogError, Recovered, FRAME_HEADER_LEN};
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::redo::storage::LogDir;
use memfdw_engine::redo::RedoSink;
use memfdw_engine::Lsn;
use std::io;

fn payload(i: u64) -> Vec<u8> {
    let n = (i * 37 % 200) as usize;
    (0..n).map(|k| (i as u8).wrapping_add(k as u8)).collect()
}

/// Appends `p` to `log` as a synchronous commit does (staged for the next sync).
fn append_to_sync(log: &SharedLog, p: &[u8]) -> memfdw_engine::redo::Appended {
    let mut once = Some(p);
    log.append_stream_to_sync(&mut |out| match once.take() {
        Some(p) => {
            out.clear();
            out.extend_from_slice(p);
            true
        }
        None => false,
    })
    .unwrap()
}

/// The production log writer ([`SharedLog`]) over an in-memory directory.
struct Writer(Box<SharedLog>);

impl Writer {
    fn open(dir: &MemDir, start_lsn: Lsn, segment_size: u64) -> Writer {
        Writer(SharedLog::open(Box::new(dir.clone()), start_lsn, segment_size).unwrap())
    }
    /// Appends one record; returns its LSN.
    fn append(&mut self, p: &[u8]) -> io::Result<Lsn> {
        let a = self.0.append(p)?;
        Ok(Lsn(a.end.get() - (FRAME_HEADER_LEN + p.len()) as u64))
    }
    /// Appends one record as a synchronous commit does (the log may stage it for the
    /// next sync); returns its LSN.
    fn append_to_sync(&mut self, p: &[u8]) -> io::Result<Lsn> {
        let a = append_to_sync(&self.0, p);
        Ok(Lsn(a.end.get() - (FRAME_HEADER_LEN + p.len()) as u64))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.make_durable(self.0.written_lsn())
    }
    fn next_lsn(&self) -> Lsn {
        self.0.written_lsn()
    }
}

fn write(dir: &MemDir, from: u64, n: u64, segment_size: u64, start_lsn: Lsn) -> (Writer, Vec<Lsn>) {
    let mut w = Writer::open(dir, start_lsn, segment_size);
    let lsns = (from..from + n)
        .map(|i| w.append(&payload(i)).unwrap())
        .collect();
    w.sync().unwrap();
    (w, lsns)
}

type Records = Vec<(Lsn, Vec<u8>)>;

fn read_all(dir: &MemDir) -> Result<(Records, Recovered), LogError> {
    let mut got = Vec::new();
    let r = recover(dir, |lsn, p| {
        got.push((lsn, p.to_vec()));
        Ok(())
    })?;
    Ok((got, r))
}

/// The segments of `dir` in LSN order (the control file beside them left out).
fn segments(dir: &MemDir) -> Vec<String> {
    memfdw_engine::redo::files::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

#[test]
fn records_survive_across_segments_and_reopen() {
    let dir = MemDir::new();
    let (w, lsns) = write(&dir, 0, 300, 4096, Lsn(0));
    assert!(segments(&dir).len() > 3, "small segments rotate");
    let (got, r) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 300);
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, lsns[i]);
        assert_eq!(p, &payload(i as u64));
    }
    assert_eq!(r.end_lsn, w.next_lsn());
    assert_eq!(r.truncated, None);
    drop(w);
    // The log continues where recovery says it ends.
    let (_w2, more) = write(&dir, 300, 50, 4096, r.end_lsn);
    assert_eq!(more[0], r.end_lsn);
    let (got, _) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 350);
    assert_eq!(got[349].1, payload(349));
}

#[test]
fn torn_record_at_the_tail_is_cut() {
    let dir = MemDir::new();
    let (mut w, _) = write(&dir, 0, 10, 1 << 20, Lsn(0));
    w.append(&payload(10)).unwrap(); // not synced
    let name = segments(&dir).pop().unwrap();
    dir.crash(|_, unsynced| unsynced / 2);
    drop(w);
    let before = dir.read(&name).unwrap().len();
    let (got, r) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 10);
    let t = r.truncated.expect("torn tail reported");
    assert_eq!(t.file, name);
    assert_eq!(t.offset + t.bytes_dropped, before as u64);
    assert_eq!(
        dir.read(&name).unwrap().len() as u64,
        t.offset,
        "file cut at the last valid record"
    );
    // Recovering again finds a clean log.
    assert_eq!(read_all(&dir).unwrap().1.truncated, None);
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = MemDir::new();
    let (w, _) = write(&dir, 0, 10, 1 << 20, Lsn(0));
    drop(w);
    let name = segments(&dir).pop().unwrap();
    let valid = dir.read(&name).unwrap().len();
    dir.with_file(&name, |d| {
        d.extend((0..777u32).map(|i| (i * 131 % 251) as u8))
    });
    let (got, r) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(r.truncated.unwrap().offset, valid as u64);
}

#[test]
fn bad_crc_in_the_middle_stops_recovery_with_file_and_offset() {
    let dir = MemDir::new();
    let (w, lsns) = write(&dir, 0, 10, 1 << 20, Lsn(0));
    drop(w);
    let name = segments(&dir).pop().unwrap();
    // Flip a payload byte of the fourth record.
    let at = HEADER_LEN + (lsns[3].get() as usize) + 16;
    dir.with_file(&name, |d| d[at] ^= 0x40);
    let mut applied = 0;
    let err = recover(&dir, |_, _| {
        applied += 1;
        Ok(())
    })
    .unwrap_err();
    match err {
        LogError::Corrupt { file, offset, .. } => {
            assert_eq!(file, name);
            assert_eq!(offset, HEADER_LEN as u64 + lsns[3].get());
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(applied, 3, "nothing past the corruption is applied");
    assert!(format!("{}", read_all(&dir).unwrap_err()).contains(&name));
}

#[test]
fn a_sealed_segment_cut_short_is_an_error() {
    // Cut inside a frame.
    let dir = MemDir::new();
    drop(write(&dir, 0, 200, 4096, Lsn(0)).0);
    let first = segments(&dir)[0].clone();
    dir.with_file(&first, |d| d.truncate(d.len() - 5));
    match read_all(&dir).unwrap_err() {
        LogError::Corrupt { file, .. } => assert_eq!(file, first),
        e => panic!("unexpected {e}"),
    }
    // Cut exactly at a frame boundary: the next segment no longer follows it.
    let dir = MemDir::new();
    drop(write(&dir, 0, 200, 4096, Lsn(0)).0);
    let first = segments(&dir)[0].clone();
    dir.with_file(&first, |d| d.truncate(HEADER_LEN + 16 + payload(0).len()));
    assert!(matches!(
        read_all(&dir).unwrap_err(),
        LogError::MissingSegment { .. }
    ));
}

#[test]
fn a_missing_segment_is_an_error() {
    let dir = MemDir::new();
    drop(write(&dir, 0, 200, 4096, Lsn(0)).0);
    let segs = segments(&dir);
    dir.remove(&segs[1]).unwrap();
    match read_all(&dir).unwrap_err() {
        LogError::MissingSegment { file, .. } => assert_eq!(file, segs[2]),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn a_bad_segment_header_is_an_error_but_a_torn_new_segment_is_dropped() {
    let dir = MemDir::new();
    drop(write(&dir, 0, 20, 1 << 20, Lsn(0)).0);
    let name = segments(&dir)[0].clone();
    dir.with_file(&name, |d| d[3] ^= 1);
    assert!(matches!(
        read_all(&dir).unwrap_err(),
        LogError::Corrupt { offset: 0, .. }
    ));

    let dir = MemDir::new();
    let (w, _) = write(&dir, 0, 20, 1 << 20, Lsn(0));
    let end = w.next_lsn();
    drop(w);
    // A crash right after creating the next segment, mid-header.
    dir.create(&segment_name(end)).unwrap();
    dir.write_at(&segment_name(end), 0, b"MEMFD").unwrap();
    let (got, r) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(r.end_lsn, end);
    assert_eq!(segments(&dir).len(), 1);

    // A crash after the new segment's zeros were written, before its header: also
    // nothing in it yet.
    dir.create(&segment_name(end)).unwrap();
    dir.write_at(&segment_name(end), 0, &[0u8; 4096]).unwrap();
    let (got, r) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(r.end_lsn, end);
    assert_eq!(segments(&dir).len(), 1);
    // Zeros in the header of a segment before the last one are damage.
    let dir2 = MemDir::new();
    drop(write(&dir2, 0, 300, 4096, Lsn(0)).0);
    let first = segments(&dir2)[0].clone();
    dir2.with_file(&first, |d| d.iter_mut().for_each(|b| *b = 0));
    assert!(matches!(
        read_all(&dir2).unwrap_err(),
        LogError::Corrupt { offset: 0, .. }
    ));
}

/// Spare segments, written out ahead of need, become the next segments: the appender
/// renames one instead of creating a segment; without one it creates it.
#[test]
fn spare_segments_become_the_next_segments() {
    use memfdw_engine::redo::segment::{spare_name, SPARES};
    let spares_listed = |dir: &MemDir| {
        let names = dir.list().unwrap();
        (0..SPARES)
            .filter(|&i| names.contains(&spare_name(i)))
            .count()
    };
    let dir = MemDir::new();
    let mut w = Writer::open(&dir, Lsn(0), 4096);
    assert_eq!(w.0.spares_ready(), 0);
    for made in 1..=SPARES {
        assert!(w.0.prepare_spare().unwrap());
        assert_eq!(w.0.spares_ready(), made);
    }
    // No more than SPARES at a time.
    assert!(!w.0.prepare_spare().unwrap());
    assert_eq!(spares_listed(&dir), SPARES);
    let mut lsns = Vec::new();
    for i in 0..200 {
        lsns.push(w.append(&payload(i)).unwrap());
    }
    let (from_spare, created) = w.0.segments_begun();
    assert_eq!(from_spare, SPARES as u64);
    assert!(
        created >= 1,
        "later segments were created in the foreground"
    );
    assert_eq!(w.0.spares_ready(), 0);
    assert_eq!(spares_listed(&dir), 0);
    assert!(w.0.prepare_spare().unwrap());
    for i in 200..260 {
        lsns.push(w.append(&payload(i)).unwrap());
    }
    assert_eq!(w.0.segments_begun().0, SPARES as u64 + 1);
    w.sync().unwrap();
    drop(w);
    let (got, _) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 260);
    for (i, (lsn, p)) in got.iter().enumerate() {
        assert_eq!(*lsn, lsns[i]);
        assert_eq!(*p, payload(i as u64));
    }
    // A restart drops spares left behind (they may be incomplete).
    let w = Writer::open(&dir, Lsn(0), 4096);
    assert!(w.0.prepare_spare().unwrap());
    assert!(w.0.prepare_spare().unwrap());
    drop(w);
    // (And the single spare of builds that kept one.)
    dir.create("spare-segment").unwrap();
    let _w = Writer::open(&dir, Lsn(1 << 40), 4096);
    assert_eq!(spares_listed(&dir), 0);
    assert!(!dir.list().unwrap().iter().any(|n| n.starts_with("spare")));
}

/// A spare that cannot be installed (its sync fails) is removed, so that its space
/// goes to the segment the appender creates itself once the fault is gone.
#[test]
fn a_spare_that_fails_to_install_is_removed() {
    use memfdw_engine::redo::segment::spare_name;
    let dir = MemDir::new();
    let mut w = Writer::open(&dir, Lsn(0), 4096);
    assert!(w.0.prepare_spare().unwrap());
    // Appends do not sync: the first sync is the seal of the full segment (it
    // passes), the next one the spare's (it fails, and so does the fallback's).
    dir.set_faults(Faults {
        fail_appends_after: None,
        fail_syncs_from: Some(dir.syncs() + 1),
    });
    let mut lsns = Vec::new();
    let mut n = 0;
    while let Ok(l) = w.append(&payload(n)) {
        lsns.push(l);
        n += 1;
        assert!(n < 1000, "the log never moved to a new segment");
    }
    assert!(!dir.list().unwrap().contains(&spare_name(0)));
    assert_eq!(w.0.spares_ready(), 0);
    assert_eq!(w.0.segments_begun(), (0, 0));
    dir.set_faults(Faults::default());
    for i in n..n + 50 {
        lsns.push(w.append(&payload(i)).unwrap());
    }
    let (from_spare, created) = w.0.segments_begun();
    assert_eq!(from_spare, 0);
    assert!(created >= 1);
    w.sync().unwrap();
    drop(w);
    let (got, _) = read_all(&dir).unwrap();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), lsns);
}

/// A large record is written as its frame header and then its payload from where it
/// is (two writes): a crash between them, or inside the payload, loses that record
/// only, as a torn tail; written whole, it reads back whole.
#[test]
fn a_large_record_written_in_two_parts_tears_like_one() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for keep in [
        0usize,
        8,
        FRAME_HEADER_LEN,
        FRAME_HEADER_LEN + 1000,
        usize::MAX,
    ] {
        let dir = MemDir::new();
        let (mut w, lsns) = write(&dir, 0, 5, 1 << 20, Lsn(0));
        let big_lsn = w.append(&big).unwrap();
        drop(w);
        dir.crash(|_, unsynced| unsynced.min(keep));
        let (got, r) = read_all(&dir).unwrap();
        if keep == usize::MAX {
            assert_eq!(got.len(), 6);
            assert_eq!(got[5], (big_lsn, big.clone()));
        } else {
            assert_eq!(got.len(), 5, "kept {keep} bytes of the large frame");
            assert_eq!(r.end_lsn.get(), big_lsn.get());
        }
        assert_eq!(got[..5].iter().map(|g| g.0).collect::<Vec<_>>(), lsns);
    }
}

#[test]
fn failed_writes_and_syncs_are_reported() {
    let dir = MemDir::new();
    let (mut w, _) = write(&dir, 0, 5, 1 << 20, Lsn(0));
    dir.set_faults(Faults {
        fail_appends_after: Some(0),
        fail_syncs_from: None,
    });
    assert!(matches!(w.append(&payload(5)), Err(e) if e.kind() == io::ErrorKind::StorageFull));
    dir.set_faults(Faults {
        fail_appends_after: None,
        fail_syncs_from: Some(0),
    });
    // A record written, whose sync fails: reported, and not durable.
    w.append(&payload(6)).unwrap();
    assert!(w.sync().is_err());
    dir.set_faults(Faults::default());
    dir.crash(|_, _| 0);
    let (got, _) = read_all(&dir).unwrap();
    assert_eq!(got.len(), 5);
}

/// Records appended as synchronous commits do (staged, written by the next sync)
/// or at once, at random, across segments of 2 to 10 KiB: a crash keeps every synced
/// record and a prefix of the others.
#[test]
fn random_crashes_keep_every_synced_record_and_only_written_ones() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    for round in 0..60 {
        let dir = MemDir::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut synced = 0usize;
        let mut next_lsn = Lsn(0);
        // A few lives: write, crash, recover, continue.
        for _life in 0..3 {
            let mut w = Writer::open(&dir, next_lsn, 2048 + rnd(8192));
            for _ in 0..rnd(120) {
                let p = payload(rnd(10_000));
                if rnd(2) == 0 {
                    w.append_to_sync(&p).unwrap();
                } else {
                    w.append(&p).unwrap();
                }
                written.push(p);
                if rnd(5) == 0 {
                    w.sync().unwrap();
                    synced = written.len();
                }
            }
            drop(w);
            dir.crash(|_, unsynced| rnd(unsynced as u64 + 1) as usize);
            let (got, r) = read_all(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
            let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
            assert!(got.len() >= synced, "round {round}: lost synced records");
            assert!(got.len() <= written.len());
            assert_eq!(
                got[..],
                written[..got.len()],
                "round {round}: recovered a non-prefix"
            );
            written.truncate(got.len());
            synced = got.len();
            next_lsn = r.end_lsn;
        }
    }
}

/// A log over `dir` whose syncs take `sync_ms` and whose committers sleep up to 400
/// ms for a sync: a lost wake-up shows as a timed-out sleep, a slow machine does not.
fn log_with_slow_syncs(dir: &MemDir, segment_size: u64, sync_ms: u64) -> Box<SharedLog> {
    let log = SharedLog::open(Box::new(dir.clone()), Lsn(HEADER_LEN as u64), segment_size).unwrap();
    log.set_sync_delay(sync_ms);
    log.set_sleep_limit(400);
    log
}

/// Group commit: many threads commit at once while each sync takes a millisecond,
/// and pause between commits as clients do.
/// Every commit returns durable, syncs cover several commits each, and no sleeper is
/// left to its timeout (a sleeper waits for the sync that covers it: the running one
/// or the next, whose leader a finishing sync wakes).
#[test]
fn group_commit_wakes_every_sleeper_in_time() {
    let dir = MemDir::new();
    let log = log_with_slow_syncs(&dir, 1 << 22, 1);
    let (threads, each) = (8, 150);
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || {
                for i in 0..each {
                    let a = append_to_sync(log, &payload(t * 1000 + i));
                    log.make_durable(a.end).unwrap();
                    assert!(log.flushed_lsn() >= a.end, "returned before its sync");
                    // A client's round trip: the leader is not back at once to lead
                    // the next sync.
                    std::thread::sleep(std::time::Duration::from_micros(500 * ((t + i) % 4)));
                }
            });
        }
    });
    let (appends, syncs) = log.counters();
    assert_eq!(appends, threads * each);
    assert!(
        syncs * 2 < appends,
        "{syncs} syncs for {appends} commits: no group commit"
    );
    assert_eq!(log.sleep_timeouts(), 0, "a sleeper was not woken");
}

/// A commit written while a sync runs needs the next sync: when the running one ends,
/// its leader wakes that commit to lead the next, even if no other commit comes.
#[test]
fn a_commit_written_during_a_sync_is_woken_to_lead_the_next() {
    let dir = MemDir::new();
    let log = log_with_slow_syncs(&dir, 1 << 22, 5);
    for round in 0..5 {
        let second = std::thread::scope(|s| {
            let log = &log;
            s.spawn(move || {
                let a = append_to_sync(log, &payload(round * 2));
                log.make_durable(a.end).unwrap();
            });
            s.spawn(move || {
                // Written while the first commit's sync runs.
                std::thread::sleep(std::time::Duration::from_millis(2));
                let a = append_to_sync(log, &payload(round * 2 + 1));
                let t = std::time::Instant::now();
                log.make_durable(a.end).unwrap();
                t.elapsed()
            })
            .join()
            .unwrap()
        });
        assert!(
            second < std::time::Duration::from_millis(300),
            "round {round}: the second commit took {second:?}"
        );
    }
    assert_eq!(log.sleep_timeouts(), 0, "a sleeper was not woken");
}

/// A commit that seals a full segment (a sync of its own) covers the commits asleep
/// for the next sync: they are woken at once, so the one sleeper the running sync's
/// leader wakes to lead the next is one that still needs it (else that sleeper would
/// return covered and the other sleep until its timeout).
#[test]
fn a_sealed_segment_wakes_the_commits_it_covers() {
    let dir = MemDir::new();
    let log = log_with_slow_syncs(&dir, 4096, 5);
    for round in 0..12u64 {
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            let log = &log;
            let commit = move |wait_ms: u64, len: usize| {
                std::thread::sleep(std::time::Duration::from_millis(wait_ms));
                let a = append_to_sync(log, &vec![round as u8; len]);
                log.make_durable(a.end).unwrap();
            };
            // The leader of a sync; one commit asleep for the next; one that fills the
            // segment (from the second round on: the last round's big record is in
            // it) and seals it.
            s.spawn(move || commit(0, 10));
            s.spawn(move || commit(1, 10));
            s.spawn(move || commit(2, 3900));
        });
        let took = t.elapsed();
        assert!(
            took < std::time::Duration::from_millis(300),
            "round {round} took {took:?}"
        );
    }
    assert_eq!(log.sleep_timeouts(), 0, "a sleeper was not woken");
}

/// Group commit with segments of 4 KiB: commits that fill a segment seal it (a sync
/// of their own, under the log's lock), which covers sleepers without a sync number;
/// they are woken too, and every commit returns durable without a timed-out sleep.
#[test]
fn group_commit_across_sealed_segments_wakes_every_sleeper_in_time() {
    let dir = MemDir::new();
    let log = log_with_slow_syncs(&dir, 4096, 1);
    let (threads, each) = (8, 100);
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || {
                for i in 0..each {
                    let a = log
                        .append(&[7u8; 300][..(t * 37 + i * 11) as usize % 300])
                        .unwrap();
                    log.make_durable(a.end).unwrap();
                    assert!(log.flushed_lsn() >= a.end, "returned before its sync");
                    std::thread::sleep(std::time::Duration::from_micros(300 * ((t + i) % 3)));
                }
            });
        }
    });
    assert!(
        segments(&dir).len() > 20,
        "{} segments",
        segments(&dir).len()
    );
    assert_eq!(log.sleep_timeouts(), 0, "a sleeper was not woken");
}

/// A synchronous commit's record is staged: not in the segment until a sync (one
/// write for the group), in it after; a record written at once (an asynchronous
/// commit's) writes what is staged before it.
#[test]
fn staged_records_are_written_by_the_sync_or_before_the_next_direct_write() {
    let dir = MemDir::new();
    let mut w = Writer::open(&dir, Lsn(HEADER_LEN as u64), 1 << 20);
    let seg = segments(&dir)[0].clone();
    let used = |dir: &MemDir| {
        let f = dir.read(&seg).unwrap();
        f.len() - f.iter().rev().take_while(|&&b| b == 0).count()
    };
    let before = used(&dir);
    w.append_to_sync(&payload(3)).unwrap();
    w.append_to_sync(&payload(4)).unwrap();
    assert_eq!(used(&dir), before, "staged records are not written yet");
    w.sync().unwrap();
    let after_sync = used(&dir);
    assert!(after_sync > before);
    w.append_to_sync(&payload(5)).unwrap();
    assert_eq!(used(&dir), after_sync);
    w.append(&payload(6)).unwrap();
    assert!(
        used(&dir) > after_sync,
        "a direct write writes the stage first"
    );
    dir.crash(|_, _| usize::MAX);
    let (got, _) = read_all(&dir).unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![payload(3), payload(4), payload(5), payload(6)]);
}

/// The stage's edges: records that overflow the stage (256 KiB) are written with it,
/// a staged commit's part bigger than the stage is written at once after what is
/// staged, and all come back in order after a sync and a crash.
#[test]
fn staged_records_past_the_stage_and_bigger_than_it_keep_their_order() {
    let dir = MemDir::new();
    let mut w = Writer::open(&dir, Lsn(HEADER_LEN as u64), 8 << 20);
    let mut want = Vec::new();
    for i in 0..100u64 {
        let p = vec![i as u8; 8000];
        w.append_to_sync(&p).unwrap();
        want.push(p);
    }
    let big = vec![0xAB; 300 << 10];
    w.append_to_sync(&big).unwrap();
    want.push(big);
    w.append_to_sync(&payload(7)).unwrap();
    want.push(payload(7));
    w.sync().unwrap();
    dir.crash(|_, _| 0);
    let (got, _) = read_all(&dir).unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "records out of order or damaged");
}

/// A failed write of the stage fails the sync (nothing past it is durable); the
/// stage is kept, and the next sync writes it where it belongs.
#[test]
fn a_failed_write_of_the_stage_fails_the_sync_and_the_next_sync_writes_it() {
    let dir = MemDir::new();
    let mut w = Writer::open(&dir, Lsn(HEADER_LEN as u64), 1 << 20);
    w.append(&payload(1)).unwrap();
    w.sync().unwrap();
    w.append_to_sync(&payload(2)).unwrap();
    w.append_to_sync(&payload(3)).unwrap();
    dir.set_faults(Faults {
        fail_appends_after: Some(0),
        fail_syncs_from: None,
    });
    assert!(w.sync().is_err(), "the stage's write failed");
    dir.set_faults(Faults::default());
    w.sync().unwrap();
    w.append(&payload(4)).unwrap();
    w.sync().unwrap();
    dir.crash(|_, _| 0);
    let (got, _) = read_all(&dir).unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![payload(1), payload(2), payload(3), payload(4)]);
}
