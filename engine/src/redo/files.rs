//! Names and headers of the files memfdw keeps in its data directory: log segments
//! (`{start lsn:016X}.redo`) and the checkpoint. One writer and one checker of the
//! common file header, one parser of segment names, one directory sync.
//!
//! ```text
//! header: magic [u8; 8] | version u32 | reserved u32 | start lsn u64 | crc32 u32 | pad u32
//! ```
//! The CRC covers the first 24 bytes.

use super::storage::LogDir;
use crate::ids::Lsn;
use std::io;
use std::path::Path;

pub const HEADER_LEN: usize = 32;
const SEGMENT_SUFFIX: &str = ".redo";

/// The header of a file of kind `magic`, format `version`, starting at `start_lsn`.
pub(crate) fn file_header(magic: &[u8; 8], version: u32, start_lsn: Lsn) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&start_lsn.get().to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The start LSN of a valid header of kind `magic`, format `version`, at the start of
/// `data`; None if there is none.
pub(crate) fn read_header(data: &[u8], magic: &[u8; 8], version: u32) -> Option<Lsn> {
    let h = data.get(..HEADER_LEN)?;
    let start = Lsn(u64::from_le_bytes(h[16..24].try_into().unwrap()));
    (h == file_header(magic, version, start)).then_some(start)
}

/// Is `data` a valid header of kind `magic` for a format version other than `version`?
pub(crate) fn other_version(data: &[u8], magic: &[u8; 8], version: u32) -> bool {
    let Some(h) = data.get(..HEADER_LEN) else {
        return false;
    };
    let v = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let start = Lsn(u64::from_le_bytes(h[16..24].try_into().unwrap()));
    v != version && h == file_header(magic, v, start)
}

pub fn segment_name(start_lsn: Lsn) -> String {
    format!("{:016X}{SEGMENT_SUFFIX}", start_lsn.get())
}

/// The start LSN a segment's name gives, if `name` is a segment's.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(Lsn)
}

/// The segments in `dir`, (start LSN, name) in LSN order.
pub fn list_segments(dir: &dyn LogDir) -> io::Result<Vec<(Lsn, String)>> {
    let mut segs: Vec<(Lsn, String)> = dir
        .list()?
        .into_iter()
        .filter_map(|n| parse_segment_name(&n).map(|l| (l, n)))
        .collect();
    segs.sort();
    Ok(segs)
}

/// Names of the segments in directory `path`, in LSN order.
pub fn segments(path: &str) -> io::Result<Vec<String>> {
    let dir = super::storage::FsDir::open(path)?;
    Ok(list_segments(&dir)?.into_iter().map(|(_, n)| n).collect())
}

/// Makes the directory's entries (new, renamed, removed files) durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// A segment's name without a heap allocation (the append path names the current
/// segment on every write).
#[derive(Clone, Copy)]
pub(crate) struct SegmentName([u8; 21]);

impl SegmentName {
    pub fn new(start_lsn: Lsn) -> SegmentName {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut b = [0u8; 21];
        for (i, c) in b[..16].iter_mut().enumerate() {
            *c = HEX[(start_lsn.get() >> (60 - 4 * i)) as usize & 0xF];
        }
        b[16..].copy_from_slice(SEGMENT_SUFFIX.as_bytes());
        SegmentName(b)
    }
}

impl std::ops::Deref for SegmentName {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        for lsn in [0, 1, 0xABCDEF, u64::MAX].map(Lsn) {
            assert_eq!(&*SegmentName::new(lsn), segment_name(lsn));
            assert_eq!(parse_segment_name(&segment_name(lsn)), Some(lsn));
        }
        assert_eq!(parse_segment_name("checkpoint"), None);
        assert_eq!(parse_segment_name("00000000000000.redo"), None);
    }

    #[test]
    fn headers_are_checked_whole() {
        let h = file_header(b"MEMFDWLG", 2, Lsn(77));
        assert_eq!(read_header(&h, b"MEMFDWLG", 2), Some(Lsn(77)));
        assert_eq!(read_header(&h, b"MEMFDWCP", 2), None);
        assert_eq!(read_header(&h, b"MEMFDWLG", 3), None);
        assert_eq!(read_header(&h[..31], b"MEMFDWLG", 2), None);
        let mut bad = h;
        bad[20] ^= 1;
        assert_eq!(read_header(&bad, b"MEMFDWLG", 2), None);
    }
}
