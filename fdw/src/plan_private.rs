//! The layouts of memfdw's `fdw_private` lists: what planning hands on to execution.
//! PostgreSQL copies plans with `copyObject`, so these are lists of nodes and integer
//! lists only, read and written here and nowhere else.

use memfdw_engine::LockMode;
use pgrx::pg_sys;
use std::ffi::c_void;

/// How rows fetched by a scan are locked (`SELECT ... FOR UPDATE/SHARE` and its wait
/// policy); stored as an `Integer` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockPolicy {
    None = 0,
    Wait = 1,
    Skip = 2,
    NoWait = 3,
}

impl LockPolicy {
    fn from_int(v: i32) -> LockPolicy {
        match v {
            1 => LockPolicy::Wait,
            2 => LockPolicy::Skip,
            3 => LockPolicy::NoWait,
            _ => LockPolicy::None,
        }
    }
}

/// A `ForeignPath`'s `fdw_private`: NIL for a full scan, else
/// `(index choice, comparison expressions, exact clauses)`.
pub struct PathPrivate {
    /// The index choice as an integer list (see `IndexChoice::to_list`), or NIL.
    pub choice: *mut pg_sys::List,
    /// The values the index conditions compare with (they become `fdw_exprs`).
    pub exprs: *mut pg_sys::List,
    /// The `RestrictInfo`s whose conditions the index scan enforces exactly (see
    /// `index_paths::exact_cond`): a plain SELECT leaves them out of the plan's quals.
    /// Compared by address with the plan's scan clauses (the planner hands the path's
    /// own over); a copy would only keep them in the quals.
    pub exact: *mut pg_sys::List,
}

impl PathPrivate {
    /// # Safety
    /// Builds a list in the current memory context; the members must be valid lists.
    pub unsafe fn to_list(&self) -> *mut pg_sys::List {
        // SAFETY: forwarded contract.
        unsafe {
            let mut l = pg_sys::lappend(std::ptr::null_mut(), self.choice as *mut c_void);
            l = pg_sys::lappend(l, self.exprs as *mut c_void);
            pg_sys::lappend(l, self.exact as *mut c_void)
        }
    }

    /// # Safety
    /// `l` is NIL or a list built by [`PathPrivate::to_list`].
    pub unsafe fn from_list(l: *mut pg_sys::List) -> PathPrivate {
        if l.is_null() {
            return PathPrivate {
                choice: std::ptr::null_mut(),
                exprs: std::ptr::null_mut(),
                exact: std::ptr::null_mut(),
            };
        }
        // SAFETY: a three-element list we built.
        unsafe {
            PathPrivate {
                choice: crate::pglist::nth(l, 0) as *mut pg_sys::List,
                exprs: crate::pglist::nth(l, 1) as *mut pg_sys::List,
                exact: crate::pglist::nth(l, 2) as *mut pg_sys::List,
            }
        }
    }
}

/// The row-lock mode of a `SELECT ... FOR KEY SHARE/SHARE/NO KEY UPDATE/UPDATE`, as
/// an `Integer` node.
pub fn lock_mode_from_strength(s: pg_sys::LockClauseStrength::Type) -> LockMode {
    match s {
        pg_sys::LockClauseStrength::LCS_FORKEYSHARE => LockMode::KeyShare,
        pg_sys::LockClauseStrength::LCS_FORSHARE => LockMode::Share,
        pg_sys::LockClauseStrength::LCS_FORNOKEYUPDATE => LockMode::NoKeyUpdate,
        _ => LockMode::Update,
    }
}

/// A `ForeignScan`'s `fdw_private`: `(needed columns, index choice or NIL, lock
/// policy, lock mode, row filter, dropped conditions' position, serial (three
/// integers: number's high and low halves, pid))`, and for a scan that modifies its rows directly a last member, its
/// [`DirectPrivate`].
pub struct ScanPrivate {
    /// Attribute numbers the plan reads, as an integer list; `[0]` means every column.
    pub needed: *mut pg_sys::List,
    /// As in [`PathPrivate::choice`].
    pub choice: *mut pg_sys::List,
    pub lock: LockPolicy,
    /// The strongest row-lock mode the query's locking clauses ask for on this table.
    pub mode: LockMode,
    /// The row filter's conditions (see `row_filters::plan`), NIL for none.
    pub filter: *mut pg_sys::List,
    /// Index in `fdw_exprs` of the first condition left out of the plan's quals
    /// because the index scan enforces it (see `PathPrivate::exact`); they run to the
    /// end of `fdw_exprs`. -1: none. They are compiled and checked only if the scan
    /// has to read the whole table instead (its index was dropped since planning).
    pub dropped_at: i32,
    /// NIL, or a [`DirectPrivate`] list: the scan updates or deletes the rows it
    /// finds itself (see `direct_modify`).
    pub direct: *mut pg_sys::List,
    /// Names this list's content (see `scan_plans`): the planning process's pid and
    /// a number it never gave before. A new one is given by every
    /// [`ScanPrivate::to_list`] (whatever this field holds), so lists with the same
    /// serial are copies of one list. (The pid: a parallel worker holds its leader's
    /// plans and plans queries of its own, e.g. of a function called by the scan.)
    pub serial: PlanSerial,
}

/// See [`ScanPrivate::serial`]; `(0, 0)` is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlanSerial {
    pub pid: i32,
    pub number: u64,
}

/// The next plan number of this process (never 0).
fn next_serial() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<u64> = const { Cell::new(1) };
    }
    NEXT.with(|n| {
        let s = n.get();
        n.set(s + 1);
        s
    })
}

impl ScanPrivate {
    /// # Safety
    /// Builds a list in the current memory context; the members must be valid lists.
    pub unsafe fn to_list(&self) -> *mut pg_sys::List {
        // SAFETY: forwarded contract.
        unsafe {
            let mut l = pg_sys::lappend(std::ptr::null_mut(), self.needed as *mut c_void);
            l = pg_sys::lappend(l, self.choice as *mut c_void);
            // A node, not an int cell: fdw_private is copied as a list of nodes.
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.lock as i32) as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.mode as i32) as *mut c_void);
            l = pg_sys::lappend(l, self.filter as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.dropped_at) as *mut c_void);
            let serial = next_serial();
            l = pg_sys::lappend(l, pg_sys::makeInteger((serial >> 32) as i32) as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(serial as u32 as i32) as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(pg_sys::MyProcPid) as *mut c_void);
            if !self.direct.is_null() {
                l = pg_sys::lappend(l, self.direct as *mut c_void);
            }
            l
        }
    }

    /// # Safety
    /// `l` is a list built by [`ScanPrivate::to_list`] (possibly copied).
    pub unsafe fn from_list(l: *mut pg_sys::List) -> ScanPrivate {
        // SAFETY: a nine- or ten-element list we built.
        unsafe {
            let int = |i| (*(crate::pglist::nth(l, i) as *mut pg_sys::Integer)).ival;
            ScanPrivate {
                needed: crate::pglist::nth(l, 0) as *mut pg_sys::List,
                choice: crate::pglist::nth(l, 1) as *mut pg_sys::List,
                lock: LockPolicy::from_int(
                    (*(crate::pglist::nth(l, 2) as *mut pg_sys::Integer)).ival,
                ),
                mode: LockMode::from_bits(
                    (*(crate::pglist::nth(l, 3) as *mut pg_sys::Integer)).ival as u64,
                ),
                filter: crate::pglist::nth(l, 4) as *mut pg_sys::List,
                dropped_at: (*(crate::pglist::nth(l, 5) as *mut pg_sys::Integer)).ival,
                direct: if crate::pglist::len(l) > 9 {
                    crate::pglist::nth(l, 9) as *mut pg_sys::List
                } else {
                    std::ptr::null_mut()
                },
                serial: PlanSerial {
                    pid: int(8),
                    number: ((int(6) as u32 as u64) << 32) | int(7) as u32 as u64,
                },
            }
        }
    }
}

/// What a direct UPDATE or DELETE needs beyond its scan: `(first SET expression,
/// whether the statement sets the command tag's row count, whether it has a RETURNING
/// list, assigned columns)`. The
/// SET expressions are `fdw_exprs[first..]`, one per assigned column, in order (in
/// `fdw_exprs` so that setrefs prepares them like the plan's other expressions).
pub struct DirectPrivate {
    /// Index in `fdw_exprs` of the first SET expression (their count for a DELETE).
    pub first_expr: i32,
    /// The ModifyTable's `canSetTag`: the rows count in `es_processed`.
    pub set_tag: bool,
    /// The statement returns the rows written (known at planning; the executor sets
    /// up RETURNING after the scan).
    pub returning: bool,
    /// Attribute numbers assigned by an UPDATE, as an integer list (NIL for DELETE).
    pub colnos: *mut pg_sys::List,
}

impl DirectPrivate {
    /// # Safety
    /// Builds a list in the current memory context; `colnos` must be NIL or an
    /// integer list.
    pub unsafe fn to_list(&self) -> *mut pg_sys::List {
        // SAFETY: forwarded contract.
        unsafe {
            let mut l = pg_sys::lappend(
                std::ptr::null_mut(),
                pg_sys::makeInteger(self.first_expr) as _,
            );
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.set_tag as i32) as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.returning as i32) as *mut c_void);
            pg_sys::lappend(l, self.colnos as *mut c_void)
        }
    }

    /// # Safety
    /// `l` is a list built by [`DirectPrivate::to_list`] (possibly copied).
    pub unsafe fn from_list(l: *mut pg_sys::List) -> DirectPrivate {
        // SAFETY: a four-element list we built.
        unsafe {
            let int = |i| (*(crate::pglist::nth(l, i) as *mut pg_sys::Integer)).ival;
            DirectPrivate {
                first_expr: int(0),
                set_tag: int(1) != 0,
                returning: int(2) != 0,
                colnos: crate::pglist::nth(l, 3) as *mut pg_sys::List,
            }
        }
    }
}

/// An aggregate scan's private lists (see `aggregates`). The path's is `(aggregates,
/// qual columns, Aggrefs, quals, row filter, filter values, groups, group Vars,
/// HAVING)`; the plan's
/// `(aggregates, qual columns, row filter, number of filter values, groups)`, its
/// Aggrefs having gone to
/// `fdw_scan_tlist` and its filter values then quals to `fdw_exprs`. Aggregates are
/// an integer list of `(kind, attribute number or 0)` pairs.
pub struct AggPrivate {
    pub specs: Vec<crate::aggregates::AggSpec>,
    /// Attribute numbers of the GROUP BY columns, as an integer list (NIL: none), in
    /// `fdw_scan_tlist`'s order after the Aggrefs.
    pub groups: *mut pg_sys::List,
    /// The GROUP BY columns' Vars, in `groups`' order (path only).
    pub group_vars: *mut pg_sys::List,
    /// The HAVING clauses, an implicitly ANDed list (path only; the plan's qual).
    pub having: *mut pg_sys::List,
    /// Attribute numbers the quals read that are not grouping columns, as an integer
    /// list, in `fdw_scan_tlist`'s order after the Aggrefs and the grouping columns.
    pub qual_cols: *mut pg_sys::List,
    /// The distinct Aggrefs of the output, in `specs`' order (path only).
    pub aggrefs: *mut pg_sys::List,
    /// The quals PostgreSQL evaluates, in evaluation order (path only).
    pub quals: *mut pg_sys::List,
    /// The row filter's conditions (see `row_filters::plan`), NIL for none.
    pub filter: *mut pg_sys::List,
    /// The filter's values (path only).
    pub values: *mut pg_sys::List,
    /// How many of `fdw_exprs` are filter values (the quals follow).
    pub nvalues: i32,
}

impl AggPrivate {
    /// # Safety
    /// Builds a list in the current memory context.
    unsafe fn specs_list(&self) -> *mut pg_sys::List {
        let mut l: *mut pg_sys::List = std::ptr::null_mut();
        for s in &self.specs {
            // SAFETY: appends to a list we own.
            unsafe {
                l = pg_sys::lappend_int(l, s.kind as i32);
                l = pg_sys::lappend_int(l, s.col.map_or(0, |c| c as i32 + 1));
            }
        }
        l
    }

    /// # Safety
    /// `l` is an integer list built by [`AggPrivate::specs_list`].
    unsafe fn specs_from(l: *mut pg_sys::List) -> Vec<crate::aggregates::AggSpec> {
        // SAFETY: forwarded contract.
        unsafe {
            (0..crate::pglist::len(l) / 2)
                .map(|i| {
                    let kind = crate::pglist::nth_int(l, 2 * i);
                    let attno = crate::pglist::nth_int(l, 2 * i + 1);
                    crate::aggregates::AggSpec {
                        kind: crate::aggregates::AggKind::from_int(kind)
                            .expect("an aggregate kind we wrote"),
                        col: (attno > 0).then(|| attno as usize - 1),
                    }
                })
                .collect()
        }
    }

    /// # Safety
    /// Builds a list in the current memory context; the members must be valid lists.
    pub unsafe fn to_path_list(&self) -> *mut pg_sys::List {
        // SAFETY: forwarded contract.
        unsafe {
            let mut l = pg_sys::lappend(std::ptr::null_mut(), self.specs_list() as *mut c_void);
            l = pg_sys::lappend(l, self.qual_cols as *mut c_void);
            l = pg_sys::lappend(l, self.aggrefs as *mut c_void);
            l = pg_sys::lappend(l, self.quals as *mut c_void);
            l = pg_sys::lappend(l, self.filter as *mut c_void);
            l = pg_sys::lappend(l, self.values as *mut c_void);
            l = pg_sys::lappend(l, self.groups as *mut c_void);
            l = pg_sys::lappend(l, self.group_vars as *mut c_void);
            pg_sys::lappend(l, self.having as *mut c_void)
        }
    }

    /// # Safety
    /// `l` is a list built by [`AggPrivate::to_path_list`].
    pub unsafe fn from_path_list(l: *mut pg_sys::List) -> AggPrivate {
        // SAFETY: a nine-element list we built.
        unsafe {
            let values = crate::pglist::nth(l, 5) as *mut pg_sys::List;
            AggPrivate {
                specs: Self::specs_from(crate::pglist::nth(l, 0) as *mut pg_sys::List),
                qual_cols: crate::pglist::nth(l, 1) as *mut pg_sys::List,
                aggrefs: crate::pglist::nth(l, 2) as *mut pg_sys::List,
                quals: crate::pglist::nth(l, 3) as *mut pg_sys::List,
                filter: crate::pglist::nth(l, 4) as *mut pg_sys::List,
                values,
                nvalues: crate::pglist::len(values),
                groups: crate::pglist::nth(l, 6) as *mut pg_sys::List,
                group_vars: crate::pglist::nth(l, 7) as *mut pg_sys::List,
                having: crate::pglist::nth(l, 8) as *mut pg_sys::List,
            }
        }
    }

    /// # Safety
    /// Builds a list in the current memory context.
    pub unsafe fn to_plan_list(&self) -> *mut pg_sys::List {
        // SAFETY: forwarded contract.
        unsafe {
            let mut l = pg_sys::lappend(std::ptr::null_mut(), self.specs_list() as *mut c_void);
            l = pg_sys::lappend(l, self.qual_cols as *mut c_void);
            l = pg_sys::lappend(l, self.filter as *mut c_void);
            l = pg_sys::lappend(l, pg_sys::makeInteger(self.nvalues) as *mut c_void);
            pg_sys::lappend(l, self.groups as *mut c_void)
        }
    }

    /// # Safety
    /// `l` is a list built by [`AggPrivate::to_plan_list`] (possibly copied).
    pub unsafe fn from_plan_list(l: *mut pg_sys::List) -> AggPrivate {
        // SAFETY: a five-element list we built.
        unsafe {
            AggPrivate {
                specs: Self::specs_from(crate::pglist::nth(l, 0) as *mut pg_sys::List),
                groups: crate::pglist::nth(l, 4) as *mut pg_sys::List,
                group_vars: std::ptr::null_mut(),
                having: std::ptr::null_mut(),
                qual_cols: crate::pglist::nth(l, 1) as *mut pg_sys::List,
                aggrefs: std::ptr::null_mut(),
                quals: std::ptr::null_mut(),
                filter: crate::pglist::nth(l, 2) as *mut pg_sys::List,
                values: std::ptr::null_mut(),
                nvalues: (*(crate::pglist::nth(l, 3) as *mut pg_sys::Integer)).ival,
            }
        }
    }
}
