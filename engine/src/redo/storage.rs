//! Where log segments live: a directory of files behind a small trait, so tests can
//! fail writes and syncs and cut files at any byte (as a crash would).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// An append-only file.
pub trait LogFile: Send {
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A directory of log segments.
pub trait LogDir: Send + Sync {
    /// File names, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates (or truncates) `name` for appending.
    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
}

/// Segments as files in a directory of the file system.
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    pub fn open(path: impl Into<PathBuf>) -> io::Result<FsDir> {
        let path = path.into();
        std::fs::create_dir_all(&path)?;
        Ok(FsDir { path })
    }

    fn sync_dir(&self) -> io::Result<()> {
        std::fs::File::open(&self.path)?.sync_all()
    }
}

struct FsFile(std::fs::File);

impl LogFile for FsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl LogDir for FsDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.path.join(name))?;
        // The new name must survive a crash too.
        self.sync_dir()?;
        Ok(Box::new(FsFile(f)))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path.join(name))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(name))?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))?;
        self.sync_dir()
    }
}

/// Faults a [`MemDir`] injects.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// Fail every append once this many bytes were appended in total.
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
    appended: u64,
    syncs: u64,
    faults: Faults,
}

/// An in-memory directory for tests: it can fail I/O on demand and simulate a crash
/// that keeps every synced byte and an arbitrary prefix of the rest.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<MemState>>,
}

struct MemFile {
    name: String,
    state: Arc<Mutex<MemState>>,
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    pub fn set_faults(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }

    /// A crash: every file keeps its synced prefix plus `keep(name, unsynced_len)`
    /// more bytes of what was appended after it.
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

impl LogFile for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        if let Some(limit) = s.faults.fail_appends_after {
            if s.appended + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected write failure",
                ));
            }
        }
        s.appended += buf.len() as u64;
        s.files
            .get_mut(&self.name)
            .expect("file")
            .data
            .extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let n = s.syncs;
        s.syncs += 1;
        if s.faults.fail_syncs_from.is_some_and(|from| n >= from) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let f = s.files.get_mut(&self.name).expect("file");
        f.synced = f.data.len();
        Ok(())
    }
}

impl LogDir for MemDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().unwrap().files.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(name.to_owned(), MemFileState::default());
        Ok(Box::new(MemFile {
            name: name.to_owned(),
            state: self.state.clone(),
        }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let s = self.state.lock().unwrap();
        s.files
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        let f = s
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f.data.truncate(len as usize);
        f.synced = f.synced.min(f.data.len());
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.state.lock().unwrap().files.remove(name);
        Ok(())
    }
}
