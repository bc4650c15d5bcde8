//! The control file: what recovery must find, so that a missing checkpoint, missing
//! segments or a log cut short of acknowledged commits are errors instead of a
//! "successful" recovery with committed rows gone.
//!
//! ```text
//! control: file header (magic "MEMFDWCT", start lsn = origin) | checkpoint u64 (u64::MAX: none) | durable u64 | crc32 u32
//! ```
//! * `origin`: where the log began (a fresh directory's first LSN);
//! * `checkpoint`: start LSN of the last complete checkpoint, if one was taken;
//! * `durable`: the log is known to be durable (synced) up to here.
//!
//! It is written whole to `control.tmp`, synced, and renamed over `control` (atomic);
//! its writers are the log's start, every checkpoint (before it deletes the segments it
//! covers) and the background worker every few seconds (`durable`).

use super::files::{file_header, read_header, HEADER_LEN};
use super::storage::LogDir;
use crate::ids::Lsn;
use std::io;

pub const CONTROL_FILE: &str = "control";
const TMP_FILE: &str = "control.tmp";
const MAGIC: &[u8; 8] = b"MEMFDWCT";
const VERSION: u32 = 3;
const LEN: usize = HEADER_LEN + 8 + 8 + 4;

/// What the control file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub origin: Lsn,
    pub checkpoint: Option<Lsn>,
    pub durable: Lsn,
}

impl Control {
    fn encode(&self) -> Vec<u8> {
        let mut b = file_header(MAGIC, VERSION, self.origin).to_vec();
        b.extend_from_slice(&self.checkpoint.map_or(u64::MAX, Lsn::get).to_le_bytes());
        b.extend_from_slice(&self.durable.get().to_le_bytes());
        let crc = crc32fast::hash(&b[HEADER_LEN..]);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Control> {
        let origin = read_header(b, MAGIC, VERSION)?;
        if b.len() != LEN {
            return None;
        }
        let body = &b[HEADER_LEN..LEN - 4];
        if crc32fast::hash(body) != u32::from_le_bytes(b[LEN - 4..].try_into().unwrap()) {
            return None;
        }
        let checkpoint = u64::from_le_bytes(body[..8].try_into().unwrap());
        Some(Control {
            origin,
            checkpoint: (checkpoint != u64::MAX).then_some(Lsn(checkpoint)),
            durable: Lsn(u64::from_le_bytes(body[8..16].try_into().unwrap())),
        })
    }
}

/// The control file of `dir`: None if there is none, an error if it is unreadable.
pub fn read(dir: &dyn LogDir) -> Result<Option<Control>, super::segment::LogError> {
    // A leftover temporary file is a write that never completed: the old file holds.
    if dir.list()?.iter().any(|n| n == TMP_FILE) {
        dir.remove(TMP_FILE)?;
    }
    match dir.read(CONTROL_FILE) {
        Ok(b) => Control::decode(&b)
            .map(Some)
            .ok_or(super::segment::LogError::Corrupt {
                file: CONTROL_FILE.to_owned(),
                offset: 0,
                what: "unreadable control file",
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the control file of `dir` by `c`, durably and atomically.
pub fn write(dir: &dyn LogDir, c: &Control) -> io::Result<()> {
    dir.create(TMP_FILE)?;
    dir.write_at(TMP_FILE, 0, &c.encode())?;
    dir.sync(TMP_FILE)?;
    dir.rename(TMP_FILE, CONTROL_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trips_and_damage_is_detected() {
        for c in [
            Control {
                origin: Lsn(0),
                checkpoint: None,
                durable: Lsn(0),
            },
            Control {
                origin: Lsn(7),
                checkpoint: Some(Lsn(4096)),
                durable: Lsn(1 << 40),
            },
        ] {
            let b = c.encode();
            assert_eq!(Control::decode(&b), Some(c));
            for i in 0..b.len() {
                let mut d = b.clone();
                d[i] ^= 0x10;
                assert_eq!(Control::decode(&d), None, "flip at {i}");
            }
            assert_eq!(Control::decode(&b[..b.len() - 1]), None);
        }
    }
}
