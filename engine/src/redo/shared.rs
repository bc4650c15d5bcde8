//! The redo log shared by every process: one current segment (written out to its full
//! size with zeros when created, see `segment::create_segment`), LSNs handed out under
//! a process-safe lock, group commit through a shared "flushed up to" LSN.
//!
//! The state (current segment, next LSN, flushed LSN) lives in the arena. Files are
//! written through the log's [`LogDir`] (per-process descriptors in [`FsDir`]; an
//! in-memory directory with injected faults in the engine's tests).
//!
//! * `append` reserves the frame's LSN and writes it at its offset with `pwrite`,
//!   both under the lock. A synchronous commit's frames (`append_stream_to_sync`)
//!   are staged instead, in a buffer of the log, and written with one `pwrite` by
//!   the sync its commit waits for: every byte below `next_lsn` is written, or
//!   staged, when the lock is released, and written before any sync covers it (a
//!   direct write, a seal and every sync write the stage first). Only commits that
//!   are not acknowledged before a sync ever sit in the stage, so a crash loses
//!   nothing a client was told. Before a new segment starts, the old one is synced:
//!   a sealed segment is always complete.
//! * A new segment is a spare one when the background worker has written one out
//!   ([`SharedLog::prepare_spare`]: 64 MB of zeros and a sync, outside the lock; up to
//!   [`SPARES`] of them); the appender that moves the log on then only writes its
//!   header and renames it. With no spare ready it creates the segment itself, zeros
//!   and all, under the lock.
//! * `make_durable(upto)` returns at once if another process already synced past
//!   `upto`; otherwise, if no process is syncing, it syncs the current segment itself
//!   (the leader), which covers everything written before it looked at `next_lsn`,
//!   and publishes that as flushed. While another process syncs it sleeps (futex,
//!   across processes) until the sync that covers `upto` is done: the one running, if
//!   its target reaches `upto`, else the next. Each sync has a number; a sleeper
//!   names the sync it waits for by a futex bit (the number mod 32), and a leader
//!   wakes only the sleepers of its own sync, plus one sleeper of the next to lead
//!   it; sealing a segment (which syncs it) wakes every sleeper. The futex word is a
//!   wake-up sequence that every sync end and seal bumps, read before the checks that
//!   decide to sleep, so no sleep starts after a wake-up it needed. (With one wake-up
//!   for all, every commit that arrived during a sync woke at its end only to sleep
//!   again through the next: two futex sleeps per commit.)

use super::files::{SegmentName, HEADER_LEN};
use super::segment::{self, create_segment, encode_frame, FRAME_HEADER_LEN, SPARES};
use super::storage::{FsDir, LogDir};
use super::{Appended, RedoSink};
use crate::ids::Lsn;
use crate::scope;
use crate::sync::SpinLock;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

struct LogState {
    seg_start: Lsn,
    next_lsn: Lsn,
    /// Frames of commits that wait for a sync right after their append, not written
    /// yet: the bytes from `stage_at` up to `next_lsn`, all in the current segment
    /// (invariant: empty, or ending at `next_lsn`). The next sync writes them with one
    /// `pwrite` before it syncs (see [`RedoSink::append_stream_to_sync`]). The buffer
    /// is allocated once with the log (in the arena) and never grows: a frame that
    /// does not fit is written out with what is staged.
    stage: Vec<u8>,
    stage_at: Lsn,
}

/// Largest payload copied behind its frame header for a single write; larger ones are
/// written in place after a separate header write.
const COPIED_PAYLOAD_MAX: usize = 64 << 10;
/// Bytes of frames staged for the next sync (see `LogState::stage`).
const STAGE_BYTES: usize = 256 << 10;
/// The largest record a commit's record is cut into (see [`RedoSink::append_stream`]):
/// small enough to stay in the CPU's cache from its encoding to its write, large
/// enough that frame headers do not count.
const STREAMED_PART: usize = 256 << 10;

/// States of a spare segment ([`SharedLog::prepare_spare`]).
const SPARE_NONE: u32 = 0;
const SPARE_MAKING: u32 = 1;
const SPARE_READY: u32 = 2;
const SPARE_TAKING: u32 = 3;

pub struct SharedLog {
    dir: Box<dyn LogDir>,
    /// Per spare segment file: `SPARE_NONE` (no usable file), `SPARE_MAKING` (one
    /// process writes it out), `SPARE_READY` (complete and durable), `SPARE_TAKING`
    /// (an appender, under `state`, renames it into place). Only the process that
    /// moved it out of `SPARE_NONE` or `SPARE_READY` touches the file.
    spares: [AtomicU32; SPARES],
    /// Segments the log moved to: from the spare, and created under the lock.
    segments_from_spare: AtomicU64,
    segments_in_foreground: AtomicU64,
    /// The directory's path ("" if it is not in the file system).
    path: String,
    segment_size: u64,
    state: SpinLock<LogState>,
    flushed: AtomicU64,
    /// 1 while one process syncs; the others sleep on `wake_seq` (a futex bumped
    /// after every sync and every sealed segment) and usually find their record
    /// covered (group commit). Invariants: `sync_done` counts the syncs done; sync
    /// number `sync_done + 1` is the one running while `syncing` is 1 (a leader
    /// stores its number before it releases `syncing`); once its leader has read
    /// its target, it stores the target in `sync_target`, then the number in
    /// `sync_started`.
    syncing: AtomicU32,
    sync_done: AtomicU32,
    wake_seq: AtomicU32,
    sync_started: AtomicU32,
    sync_target: AtomicU64,
    /// Processes sleeping in `make_durable` (a leader with none skips its wake-ups),
    /// and sleeps that ended by their timeout rather than a wake-up (none, unless a
    /// wake-up was lost: a test checks).
    sleepers: AtomicU32,
    sleep_timeouts: AtomicU64,
    /// How long such a sleep lasts at most (ms): a safety net, 20 unless a test
    /// lengthens it to tell a lost wake-up from a slow machine.
    sleep_limit_ms: AtomicU64,
    /// Checkpoint phase of new appends (changed under `state`), and per phase the
    /// appended records whose effect is not installed yet.
    phase: AtomicUsize,
    installing: [AtomicU64; 2],
    /// True while a checkpoint runs (one at a time).
    checkpointing: AtomicBool,
    /// Start LSN of the last completed checkpoint.
    last_checkpoint: AtomicU64,
    /// Records appended and syncs done, since start.
    appends: AtomicU64,
    syncs: AtomicU64,
    /// The last completed checkpoint: Unix time (ms), bytes, duration (ms).
    last_checkpoint_at_ms: AtomicU64,
    last_checkpoint_bytes: AtomicU64,
    last_checkpoint_ms: AtomicU64,
    /// Largest record payload; bigger commits are logged in parts.
    max_record: AtomicUsize,
    /// What the control file says (see [`super::control`]): where the log began, the
    /// last checkpoint (`u64::MAX`: none), and up to where the log is known durable.
    /// Written under `control_lock`, one writer at a time.
    control_origin: AtomicU64,
    control_checkpoint: AtomicU64,
    control_durable: AtomicU64,
    control_lock: SpinLock<()>,
    /// `next_lsn`, readable without the lock (stored after every append, before the
    /// appended records are installed: see [`RedoSink::written`]).
    written: AtomicU64,
    /// Developer setting: how long every sync waits first (tests of durable reads).
    sync_delay_ms: AtomicU64,
}

/// What the last completed checkpoint was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastCheckpoint {
    pub start_lsn: Lsn,
    pub unix_ms: u64,
    pub bytes: u64,
    pub duration_ms: u64,
}

impl SharedLog {
    /// Starts the log in directory `path` at `next_lsn` (where recovery ended) with a
    /// new segment. Call inside an engine scope so the log lives in the arena.
    pub fn start(path: &str, next_lsn: Lsn, segment_size: u64) -> io::Result<Box<SharedLog>> {
        let dir = Box::new(FsDir::open(path)?);
        Self::open(dir, next_lsn, segment_size)
    }

    /// Starts the log in `dir` at `next_lsn` with a new segment (segments of at least
    /// 4 KiB).
    pub fn open(
        dir: Box<dyn LogDir>,
        next_lsn: Lsn,
        segment_size: u64,
    ) -> io::Result<Box<SharedLog>> {
        // A fresh directory gets its control file first: from now on recovery expects
        // the log to begin at `next_lsn`. (After a recovery, the old one stays until
        // [`SharedLog::restore`] replaces it.)
        let existing = scope::outside(|| super::control::read(&*dir))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let control = existing.unwrap_or(super::control::Control {
            origin: next_lsn,
            checkpoint: None,
            durable: next_lsn,
        });
        if existing.is_none() {
            scope::outside(|| super::control::write(&*dir, &control))?;
        }
        scope::outside(|| create_segment(&*dir, next_lsn, segment_size.max(4096)))?;
        // A spare left from before a restart may be incomplete: made again on demand.
        // (Also the single spare of builds that kept one, "spare-segment".)
        let names = scope::outside(|| dir.list())?;
        for name in names.iter().filter(|n| n.starts_with("spare-segment")) {
            scope::outside(|| dir.remove(name))?;
        }
        let path = dir
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Box::new(SharedLog {
            dir,
            spares: std::array::from_fn(|_| AtomicU32::new(SPARE_NONE)),
            segments_from_spare: AtomicU64::new(0),
            segments_in_foreground: AtomicU64::new(0),
            path,
            segment_size: segment_size.max(4096),
            state: SpinLock::new(LogState {
                seg_start: next_lsn,
                next_lsn,
                stage: Vec::with_capacity(STAGE_BYTES),
                stage_at: next_lsn,
            }),
            flushed: AtomicU64::new(next_lsn.get()),
            syncing: AtomicU32::new(0),
            sync_done: AtomicU32::new(0),
            wake_seq: AtomicU32::new(0),
            sync_started: AtomicU32::new(0),
            sync_target: AtomicU64::new(0),
            sleepers: AtomicU32::new(0),
            sleep_timeouts: AtomicU64::new(0),
            sleep_limit_ms: AtomicU64::new(20),
            phase: AtomicUsize::new(0),
            installing: [AtomicU64::new(0), AtomicU64::new(0)],
            checkpointing: AtomicBool::new(false),
            last_checkpoint: AtomicU64::new(next_lsn.get()),
            appends: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_checkpoint_at_ms: AtomicU64::new(0),
            last_checkpoint_bytes: AtomicU64::new(0),
            last_checkpoint_ms: AtomicU64::new(0),
            max_record: AtomicUsize::new(STREAMED_PART),
            control_origin: AtomicU64::new(control.origin.get()),
            control_checkpoint: AtomicU64::new(control.checkpoint.map_or(u64::MAX, Lsn::get)),
            control_durable: AtomicU64::new(control.durable.get()),
            control_lock: SpinLock::new(()),
            written: AtomicU64::new(next_lsn.get()),
            sync_delay_ms: AtomicU64::new(0),
        }))
    }

    /// Sets the largest record payload (at least 64 bytes; tests split commits with a
    /// small one).
    pub fn set_max_record(&self, bytes: usize) {
        self.max_record
            .store(bytes.clamp(64, segment::MAX_PAYLOAD), Ordering::Relaxed);
    }

    /// The log's directory.
    pub(crate) fn dir(&self) -> &dyn LogDir {
        &*self.dir
    }

    /// Starts a checkpoint: returns its start LSN and the phase of the records
    /// appended before it, or None if a checkpoint is already running.
    /// [`SharedLog::wait_installed`] and [`SharedLog::end_checkpoint`] must follow.
    pub fn begin_checkpoint(&self) -> Option<(Lsn, usize)> {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return None;
        }
        let st = self.state.lock();
        let old = self.phase.load(Ordering::Relaxed);
        self.phase.store(old ^ 1, Ordering::Relaxed);
        Some((st.next_lsn, old))
    }

    /// Waits until every record of `phase` is installed: a scan of memory from now on
    /// sees all of them, and replay from the start LSN covers the rest. (Checkpoints
    /// run one at a time, so the phase is not reused before it drains.)
    pub fn wait_installed(&self, phase: usize) {
        let mut backoff = crate::sync::Backoff::new();
        while self.installing[phase].load(Ordering::Acquire) != 0 {
            backoff.snooze();
        }
    }

    /// Writes what is staged and syncs everything written so far, as sync number
    /// `number` (the caller holds `syncing`).
    fn sync_once(&self, upto: Lsn, number: u32) -> io::Result<()> {
        if self.flushed_lsn() >= upto {
            return Ok(());
        }
        let (seg, written) = {
            let mut st = self.state.lock();
            self.write_stage(&mut st)?;
            (st.seg_start, st.next_lsn)
        };
        self.sync_target.store(written.get(), Ordering::SeqCst);
        self.sync_started.store(number, Ordering::SeqCst);
        if upto <= seg {
            // Its segment was sealed, and synced, by a rotation.
            self.flushed.fetch_max(seg.get(), Ordering::AcqRel);
            return Ok(());
        }
        let delay = self.sync_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        self.dir.sync(&SegmentName::new(seg))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.flushed.fetch_max(written.get(), Ordering::AcqRel);
        Ok(())
    }

    /// Makes every sync wait `ms` milliseconds first (a developer setting: tests show
    /// readers waiting for the durability of what they read).
    pub fn set_sync_delay(&self, ms: u64) {
        self.sync_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Sleeps in `make_durable` that ended by their timeout: a wake-up was lost (or
    /// a sync took longer than the timeout).
    pub fn sleep_timeouts(&self) -> u64 {
        self.sleep_timeouts.load(Ordering::Relaxed)
    }

    /// Sets the longest sleep in `make_durable` (a developer setting for tests).
    pub fn set_sleep_limit(&self, ms: u64) {
        self.sleep_limit_ms.store(ms, Ordering::Relaxed);
    }

    /// (records appended, syncs done) since the server started.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.appends.load(Ordering::Relaxed),
            self.syncs.load(Ordering::Relaxed),
        )
    }

    /// LSN just past every completed append. (Not under the state lock: a commit of
    /// a million rows holds it while it writes some 100 MB, and the worker asks for
    /// this every few milliseconds.)
    pub fn written_lsn(&self) -> Lsn {
        Lsn(self.written.load(Ordering::Acquire))
    }

    /// Log bytes written since the last completed checkpoint started.
    pub fn bytes_since_checkpoint(&self) -> u64 {
        self.written_lsn()
            .since(Lsn(self.last_checkpoint.load(Ordering::Acquire)))
    }

    pub(crate) fn checkpoint_done(&self, start_lsn: Lsn, bytes: u64, seconds: f64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_checkpoint_bytes.store(bytes, Ordering::Relaxed);
        self.last_checkpoint_ms
            .store((seconds * 1000.0) as u64, Ordering::Relaxed);
        self.last_checkpoint_at_ms.store(now, Ordering::Relaxed);
        self.last_checkpoint
            .fetch_max(start_lsn.get(), Ordering::AcqRel);
    }

    /// Takes over what recovery found: the checkpoint it loaded (None: there was
    /// none) becomes the last one (the log written since it counts towards
    /// `memfdw.max_log_size`, and it is shown until the next one completes, its
    /// duration unknown: 0), and the control file records where the log begins, that
    /// checkpoint, and that the log is durable up to where recovery read it.
    pub fn restore(&self, r: &segment::Recovered) -> io::Result<()> {
        self.control_origin.store(r.origin.get(), Ordering::Release);
        self.control_checkpoint.store(
            r.checkpoint.map_or(u64::MAX, |c| c.start_lsn.get()),
            Ordering::Release,
        );
        self.control_durable
            .store(r.end_lsn.get(), Ordering::Release);
        self.write_control(true)?;
        let c = r.checkpoint.unwrap_or_default();
        self.last_checkpoint
            .store(c.start_lsn.get(), Ordering::Release);
        self.last_checkpoint_bytes.store(c.bytes, Ordering::Relaxed);
        self.last_checkpoint_ms.store(0, Ordering::Relaxed);
        self.last_checkpoint_at_ms
            .store(c.unix_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Rewrites the control file from the fields above (`force`), or only if the
    /// durable LSN moved past what it says (the background worker's periodic call;
    /// skipped while another writer is busy).
    fn write_control(&self, force: bool) -> io::Result<()> {
        let _g = if force {
            self.control_lock.lock()
        } else {
            match self.control_lock.try_lock() {
                Some(g) => g,
                None => return Ok(()),
            }
        };
        let flushed = self.flushed.load(Ordering::Acquire);
        let durable = self.control_durable.load(Ordering::Acquire).max(flushed);
        if !force && durable == self.control_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        let checkpoint = self.control_checkpoint.load(Ordering::Acquire);
        let c = super::control::Control {
            origin: Lsn(self.control_origin.load(Ordering::Acquire)),
            checkpoint: (checkpoint != u64::MAX).then_some(Lsn(checkpoint)),
            durable: Lsn(durable),
        };
        scope::outside(|| super::control::write(&*self.dir, &c))?;
        self.control_durable.fetch_max(durable, Ordering::AcqRel);
        Ok(())
    }

    /// Records in the control file that the log is durable up to where it has been
    /// synced (the background worker calls it every few seconds).
    pub fn update_durable_marker(&self) -> io::Result<()> {
        self.write_control(false)
    }

    /// Records a completed checkpoint starting at `start` in the control file (before
    /// the segments it covers are deleted).
    pub(crate) fn note_checkpoint(&self, start: Lsn) -> io::Result<()> {
        self.control_checkpoint
            .store(start.get(), Ordering::Release);
        self.write_control(true)
    }

    /// The last checkpoint completed since the server started, if any.
    pub fn last_checkpoint(&self) -> Option<LastCheckpoint> {
        let unix_ms = self.last_checkpoint_at_ms.load(Ordering::Relaxed);
        (unix_ms != 0).then(|| LastCheckpoint {
            start_lsn: Lsn(self.last_checkpoint.load(Ordering::Acquire)),
            unix_ms,
            bytes: self.last_checkpoint_bytes.load(Ordering::Relaxed),
            duration_ms: self.last_checkpoint_ms.load(Ordering::Relaxed),
        })
    }

    pub fn end_checkpoint(&self) {
        self.checkpointing.store(false, Ordering::Release);
    }

    /// The log's directory in the file system ("" if it is elsewhere).
    pub fn directory(&self) -> &str {
        &self.path
    }

    /// Writes out one more spare segment if fewer than [`SPARES`] are there (the
    /// background worker calls this between its other duties): an appender that moves
    /// the log to a new segment renames a spare into place instead of writing a
    /// segment of zeros and syncing it while every committer waits on the log's lock
    /// (60-140 ms for 64 MB here), as PostgreSQL's checkpointer preallocates WAL
    /// segments. Returns whether it wrote one. Costs [`SPARES`] segments of disk.
    pub fn prepare_spare(&self) -> io::Result<bool> {
        // One at a time: the first slot without a file.
        let Some(i) = (0..SPARES).find(|&i| {
            self.spares[i]
                .compare_exchange(
                    SPARE_NONE,
                    SPARE_MAKING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        }) else {
            return Ok(false);
        };
        let made = scope::outside(|| segment::make_spare(&*self.dir, i, self.segment_size));
        let state = if made.is_ok() {
            SPARE_READY
        } else {
            SPARE_NONE
        };
        self.spares[i].store(state, Ordering::Release);
        made.map(|()| true)
    }

    /// Spare segments ready.
    pub fn spares_ready(&self) -> usize {
        self.spares
            .iter()
            .filter(|s| s.load(Ordering::Acquire) == SPARE_READY)
            .count()
    }

    /// Segments the log moved to: (renamed from the spare, created under the lock).
    pub fn segments_begun(&self) -> (u64, u64) {
        (
            self.segments_from_spare.load(Ordering::Relaxed),
            self.segments_in_foreground.load(Ordering::Relaxed),
        )
    }

    /// Starts the segment at `start` (the caller holds `state` and has sealed the
    /// previous one): from a spare if one is ready, otherwise written out here.
    fn begin_segment(&self, start: Lsn) -> io::Result<()> {
        let ready = (0..SPARES).find(|&i| {
            self.spares[i]
                .compare_exchange(
                    SPARE_READY,
                    SPARE_TAKING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        });
        if let Some(i) = ready {
            let r = segment::install_spare(&*self.dir, i, start);
            self.spares[i].store(SPARE_NONE, Ordering::Release);
            if r.is_ok() {
                self.segments_from_spare.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // (The spare may be renamed or not: the segment is created afresh
            // below, and the spare made again later.)
        }
        create_segment(&*self.dir, start, self.segment_size)?;
        self.segments_in_foreground.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// LSN up to which the log is durable.
    pub fn flushed_lsn(&self) -> Lsn {
        Lsn(self.flushed.load(Ordering::Acquire))
    }
}

impl SharedLog {
    /// Appends the frames `next` produces under one hold of the lock, staging them
    /// (`staged`) or writing them at once.
    fn append_frames(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
        staged: bool,
    ) -> io::Result<Appended> {
        scope::outside(|| {
            let mut buf = Vec::new();
            let mut payload = Vec::new();
            let mut st = self.state.lock();
            while next(&mut payload) {
                self.append_frame(&mut st, &mut buf, &payload, staged)?;
            }
            self.written.fetch_max(st.next_lsn.get(), Ordering::Release);
            let phase = self.phase.load(Ordering::Relaxed);
            self.installing[phase].fetch_add(1, Ordering::AcqRel);
            self.appends.fetch_add(1, Ordering::Relaxed);
            Ok(Appended {
                end: st.next_lsn,
                phase,
            })
        })
    }

    /// Writes the staged frames to the current segment (the caller holds the log's
    /// lock, `st`).
    fn write_stage(&self, st: &mut LogState) -> io::Result<()> {
        if st.stage.is_empty() {
            return Ok(());
        }
        let offset = HEADER_LEN as u64 + st.stage_at.since(st.seg_start);
        self.dir
            .write_at(&SegmentName::new(st.seg_start), offset, &st.stage)?;
        st.stage.clear();
        st.stage_at = st.next_lsn;
        Ok(())
    }

    /// Writes one frame holding `payload` at the end of the log (starting a new
    /// segment first if it does not fit in the current one); `buf` is scratch space.
    /// The caller holds the log's lock (`st`).
    fn append_frame(
        &self,
        st: &mut LogState,
        buf: &mut Vec<u8>,
        payload: &[u8],
        staged: bool,
    ) -> io::Result<()> {
        if payload.len() > segment::MAX_PAYLOAD {
            return Err(io::Error::other(format!(
                "redo record of {} bytes exceeds the largest frame",
                payload.len()
            )));
        }
        let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let used = HEADER_LEN as u64 + st.next_lsn.since(st.seg_start);
        if st.next_lsn > st.seg_start && used + frame_len > self.segment_size {
            // Seal the current segment: it must be complete before a later one
            // holds anything.
            self.write_stage(st)?;
            self.dir.sync(&SegmentName::new(st.seg_start))?;
            self.flushed.fetch_max(st.next_lsn.get(), Ordering::SeqCst);
            // Committers asleep for a sync may be covered now: all look again.
            self.wake_seq.fetch_add(1, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                crate::sync::futex_wake_bits(&self.wake_seq, i32::MAX, u32::MAX);
            }
            self.begin_segment(st.next_lsn)?;
            st.seg_start = st.next_lsn;
        }
        let lsn = st.next_lsn;
        let offset = HEADER_LEN as u64 + lsn.since(st.seg_start);
        let name = SegmentName::new(st.seg_start);
        let fits = |st: &LogState| st.stage.capacity() - st.stage.len() >= frame_len as usize;
        if staged && frame_len as usize <= STAGE_BYTES {
            if !fits(st) {
                self.write_stage(st)?;
            }
            if st.stage.is_empty() {
                st.stage_at = lsn;
            }
            // Within the capacity checked above: the arena buffer does not move.
            debug_assert!(fits(st));
            encode_frame(&mut st.stage, lsn.get(), payload);
            st.next_lsn = st.next_lsn.plus(frame_len);
            return Ok(());
        }
        // Written now: what is staged before it first (the stage ends at `lsn`).
        self.write_stage(st)?;
        if payload.len() <= COPIED_PAYLOAD_MAX {
            // One write of header and payload copied together.
            buf.clear();
            encode_frame(buf, lsn.get(), payload);
            self.dir.write_at(&name, offset, buf)?;
        } else {
            // A large payload (a part of a big commit) is written from where it is,
            // not copied behind its header (a frame is checked whole by its CRC at
            // recovery, so two writes tear no differently).
            let header = segment::frame_header(lsn.get(), payload);
            self.dir.write_at(&name, offset, &header)?;
            self.dir
                .write_at(&name, offset + FRAME_HEADER_LEN as u64, payload)?;
        }
        st.next_lsn = st.next_lsn.plus(frame_len);
        Ok(())
    }
}

impl RedoSink for SharedLog {
    fn append(&self, payload: &[u8]) -> io::Result<Appended> {
        self.append_parts(&[payload])
    }

    fn max_record(&self) -> usize {
        self.max_record.load(Ordering::Relaxed)
    }

    fn append_parts(&self, parts: &[&[u8]]) -> io::Result<Appended> {
        if let Some(p) = parts.iter().find(|p| p.len() > segment::MAX_PAYLOAD) {
            return Err(io::Error::other(format!(
                "redo record of {} bytes exceeds the largest frame",
                p.len()
            )));
        }
        let mut parts = parts.iter();
        self.append_stream(&mut |buf| match parts.next() {
            Some(p) => {
                buf.clear();
                buf.extend_from_slice(p);
                true
            }
            None => false,
        })
    }

    /// Frames are written as `next` hands the payloads over, under one hold of the
    /// log's lock (a commit's parts stay consecutive).
    fn append_stream(&self, next: &mut dyn FnMut(&mut Vec<u8>) -> bool) -> io::Result<Appended> {
        self.append_frames(next, false)
    }

    /// Frames of up to 256 KiB are staged for the sync their commit waits for (see
    /// `LogState::stage`): a group commit writes them with one `pwrite` instead of
    /// one per commit. Bigger ones are written at once.
    fn append_stream_to_sync(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> io::Result<Appended> {
        self.append_frames(next, true)
    }

    fn written(&self) -> Lsn {
        Lsn(self.written.load(Ordering::Acquire))
    }

    fn installed(&self, phase: usize) {
        self.installing[phase].fetch_sub(1, Ordering::AcqRel);
    }

    fn make_durable(&self, upto: Lsn) -> io::Result<()> {
        /// The futex bit of sync number `n`.
        fn bit(n: u32) -> u32 {
            1 << (n % 32)
        }
        scope::outside(|| loop {
            // The wake-up sequence first: a sync that ends or a segment sealed after
            // this read changes it, so the sleep below does not start.
            let seq = self.wake_seq.load(Ordering::SeqCst);
            if self.flushed_lsn() >= upto {
                return Ok(());
            }
            let done = self.sync_done.load(Ordering::SeqCst);
            if self
                .syncing
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // The leader of sync number `sync_done + 1`: the last leader stored its
                // number before it released `syncing`.
                let number = self.sync_done.load(Ordering::SeqCst).wrapping_add(1);
                let r = self.sync_once(upto, number);
                self.sync_done.store(number, Ordering::SeqCst);
                self.syncing.store(0, Ordering::Release);
                self.wake_seq.fetch_add(1, Ordering::SeqCst);
                // (SeqCst: a sleeper counts itself before its futex reads `wake_seq`,
                // so it is counted here or sees the new sequence and does not sleep.)
                if self.sleepers.load(Ordering::SeqCst) > 0 {
                    crate::sync::futex_wake_bits(&self.wake_seq, i32::MAX, bit(number));
                    if self.written() > self.flushed_lsn() {
                        // Written past this sync: one sleeper of the next leads it.
                        crate::sync::futex_wake_bits(
                            &self.wake_seq,
                            1,
                            bit(number.wrapping_add(1)),
                        );
                    }
                }
                r?;
                continue;
            }
            // Sync number `done + 1` runs (or has just ended: then `wake_seq` has
            // moved and the futex does not sleep). Its target, once published, says
            // whether it covers `upto`; until then wait for either.
            let running = done.wrapping_add(1);
            let bits = if self.sync_started.load(Ordering::SeqCst) == running {
                if upto.get() <= self.sync_target.load(Ordering::SeqCst) {
                    bit(running)
                } else {
                    bit(running.wrapping_add(1))
                }
            } else {
                bit(running) | bit(running.wrapping_add(1))
            };
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let woken = crate::sync::futex_wait_bits(
                &self.wake_seq,
                seq,
                std::time::Duration::from_millis(self.sleep_limit_ms.load(Ordering::Relaxed)),
                bits,
            );
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !woken {
                self.sleep_timeouts.fetch_add(1, Ordering::Relaxed);
            }
        })
    }
}
