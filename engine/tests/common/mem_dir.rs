//! An in-memory log directory for tests: it can fail I/O on demand and simulate a
//! crash that keeps every synced byte and an arbitrary prefix of the rest. The shared
//! log writes through it exactly as through the file system.

use memfdw_engine::redo::storage::LogDir;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

/// Faults a [`MemDir`] injects.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// Fail every write once this many bytes were written in total.
    pub fail_appends_after: Option<u64>,
    /// Fail every sync from this (0-based) sync call on.
    pub fail_syncs_from: Option<u64>,
}

#[derive(Default)]
struct MemFileState {
    data: Vec<u8>,
    /// Bytes known durable (the prefix synced).
    synced: usize,
}

#[derive(Default)]
struct MemState {
    files: BTreeMap<String, MemFileState>,
    written: u64,
    syncs: u64,
    faults: Faults,
}

#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    pub fn set_faults(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }

    /// Sync calls so far (the number the next one has in [`Faults::fail_syncs_from`]).
    #[allow(dead_code)]
    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }

    /// A crash: every file keeps its synced prefix plus `keep(name, unsynced_len)`
    /// more bytes of what was written after it.
    pub fn crash(&self, mut keep: impl FnMut(&str, usize) -> usize) {
        let mut s = self.state.lock().unwrap();
        for (name, f) in s.files.iter_mut() {
            let extra = f.data.len() - f.synced;
            let k = keep(name, extra).min(extra);
            f.data.truncate(f.synced + k);
            f.synced = f.data.len();
        }
    }

    /// Raw access for corruption tests.
    pub fn with_file<R>(&self, name: &str, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut s = self.state.lock().unwrap();
        let file = s.files.get_mut(name).expect("no such file");
        let r = f(&mut file.data);
        file.synced = file.synced.min(file.data.len());
        r
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, name.to_owned())
}

impl LogDir for MemDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().unwrap().files.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<()> {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(name.to_owned(), MemFileState::default());
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        if let Some(limit) = s.faults.fail_appends_after {
            if s.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected write failure",
                ));
            }
        }
        s.written += buf.len() as u64;
        let f = s.files.get_mut(name).ok_or_else(|| not_found(name))?;
        let (at, end) = (offset as usize, offset as usize + buf.len());
        if f.data.len() < end {
            f.data.resize(end, 0);
        }
        f.data[at..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let n = s.syncs;
        s.syncs += 1;
        if s.faults.fail_syncs_from.is_some_and(|from| n >= from) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let f = s.files.get_mut(name).ok_or_else(|| not_found(name))?;
        f.synced = f.data.len();
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let s = self.state.lock().unwrap();
        s.files
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| not_found(name))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let f = s.files.get_mut(name).ok_or_else(|| not_found(name))?;
        f.data.truncate(len as usize);
        f.synced = f.synced.min(f.data.len());
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.lock().unwrap().files.remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let f = s.files.remove(from).ok_or_else(|| not_found(from))?;
        s.files.insert(to.to_owned(), f);
        Ok(())
    }

    /// Segments grow here (no zeros written ahead): a crash can then lose exactly the
    /// bytes written since the last sync. (Zero tails are tested on real files.)
    fn zero_fill(&self, _name: &str, _len: u64) -> io::Result<()> {
        Ok(())
    }
}
