//! Log segments: framing, creating a segment, and the recovering reader. (Appending
//! is [`super::shared::SharedLog`]'s.)
//!
//! A segment file is named after the LSN of its first byte (see [`super::files`]) and
//! starts with a file header (magic "MEMFDWLG"); then come frames:
//!
//! ```text
//! frame:  payload length u32 | crc32 u32 | lsn u64 | payload
//! ```
//! The frame CRC covers the length, the LSN and the payload. A frame's LSN is its
//! position in the log: the segment's start LSN plus its offset after the header, so a
//! frame found at the wrong place is detected too. LSNs only grow; the next segment
//! starts at the LSN where the previous one ends.
//!
//! Recovery reads segments in LSN order and accepts exactly the longest valid prefix:
//! * an incomplete or corrupt frame at the end of the last segment, with no valid
//!   frame after it, is a torn write: the segment is cut there ([`Truncation`]);
//! * anything else (a bad frame followed by valid ones, a short sealed segment, a gap
//!   between segments, a bad header) is corruption: recovery stops with an error that
//!   names the file and the offset, and applies nothing past it.

use super::files::{self, file_header, list_segments, segment_name, HEADER_LEN};
use super::storage::LogDir;
use crate::ids::Lsn;
use std::io;

const MAGIC: &[u8; 8] = b"MEMFDWLG";
/// 2: CREATE TABLE records carry the database; index DDL records.
/// 3: tables are named by (database, relation) in every record.
const VERSION: u32 = 3;
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Why recovery could not read the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("redo log I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("redo log corrupt in {file} at offset {offset}: {what}")]
    Corrupt {
        file: String,
        offset: u64,
        what: &'static str,
    },
    #[error("redo log segment missing: {file} should start at LSN {expected:X}, found {found:X}")]
    MissingSegment {
        file: String,
        expected: Lsn,
        found: Lsn,
    },
    #[error("redo record of {0} bytes is too large")]
    TooLarge(usize),
}

/// A torn tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub file: String,
    pub offset: u64,
    pub bytes_dropped: u64,
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Where the log that recovery needed begins (the start of the first segment).
    pub origin: Lsn,
    /// LSN after the last valid frame: where the log continues.
    pub end_lsn: Lsn,
    pub records: u64,
    pub segments: usize,
    pub truncated: Option<Truncation>,
    /// Big commits whose parts were not followed by their commit record (never
    /// acknowledged), dropped.
    pub incomplete_commits: u64,
    /// Commits skipped because their PostgreSQL transaction did not commit.
    pub aborted_commits: u64,
    /// The checkpoint recovery started from, if any.
    pub checkpoint: Option<LoadedCheckpoint>,
}

/// The checkpoint file recovery loaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadedCheckpoint {
    pub start_lsn: Lsn,
    pub bytes: u64,
    /// When the file was written (its modification time), Unix milliseconds.
    pub unix_ms: u64,
}

/// Creates the segment starting at `start_lsn`: its header, durably.
pub(crate) fn create_segment(dir: &dyn LogDir, start_lsn: Lsn, size: u64) -> io::Result<()> {
    let name = segment_name(start_lsn);
    dir.create(&name)?;
    // Written out to its full size first (zeros), as PostgreSQL does with WAL
    // segments: a sync after an append then flushes data only, no file-size change
    // or block allocation (on ext4 a journal commit with every group commit).
    // Recovery reads a zero tail as the end of the segment.
    dir.zero_fill(&name, size)?;
    dir.write_at(&name, 0, &file_header(MAGIC, VERSION, start_lsn))?;
    dir.sync(&name)
}

/// Spare segments kept written out ahead of need (see
/// [`SharedLog::prepare_spare`](super::shared::SharedLog::prepare_spare)): a commit
/// larger than a segment moves through several.
pub const SPARES: usize = 2;

/// The name of spare segment `i` (`< SPARES`): written out (zeros) ahead of need,
/// outside the log's lock, and renamed into place when the log moves to a new
/// segment. Not a segment name: recovery does not read it.
pub fn spare_name(i: usize) -> String {
    format!("spare-segment-{i}")
}

/// Writes out spare segment `i`: `size` bytes of zeros, durably (replacing a leftover
/// one).
pub(crate) fn make_spare(dir: &dyn LogDir, i: usize, size: u64) -> io::Result<()> {
    let name = spare_name(i);
    let made = dir.create(&name).and_then(|()| dir.zero_fill(&name, size));
    if made.is_err() {
        // (A full disk: leave the space to the segments themselves.)
        let _ = dir.remove(&name);
    }
    made
}

/// Makes spare segment `i` the segment starting at `start_lsn`: its header, durably,
/// then the rename (durable too). A crash before the rename leaves the spare; a crash
/// after it, a complete new segment with no frames.
pub(crate) fn install_spare(dir: &dyn LogDir, i: usize, start_lsn: Lsn) -> io::Result<()> {
    let name = spare_name(i);
    // A descriptor this process kept under the spare's name may be of an earlier
    // spare, renamed into a live segment since by another process.
    dir.forget_open(&name);
    let installed = dir
        .write_at(&name, 0, &file_header(MAGIC, VERSION, start_lsn))
        .and_then(|()| dir.sync(&name))
        .and_then(|()| dir.rename(&name, &segment_name(start_lsn)));
    if installed.is_err() {
        // The caller creates the segment itself: free the spare's space for it (a
        // new spare is made later).
        dir.forget_open(&name);
        let _ = dir.remove(&name);
    }
    installed
}

fn frame_crc(len: u32, lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends `payload` framed at position `lsn` to `out` (a log frame's LSN, or a
/// checkpoint frame's sequence number).
pub fn encode_frame(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    out.extend_from_slice(&frame_header(lsn, payload));
    out.extend_from_slice(payload);
}

/// The header of the frame of `payload` at position `lsn` (what [`encode_frame`] puts
/// before the payload): for writing a large payload from where it is.
pub fn frame_header(lsn: u64, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let len = payload.len() as u32;
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&frame_crc(len, lsn, payload).to_le_bytes());
    h[8..].copy_from_slice(&lsn.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A well-formed frame at `pos` of `data` whose LSN is `lsn`, if any: (payload len).
pub(crate) fn frame_at(data: &[u8], pos: usize, lsn: u64) -> Option<usize> {
    if data.len() - pos < FRAME_HEADER_LEN {
        return None;
    }
    let len = u32_at(data, pos) as usize;
    if len > MAX_PAYLOAD
        || data.len() - pos - FRAME_HEADER_LEN < len
        || u64_at(data, pos + 8) != lsn
    {
        return None;
    }
    let payload = &data[pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len];
    (frame_crc(len as u32, lsn, payload) == u32_at(data, pos + 4)).then_some(len)
}

/// True if some valid frame starts after `pos` in `data` (segment starting at
/// `seg_lsn`): then a bad frame at `pos` is corruption, not a torn tail.
fn valid_frame_after(data: &[u8], pos: usize, seg_lsn: Lsn) -> bool {
    (pos + 1..data.len().saturating_sub(FRAME_HEADER_LEN - 1))
        .any(|p| frame_at(data, p, seg_lsn.get() + (p - HEADER_LEN) as u64).is_some())
}

/// Reads every segment of `dir` in order, calls `apply(lsn, payload)` for each valid
/// record, cuts a torn tail, and deletes an empty torn last segment.
pub fn recover(
    dir: &dyn LogDir,
    apply: impl FnMut(Lsn, &[u8]) -> Result<(), LogError>,
) -> Result<Recovered, LogError> {
    recover_durable(dir, Lsn(0), apply)
}

/// [`recover`], knowing that the log was durable up to `durable`: a damaged frame
/// below it is not a torn write but lost acknowledged data, an error (nothing is cut).
pub fn recover_durable(
    dir: &dyn LogDir,
    durable: Lsn,
    mut apply: impl FnMut(Lsn, &[u8]) -> Result<(), LogError>,
) -> Result<Recovered, LogError> {
    recover_frames(dir, durable, |lsn, data, range| apply(lsn, &data[range]))
}

/// [`recover_durable`], handing each payload over as its range of the segment's
/// bytes, which the caller may keep (commit parts wait for their commit record
/// without a copy).
pub fn recover_frames(
    dir: &dyn LogDir,
    durable: Lsn,
    mut apply: impl FnMut(Lsn, &std::sync::Arc<Vec<u8>>, std::ops::Range<usize>) -> Result<(), LogError>,
) -> Result<Recovered, LogError> {
    let segs = list_segments(dir)?;
    let mut out = Recovered {
        segments: segs.len(),
        origin: segs.first().map_or(Lsn(0), |s| s.0),
        end_lsn: segs.first().map_or(Lsn(0), |s| s.0),
        ..Recovered::default()
    };
    let mut expected: Option<Lsn> = None;
    let last = segs.len().saturating_sub(1);
    for (i, (start, name)) in segs.iter().enumerate() {
        let is_last = i == last;
        if let Some(e) = expected {
            if *start != e {
                return Err(LogError::MissingSegment {
                    file: name.clone(),
                    expected: e,
                    found: *start,
                });
            }
        }
        let data = std::sync::Arc::new(dir.read(name)?);
        let corrupt = |offset: usize, what| LogError::Corrupt {
            file: name.clone(),
            offset: offset as u64,
            what,
        };
        let h = file_header(MAGIC, VERSION, *start);
        if data.len() < HEADER_LEN || data[..HEADER_LEN] != h {
            // A last segment whose creation was cut short held nothing yet: cut
            // in its header, or before it (`create_segment` writes the zeros first).
            // A segment's header is durable before any frame is written to it, so
            // a file of zeros only never held frames, unless storage lost synced
            // data (the durable mark catches that when it is recent enough).
            let cut_short = (data.len() < HEADER_LEN && data[..] == h[..data.len()])
                || (*start >= durable && data.iter().all(|&b| b == 0));
            if is_last && cut_short {
                dir.remove(name)?;
                out.segments -= 1;
                out.end_lsn = *start;
                return Ok(out);
            }
            if files::other_version(&data, MAGIC, VERSION) {
                return Err(corrupt(
                    0,
                    "segment of another format version (this memfdw reads format 3)",
                ));
            }
            return Err(corrupt(0, "bad segment header"));
        }
        let mut pos = HEADER_LEN;
        while pos < data.len() {
            let lsn = start.plus((pos - HEADER_LEN) as u64);
            match frame_at(&data, pos, lsn.get()) {
                Some(len) => {
                    apply(
                        lsn,
                        &data,
                        pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len,
                    )?;
                    out.records += 1;
                    pos += FRAME_HEADER_LEN + len;
                }
                None if data[pos..].iter().all(|&b| b == 0) => {
                    // The unwritten rest of a segment written out in advance (see
                    // `create_segment`): the end of its frames, not damage; unless the
                    // log was known durable past it (acknowledged commits lost).
                    if is_last && lsn < durable {
                        return Err(corrupt(
                            pos,
                            "the log ends below the LSN it was durable up to (acknowledged commits lost)",
                        ));
                    }
                    break;
                }
                None => {
                    if !is_last {
                        return Err(corrupt(pos, "bad or incomplete frame in a sealed segment"));
                    }
                    if valid_frame_after(&data, pos, *start) {
                        return Err(corrupt(pos, "bad frame followed by valid frames"));
                    }
                    if lsn < durable {
                        return Err(corrupt(
                            pos,
                            "bad or incomplete frame below the LSN the log was durable up to (acknowledged commits lost)",
                        ));
                    }
                    dir.truncate(name, pos as u64)?;
                    out.truncated = Some(Truncation {
                        file: name.clone(),
                        offset: pos as u64,
                        bytes_dropped: (data.len() - pos) as u64,
                    });
                    break;
                }
            }
        }
        let end = start.plus((pos - HEADER_LEN) as u64);
        expected = Some(end);
        out.end_lsn = end;
    }
    Ok(out)
}
