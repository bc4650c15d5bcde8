//! An append-only vector stored in fixed-size chunks, for transactions.
//!
//! A write set of a million rows must not ask the arena for one growing buffer (its
//! doubling would need free runs the size of the whole set, plus the old copy), and an
//! abort must be able to free it without allocating: chunks are taken one at a time.

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
