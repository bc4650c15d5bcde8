//! Cache-line prefetch hints: asking the CPU for lines a moment before they are read
//! or written, so that several misses overlap instead of following one another.
//! Hints never fault and change no memory, whatever the address (a stale or null
//! pointer costs nothing but the hint).

/// A cache line.
const LINE: usize = 64;

/// Asks for the line at `p`, to be read.
#[inline(always)]
pub(crate) fn read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for every line of `[p, p + bytes)`, to be read (a node about to be searched:
/// its lines arrive together rather than one per step of the search).
#[inline(always)]
pub(crate) fn read_lines(p: *const u8, bytes: usize) {
    let mut a = p as usize / LINE * LINE;
    while a < p as usize + bytes {
        read(a as *const u8);
        a += LINE;
    }
}

/// Asks for the line at `p`, to be written (fetched in the exclusive state).
#[inline(always)]
pub(crate) fn write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and changes no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
