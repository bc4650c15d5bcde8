//! An append-only vector stored in chunks, for transactions.
//!
//! A write set of a million rows must not ask the arena for one growing buffer (its
//! doubling would need free runs the size of the whole set, plus the old copy), and an
//! abort must be able to free it without allocating: chunks are taken one at a time.
//!
//! Chunks grow: the first holds 8 elements, each next one twice as many, up to 4,096
//! elements. A one-row transaction takes a small block (it took room for 256
//! entries, 24 KiB, per transaction), and a big one takes blocks large enough to be
//! mapped into the process with one call each (see [`crate::pages`]) instead of a
//! page fault per 4 KiB (a million-row insert: some 2,500 faults, 2% of its time).

/// An append-only vector stored in chunks (see the module docs): the first holds
/// `FIRST` elements, each next one twice as many, up to `LAST` (both powers of two;
/// `FIRST == LAST` gives chunks of one size).
pub(crate) struct Chunked<T, const FIRST: usize = 8, const LAST: usize = 4096> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T, const FIRST: usize, const LAST: usize> Default for Chunked<T, FIRST, LAST> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T, const FIRST: usize, const LAST: usize> Chunked<T, FIRST, LAST> {
    /// Chunks that double: `FIRST << k` elements for chunk `k < GROWING`.
    const GROWING: usize = {
        assert!(FIRST.is_power_of_two() && LAST.is_power_of_two() && LAST >= FIRST);
        (LAST / FIRST).trailing_zeros() as usize
    };
    /// Elements held by the growing chunks together.
    const GROWN: usize = FIRST * ((1 << Self::GROWING) - 1);

    /// The chunk holding element `i`, and its place in that chunk.
    #[inline]
    fn locate(i: usize) -> (usize, usize) {
        if i < Self::GROWN {
            // Chunk k starts at FIRST * (2^k - 1).
            let k = (usize::BITS - 1 - (i / FIRST + 1).leading_zeros()) as usize;
            (k, i - FIRST * ((1 << k) - 1))
        } else {
            let j = i - Self::GROWN;
            (Self::GROWING + j / LAST, j % LAST)
        }
    }

    /// Elements chunk `k` holds.
    fn capacity_of(k: usize) -> usize {
        if k < Self::GROWING {
            FIRST << k
        } else {
            LAST
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, v: T) {
        let (k, at) = Self::locate(self.len);
        if at == 0 {
            debug_assert_eq!(k, self.chunks.len());
            let chunk = Vec::with_capacity(Self::capacity_of(k));
            crate::pages::populate_spare(&chunk);
            self.chunks.push(chunk);
        }
        self.chunks.last_mut().expect("chunk").push(v);
        self.len += 1;
    }

    pub fn get(&self, i: usize) -> &T {
        let (k, at) = Self::locate(i);
        &self.chunks[k][at]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut T {
        let (k, at) = Self::locate(i);
        &mut self.chunks[k][at]
    }

    /// The chunks, in order.
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

#[cfg(test)]
mod tests {
    use super::*;

    type C = Chunked<usize>;
    const FIRST: usize = 8;
    const LAST: usize = 4096;
    const GROWING: usize = C::GROWING;
    const GROWN: usize = C::GROWN;

    #[test]
    fn elements_are_found_where_they_were_pushed_across_growing_and_full_chunks() {
        let n = GROWN + 2 * LAST + 3;
        let mut v = C::default();
        for i in 0..n {
            v.push(i);
        }
        assert_eq!(v.len(), n);
        for i in 0..n {
            assert_eq!(*v.get(i), i);
        }
        *v.get_mut(GROWN) += 1;
        assert_eq!(*v.get(GROWN), GROWN + 1);
        *v.get_mut(GROWN) -= 1;
        // Chunk sizes: FIRST, 2 FIRST, ... LAST, then LAST each (the last one partial).
        let sizes: Vec<usize> = v.chunks.iter().map(Vec::len).collect();
        let mut expected: Vec<usize> = (0..GROWING).map(|k| FIRST << k).collect();
        expected.extend([LAST, LAST, 3]);
        assert_eq!(sizes, expected);
        // Popping across chunk boundaries and pushing again keeps the mapping.
        for i in (GROWN - 5..n).rev() {
            assert_eq!(v.pop(), Some(i));
        }
        for i in GROWN - 5..GROWN + 10 {
            v.push(i);
        }
        for i in 0..GROWN + 10 {
            assert_eq!(*v.get(i), i);
        }
        let all: Vec<usize> = v.take_all().collect();
        assert_eq!(all, (0..GROWN + 10).collect::<Vec<_>>());
        assert!(v.is_empty());
    }

    #[test]
    fn chunks_of_one_size() {
        type F = Chunked<usize, 256, 256>;
        let mut v = F::default();
        for i in 0..600 {
            v.push(i);
        }
        assert_eq!(
            v.chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        assert!(v.chunks.iter().all(|c| c.capacity() == 256));
        assert_eq!(*v.get(511), 511);
        assert_eq!(F::locate(256), (1, 0));
    }

    #[test]
    fn locate_matches_the_chunk_sizes() {
        let mut i = 0;
        for k in 0..GROWING + 3 {
            for at in [0, C::capacity_of(k) - 1] {
                assert_eq!(C::locate(i + at), (k, at), "element {}", i + at);
            }
            i += C::capacity_of(k);
        }
    }
}
