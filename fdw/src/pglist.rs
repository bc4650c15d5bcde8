//! Reading PostgreSQL `List`s (PostgreSQL 15's layout: a length and an array of
//! cells) directly, as `pg_list.h`'s inline functions do; and the attribute numbers
//! of a `Bitmapset` filled by `pull_varattnos`. pgrx reaches those inline
//! functions through C shims guarded against `longjmp` (a `sigsetjmp` per call);
//! these reads cannot raise an error, so the executor's per-statement paths read
//! their plan lists here instead.

use pgrx::pg_sys;

/// The number of cells of `l` (0 for NIL).
///
/// # Safety
/// `l` is NIL or a valid List.
#[inline]
pub unsafe fn len(l: *const pg_sys::List) -> i32 {
    if l.is_null() {
        0
    } else {
        // SAFETY: forwarded contract.
        unsafe { (*l).length }
    }
}

/// The `i`th cell of `l`.
///
/// # Safety
/// `l` is a valid List with more than `i` cells.
#[inline]
unsafe fn cell(l: *const pg_sys::List, i: i32) -> *const pg_sys::ListCell {
    // SAFETY: forwarded contract; asserted in debug builds.
    unsafe {
        debug_assert!(i >= 0 && i < len(l), "list index {i} out of range");
        (*l).elements.add(i as usize)
    }
}

/// The `i`th pointer of pointer list `l` (`list_nth`).
///
/// # Safety
/// `l` is a valid pointer List with more than `i` cells.
#[inline]
pub unsafe fn nth(l: *const pg_sys::List, i: i32) -> *mut std::ffi::c_void {
    // SAFETY: forwarded contract.
    unsafe { (*cell(l, i)).ptr_value }
}

/// The `i`th integer of integer list `l` (`list_nth_int`).
///
/// # Safety
/// `l` is a valid integer List with more than `i` cells.
#[inline]
pub unsafe fn nth_int(l: *const pg_sys::List, i: i32) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { (*cell(l, i)).int_value }
}

/// The attribute numbers in `attrs`, a set filled by `pull_varattnos` (which offsets
/// them by `FirstLowInvalidHeapAttributeNumber`), in increasing order: 0 stands for a
/// whole-row reference, negative numbers for system columns.
///
/// # Safety
/// `attrs` is null (empty) or a valid Bitmapset.
pub unsafe fn attnos(attrs: *const pg_sys::Bitmapset) -> Vec<i32> {
    let mut out = Vec::new();
    let mut m = -1;
    loop {
        // SAFETY: forwarded contract.
        m = unsafe { pg_sys::bms_next_member(attrs, m) };
        if m < 0 {
            return out;
        }
        out.push(m + pg_sys::FirstLowInvalidHeapAttributeNumber);
    }
}
