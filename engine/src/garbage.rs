//! Containers for transactions that never need a large contiguous allocation, and the
//! batched retirement of unlinked objects through the epoch collector.
//!
//! A write set of a million rows must not ask the arena for one growing buffer (its
//! doubling would need free runs the size of the whole set, plus the old copy), and
//! retiring each row with its own deferred function would fill epoch bags with 32
//! bytes per object. Both are built from fixed-size chunks instead.

use crate::engine::Engine;
use crate::record::{self, Record};
use crossbeam_epoch::Guard;

/// Elements per chunk.
const CHUNK: usize = 256;

/// An append-only vector stored in fixed-size chunks.
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the next push allocates a new chunk.
    pub fn next_push_allocates(&self) -> bool {
        self.len.is_multiple_of(CHUNK)
    }

    /// Bytes a new chunk takes.
    pub fn chunk_bytes() -> usize {
        CHUNK * std::mem::size_of::<T>()
    }

    pub fn push(&mut self, v: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("chunk").push(v);
        self.len += 1;
    }

    pub fn get(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    /// The chunks, each at most `CHUNK` long.
    pub fn into_chunks(self) -> Vec<Vec<T>> {
        self.chunks
    }

    /// The last element.
    pub fn last(&self) -> Option<&T> {
        self.chunks.last().and_then(|c| c.last())
    }

    /// Removes the last element.
    pub fn pop(&mut self) -> Option<T> {
        let c = self.chunks.last_mut()?;
        let v = c.pop()?;
        if c.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        Some(v)
    }

    /// Empties the vector, returning its chunks (no allocation: a transaction that
    /// failed for lack of memory must still be able to roll back).
    pub fn take_chunks(&mut self) -> Vec<Vec<T>> {
        self.len = 0;
        std::mem::take(&mut self.chunks)
    }

    /// Empties the vector, yielding its elements.
    pub fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }
}

/// An object unlinked from every shared structure, to be freed once no reader can
/// hold it.
#[derive(Clone, Copy)]
pub(crate) enum Retired {
    /// A row buffer.
    Buffer(*mut u8),
    /// A record, with its current buffer.
    Record(*const Record),
}

/// Bytes accounted for a record besides its buffer (record and skip-list node).
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<Record>() + 96;

impl Retired {
    /// # Safety
    /// Nobody may reach the object any more.
    unsafe fn free(self, engine: &Engine) {
        // SAFETY: forwarded contract.
        unsafe {
            match self {
                Retired::Buffer(p) => {
                    let size = record::rowbuf_size(record::rowbuf_slice(p).len());
                    record::rowbuf_free(p);
                    engine.account(-(size as isize));
                }
                Retired::Record(r) => {
                    let data = (*r).data_ptr();
                    let size = RECORD_BYTES
                        + if data.is_null() {
                            0
                        } else {
                            record::rowbuf_size(record::rowbuf_slice(data).len())
                        };
                    record::record_free(r);
                    engine.account(-(size as isize));
                }
            }
        }
    }
}

/// Objects retired by one commit or abort, handed to the collector in chunks.
#[derive(Default)]
pub(crate) struct Garbage {
    batch: Chunked<Retired>,
}

struct SendBatch(Vec<Retired>);
// SAFETY: the batch holds pointers to unlinked objects only, freed exactly once by
// whichever process runs the deferred function.
unsafe impl Send for SendBatch {}

/// Arena bytes the retirement of one object needs: its slot in a batch, plus a share
/// of the deferred function and the epoch bag slot of each batch.
pub(crate) const BYTES_PER_RETIRED: usize = std::mem::size_of::<Retired>() + 1;

impl Garbage {
    pub fn push(&mut self, r: Retired) {
        if let Retired::Buffer(p) = r {
            if p.is_null() {
                return;
            }
        }
        self.batch.push(r);
    }

    /// Defers the freeing of everything collected until no pinned reader remains.
    pub fn retire(self, engine: &'static Engine, guard: &Guard) {
        for chunk in self.batch.into_chunks() {
            defer_batch(engine, guard, chunk);
        }
    }
}

fn defer_batch(engine: &'static Engine, guard: &Guard, batch: Vec<Retired>) {
    let batch = SendBatch(batch);
    // SAFETY: every object in the batch is unlinked; readers that loaded one hold
    // guards older than this deferral, so it runs only after they are gone. The
    // function runs inside an engine scope (all pins are), in some process sharing
    // the arena.
    unsafe {
        guard.defer_unchecked(move || {
            let batch = batch;
            for r in batch.0 {
                r.free(engine);
            }
        })
    };
}
