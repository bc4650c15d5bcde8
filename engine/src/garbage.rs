//! Batched retirement of unlinked objects through the epoch collector.
//!
//! Retiring each row with its own deferred function would fill epoch bags with 32
//! bytes per object; retired objects are collected in fixed-size chunks (see
//! [`crate::chunked`]) and each chunk is deferred as one.

use crate::chunked::Chunked;
use crate::engine::Engine;
use crate::record::{self, Record};
use crossbeam_epoch::Guard;

/// An object unlinked from every shared structure, to be freed once no reader can
/// hold it.
#[derive(Clone, Copy)]
pub(crate) enum Retired {
    /// A row buffer.
    Buffer(*mut u8),
    /// A record, with its current buffer and its chain of older versions.
    Record(*const Record),
    /// A chain of older versions detached from its record (see [`crate::versions`]).
    Chain(*mut crate::versions::OldVersion),
}

/// Bytes accounted for a record besides its buffer (record and row-id slot).
pub(crate) const RECORD_BYTES: usize =
    std::mem::size_of::<Record>() + crate::rowid_index::SLOT_BYTES;

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
                    let chain = record::record_free(r);
                    engine.account(-((size + chain) as isize));
                }
                Retired::Chain(c) => {
                    let bytes = crate::versions::free_chain(c);
                    engine.account(-(bytes as isize));
                }
            }
        }
    }
}

/// Objects retired by one commit or abort, handed to the collector in chunks of one
/// size ([`BYTES_PER_RETIRED`] counts a share of each chunk's deferred function; the
/// chunks are arena memory, so growing ones would take up to twice the bytes
/// reserved).
#[derive(Default)]
pub(crate) struct Garbage {
    batch: Chunked<Retired, 256, 256>,
}

struct SendBatch(Vec<Retired>);
// SAFETY: the batch holds pointers to unlinked objects only, freed exactly once by
// whichever process runs the deferred function.
unsafe impl Send for SendBatch {}

/// Arena bytes the retirement of one object needs: its slot in a batch, plus a share
/// of the deferred function and the epoch bag slot of each batch.
pub(crate) const BYTES_PER_RETIRED: usize = std::mem::size_of::<Retired>() + 1;

/// Arena bytes one skip-list node removal takes until the epoch advances: crossbeam
/// defers each node's destruction (a deferred function of four words in a bag of 64,
/// a bag sealed into a queue node when full).
pub(crate) const BYTES_PER_DEFERRED: usize = 40;

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
