//! Where log segments live: a directory of files behind a small trait, so tests can
//! fail writes and syncs and cut files at any byte (as a crash would) through the
//! same code that production runs (an in-memory directory in `engine/tests/common`).
//!
//! Writes are positional: every process of the server appends to the current segment
//! at an offset it reserved under the log's lock (see [`super::shared`]).

use super::files::sync_dir;
use std::cell::RefCell;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of log segments. Implementations are shared by every process using
/// the log (a `Box<dyn LogDir>` lives in the arena), so per-process state such as file
/// descriptors must be kept per process.
pub trait LogDir: Send + Sync {
    /// File names, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates (or truncates) `name`, durably (its directory entry survives a crash).
    fn create(&self, name: &str) -> io::Result<()>;
    /// Writes `buf` at `offset` of `name`. Not durable until [`LogDir::sync`].
    fn write_at(&self, name: &str, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte written to `name` so far durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to` (replacing it), durably: the rename survives a crash.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Writes zeros over the first `len` bytes of `name`, durably (the file then has
    /// that size).
    fn zero_fill(&self, name: &str, len: u64) -> io::Result<()> {
        let chunk = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(chunk.len() as u64) as usize;
            self.write_at(name, at, &chunk[..n])?;
            at += n as u64;
        }
        self.sync(name)
    }
    /// Where the files are, for messages and for files kept beside the log
    /// (checkpoints); None if they are not in the file system.
    fn path(&self) -> Option<&Path> {
        None
    }
    /// Drops whatever this process keeps open under `name`: another process may
    /// have renamed that file since (the next access opens the name afresh).
    fn forget_open(&self, _name: &str) {}
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

    /// Runs `f` on this process's descriptor of file `name`, opening it the first time
    /// (a descriptor inherited across `fork` is not reused).
    fn with_file<R>(
        &self,
        name: &str,
        f: impl FnOnce(&std::fs::File) -> io::Result<R>,
    ) -> io::Result<R> {
        let generation = crate::epoch::fork_generation();
        let me = self as *const FsDir as usize;
        // The cache is this process's own: private memory even inside an engine scope.
        crate::scope::outside(|| {
            OPEN.with(|cell| {
                let mut slot = cell.borrow_mut();
                let usable = matches!(&*slot,
                Some(o) if o.generation == generation && o.dir == me && o.name == name);
                if !usable {
                    // A descriptor inherited from the parent is closed here harmlessly
                    // (the parent has its own copy).
                    *slot = None;
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(self.path.join(name))?;
                    *slot = Some(OpenFile {
                        generation,
                        dir: me,
                        name: name.to_owned(),
                        file,
                    });
                }
                f(&slot.as_ref().expect("opened above").file)
            })
        })
    }
}

impl FsDir {
    /// Forgets this process's descriptor of `name` (the name now means another file).
    fn forget(&self, name: &str) {
        let me = self as *const FsDir as usize;
        crate::scope::outside(|| {
            OPEN.with(|cell| {
                let mut slot = cell.borrow_mut();
                if matches!(&*slot, Some(o) if o.dir == me && o.name == name) {
                    *slot = None;
                }
            })
        })
    }
}

/// This process's descriptor of the file it last wrote (the growing segment).
struct OpenFile {
    generation: u64,
    dir: usize,
    name: String,
    file: std::fs::File,
}

thread_local! {
    static OPEN: RefCell<Option<OpenFile>> = const { RefCell::new(None) };
}

impl LogDir for FsDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn create(&self, name: &str) -> io::Result<()> {
        self.forget(name);
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.path.join(name))?;
        // The new name must survive a crash too.
        sync_dir(&self.path)
    }

    fn write_at(&self, name: &str, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.with_file(name, |f| f.write_all_at(buf, offset))
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.with_file(name, |f| f.sync_data())
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
        self.forget(name);
        std::fs::remove_file(self.path.join(name))?;
        sync_dir(&self.path)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        std::fs::rename(self.path.join(from), self.path.join(to))?;
        sync_dir(&self.path)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn forget_open(&self, name: &str) {
        self.forget(name);
    }
}
