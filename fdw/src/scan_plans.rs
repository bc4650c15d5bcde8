//! What a scan's plan tells each of its executions, decoded once per plan.
//!
//! `begin_foreign_scan` runs at every execution of a plan, and a prepared statement
//! runs one plan thousands of times. What depends on the plan alone (its
//! `fdw_private` lists, the base types of its comparison values, which columns it
//! reads) was decoded into fresh vectors, with catalog-cache lookups, at every
//! execution: about 3% of a primary-key SELECT's backend time. It is now decoded at
//! a plan's first execution and kept here, in a backend-local map, by the plan's
//! serial (`ScanPrivate::serial`: the planning process and a number): lists with the
//! same serial are copies of one list (`copyObject`, a parallel worker's copy of its
//! leader's plan) and say the same.
//!
//! Invariants:
//! * an entry is the decoding of the plan lists with its serial, and of the column
//!   types it records (`col_types`); an execution whose table has other column types
//!   (a plan that outlived an ALTER it was not replanned for: PostgreSQL replans, so
//!   this is only a safety net) decodes again;
//! * entries are never changed, only replaced (executions hold them by `Rc`);
//! * the map holds at most [`MAX_PLANS`] entries: it cannot know when a plan is
//!   freed, so it is emptied when full (the plans still running keep their `Rc`).

use crate::index_paths::{Cond, CondKind, IndexChoice};
use crate::plan_private::{self, LockPolicy, PlanSerial, ScanPrivate};
use crate::types::Codec;
use memfdw_engine::{ColumnType, LockMode, TableHandle};
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Most plans remembered at once.
const MAX_PLANS: usize = 1024;

/// A scan plan, decoded.
pub(crate) struct ScanPlan {
    /// The row-lock policy and mode of `SELECT ... FOR UPDATE/SHARE` (see
    /// `ScanPrivate`; an UPDATE or DELETE's own scan overrides them).
    pub lock: LockPolicy,
    pub mode: LockMode,
    /// The index read, if any.
    pub choice: Option<IndexChoice>,
    /// The key column types of that index (None: the table has no index of that id;
    /// the scan reports it). Index ids are never reused, and an ALTER that changes
    /// a key column's type changes `col_types`.
    pub key_types: Option<Vec<ColumnType>>,
    /// How many of `fdw_exprs` (from the first) are the index's comparison values.
    pub index_exprs: i32,
    /// The base type of each comparison value (of its elements, for `IN`), indexed as
    /// `fdw_exprs` (`InvalidOid` for values no condition reads).
    pub index_types: Vec<pg_sys::Oid>,
    /// A full scan's row filter: its conditions, how many of `fdw_exprs` are their
    /// values, and those values' base types.
    pub filter_conds: Vec<Cond>,
    pub filter_exprs: i32,
    pub filter_types: Vec<pg_sys::Oid>,
    /// See `ScanPrivate::dropped_at`.
    pub dropped_at: i32,
    /// Per column: does the plan read it?
    pub needed: Vec<bool>,
    /// Per column: how its values are unpacked.
    pub codecs: Vec<Codec>,
    /// The table's column types this entry was decoded for (those of the table the
    /// scan reads: `of` checks).
    pub col_types: Vec<ColumnType>,
}

/// (FNV: SipHash cost more than the rest of the lookup.)
type Plans = HashMap<PlanSerial, Rc<ScanPlan>, memfdw_engine::fnv::FnvBuild>;

thread_local! {
    static PLANS: RefCell<Plans> = RefCell::new(Plans::default());
}

/// The decoded form of `plan`, a scan of `table`: the one kept for its serial if there
/// is one for the table's column types, else decoded now (and kept).
///
/// # Safety
/// `plan` is a memfdw scan plan (not an aggregate's) of a running query, after
/// setrefs (its `fdw_exprs` have their final types).
pub(crate) unsafe fn of(plan: *mut pg_sys::ForeignScan, table: &TableHandle) -> Rc<ScanPlan> {
    // SAFETY: forwarded contract.
    unsafe {
        let private = ScanPrivate::from_list((*plan).fdw_private);
        let columns = &table.def.columns;
        let kept = PLANS.with(|p| p.borrow().get(&private.serial).cloned());
        if let Some(k) = kept {
            if k.col_types.len() == columns.len()
                && k.col_types.iter().zip(columns).all(|(t, c)| *t == c.ty)
            {
                return k;
            }
        }
        let decoded = Rc::new(decode(plan, &private, table));
        if private.serial != PlanSerial::default() {
            PLANS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() >= MAX_PLANS {
                    p.clear();
                }
                p.insert(private.serial, decoded.clone());
            });
        }
        decoded
    }
}

/// Decodes `private`, the lists of `plan`.
///
/// # Safety
/// As [`of`].
unsafe fn decode(
    plan: *mut pg_sys::ForeignScan,
    private: &ScanPrivate,
    table: &TableHandle,
) -> ScanPlan {
    // SAFETY: forwarded contract.
    unsafe {
        let fdw_exprs = (*plan).fdw_exprs;
        // A direct UPDATE's SET expressions follow the scan's values in fdw_exprs
        // (compiled by `direct_modify`); a plain SELECT's dropped conditions follow
        // the index's values.
        let direct_first = (!private.direct.is_null())
            .then(|| plan_private::DirectPrivate::from_list(private.direct).first_expr);
        let choice = IndexChoice::from_list(private.choice);
        let (index_exprs, index_types) = match &choice {
            None => (0, Vec::new()),
            Some(choice) => {
                let n = match direct_first {
                    Some(first) => first,
                    None if private.dropped_at >= 0 => private.dropped_at,
                    None => crate::pglist::len(fdw_exprs),
                };
                let mut types = vec![pg_sys::InvalidOid; n.max(0) as usize];
                for c in choice.conds.iter().filter(|c| c.expr >= 0) {
                    let mut ty = pg_sys::exprType(crate::pglist::nth(fdw_exprs, c.expr).cast());
                    if c.kind == CondKind::In {
                        ty = pg_sys::get_element_type(ty);
                    }
                    types[c.expr as usize] = pg_sys::getBaseType(ty);
                }
                (n, types)
            }
        };
        let filter_conds = crate::row_filters::conds_from_list(private.filter);
        let (filter_exprs, filter_types) = if filter_conds.is_empty() {
            (0, Vec::new())
        } else {
            // The values of a full scan's filter are its only expressions before a
            // direct modification's SET expressions.
            let n = direct_first.unwrap_or_else(|| crate::pglist::len(fdw_exprs));
            (n, crate::row_filters::expr_types(fdw_exprs, n))
        };
        let columns = &table.def.columns;
        let ncols = columns.len();
        let mut needed = vec![false; ncols];
        for i in 0..crate::pglist::len(private.needed) {
            match crate::pglist::nth_int(private.needed, i) {
                0 => needed.iter_mut().for_each(|n| *n = true),
                a if a as usize <= ncols => needed[a as usize - 1] = true,
                _ => {}
            }
        }
        ScanPlan {
            lock: private.lock,
            mode: private.mode,
            key_types: choice
                .as_ref()
                .and_then(|c| table.index_key_types(c.index_id)),
            choice,
            index_exprs,
            index_types,
            filter_conds,
            filter_exprs,
            filter_types,
            dropped_at: private.dropped_at,
            needed,
            codecs: columns.iter().map(|c| Codec::of(c.ty)).collect(),
            col_types: columns.iter().map(|c| c.ty).collect(),
        }
    }
}
