//! Putting pages in this process's page tables before they are written.
//!
//! A first write to a page of fresh memory (shared or private) takes a page fault, about
//! a microsecond each on this kind of machine. Memory about to be filled in bulk is
//! better mapped with one `MADV_POPULATE_WRITE` per range: the arena maps its runs so
//! (`Arena::map_ahead`), and large private buffers of a transaction that grow by
//! appends (its write set and the write set's index) map their new capacity.

/// Below this many bytes of new capacity a buffer is left to fault (a call costs about
/// as much as a few faults).
const MIN_BYTES: usize = 64 << 10;

/// Faults the pages of `[from, to)` into this process's page tables, allocating those
/// not yet resident, with one `MADV_POPULATE_WRITE` (Linux 5.14; EINVAL before), as
/// writes would, without changing any byte: other threads or processes may be writing
/// them meanwhile.
///
/// # Safety
/// `from` and `to` must be page-aligned (4 KiB) and `[from, to)` mapped writable in
/// this process (for the call's duration).
pub(crate) unsafe fn populate(from: usize, to: usize) -> std::io::Result<()> {
    debug_assert!(from.is_multiple_of(4096) && to.is_multiple_of(4096) && from <= to);
    // SAFETY: the range is mapped writable and page-aligned (the caller's contract);
    // the advice changes no byte.
    let r = unsafe {
        libc::madvise(
            from as *mut libc::c_void,
            to - from,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Maps the whole pages of `v`'s spare capacity (allocated, not yet written) if it is
/// at least [`MIN_BYTES`]. Best effort: on failure the pages fault in as they are
/// written.
pub(crate) fn populate_spare<T>(v: &Vec<T>) {
    let size = std::mem::size_of::<T>();
    let spare = (v.capacity() - v.len()) * size;
    if spare < MIN_BYTES {
        return;
    }
    let start = v.as_ptr() as usize + v.len() * size;
    let (from, to) = (start.next_multiple_of(4096), (start + spare) / 4096 * 4096);
    if from < to {
        // SAFETY: [from, to) lies inside `v`'s allocation (whole pages of its spare
        // capacity only), which is mapped writable while `v` lives; page-aligned by
        // construction.
        let _ = unsafe { populate(from, to) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `[from, to)` resident in this process (per `mincore`).
    fn resident(from: usize, to: usize) -> usize {
        let pages = (to - from) / 4096;
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is page-aligned and mapped (inside a live Vec); `vec` has
        // a byte per page.
        let r = unsafe { libc::mincore(from as *mut libc::c_void, to - from, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        vec.iter().filter(|b| **b & 1 != 0).count()
    }

    #[test]
    fn the_spare_capacity_of_a_large_buffer_is_mapped_and_unchanged() {
        let mut v: Vec<u64> = Vec::with_capacity(1 << 20); // 8 MiB: its own mmap
        v.extend([7u64, 8, 9]);
        let start = v.as_ptr() as usize + 3 * 8;
        let (from, to) = (
            start.next_multiple_of(4096),
            (v.as_ptr() as usize + (8 << 20)) / 4096 * 4096,
        );
        let before = resident(from, to);
        populate_spare(&v);
        let after = resident(from, to);
        if before == after && after < (to - from) / 4096 {
            // MADV_POPULATE_WRITE unsupported (Linux before 5.14): nothing to check.
            return;
        }
        assert_eq!(
            after,
            (to - from) / 4096,
            "every whole spare page is resident"
        );
        assert_eq!(v, [7, 8, 9]);
        // A small buffer is left alone (no call).
        let small: Vec<u64> = Vec::with_capacity(100);
        populate_spare(&small);
    }
}
