//! Row filters of memory-table scans: the quals the engine checks on each row where it
//! lies, before the row is copied out (see `memfdw_engine::row_filter`).
//!
//! At planning, each qual of a full scan (or of an aggregate computed in memory) that
//! compares one column with a value computable before the scan — the comparisons an
//! index condition may use: `=`, `IN (...)`, `<`, `<=`, `>`, `>=`, `IS [NOT] NULL` —
//! becomes a filter condition; its value joins `fdw_exprs`. At execution the values are
//! evaluated (at the start and at every rescan) and turned into key bounds exactly as
//! an index scan's are (`scan::build_ranges`), so a row passes when the index order
//! says the comparison holds.
//!
//! Values are computed once at the start of a scan, as an index scan's are (a value
//! that raises an error raises it then, even if no row would have been compared);
//! values with subqueries, and quals PostgreSQL would not move ahead of a security
//! barrier's, are left to PostgreSQL.
//!
//! A scan returns PostgreSQL only the rows that pass, and PostgreSQL still evaluates
//! every qual on them: a filter only saves the copy and the evaluation of rows that
//! fail anyway. An aggregate whose quals are all exact filter conditions (the value of
//! the column's own type or an integer of another width, so no conversion rounds it)
//! leaves PostgreSQL out entirely.
//! `memfdw.enable_row_filters` turns filters off (for comparisons).

use crate::cross_type::{self, Conv};
use crate::errors::{self, OrRaise};
use crate::index_paths::{Cond, CondKind};
use crate::types::{self, Codec};
use memfdw_engine::{keys, ColumnCond, ColumnType, RowFilter};
use pgrx::pg_sys;

/// Filter conditions planned for `quals` of relation `baserel` (PostgreSQL relation
/// `relid`, engine column types `types`), their values appended to `exprs`: an
/// integer list of `(column, kind, value position in exprs or -1)` triples, and
/// whether every qual became an exact condition.
///
/// # Safety
/// Planner structures; `quals` are expressions of the relation's quals.
pub unsafe fn plan(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
    types: &[ColumnType],
    quals: &[*mut pg_sys::RestrictInfo],
    exprs: &mut *mut pg_sys::List,
) -> (*mut pg_sys::List, bool) {
    let mut list: *mut pg_sys::List = std::ptr::null_mut();
    let mut all_exact = true;
    if !crate::settings::ENABLE_ROW_FILTERS.get() {
        return (list, quals.is_empty());
    }
    // SAFETY: forwarded contract.
    unsafe {
        let varno = (*baserel).relid;
        for &r in quals {
            // A qual may run before the quals of a lower security level only if
            // PostgreSQL would let it (leakproof): otherwise the filter's count of
            // removed rows would tell of rows a security barrier hides.
            let fc = if pg_sys::restriction_is_securely_promotable(r, baserel) {
                crate::index_paths::filter_condition(
                    root,
                    varno,
                    relid,
                    types,
                    (*r).clause as *mut pg_sys::Node,
                )
            } else {
                None
            };
            let Some(fc) = fc else {
                all_exact = false;
                continue;
            };
            all_exact &= fc.exact;
            let pos = if fc.value.is_null() {
                -1
            } else {
                *exprs = pg_sys::lappend(*exprs, fc.value.cast());
                crate::pglist::len(*exprs) - 1
            };
            for v in [fc.col as i32, fc.kind as i32, pos] {
                list = pg_sys::lappend_int(list, v);
            }
        }
    }
    (list, all_exact)
}

/// The conditions of a list built by [`plan`].
///
/// # Safety
/// `l` is NIL or an integer list built by [`plan`] (possibly copied).
pub unsafe fn conds_from_list(l: *mut pg_sys::List) -> Vec<Cond> {
    // SAFETY: forwarded contract.
    unsafe {
        (0..crate::pglist::len(l) / 3)
            .map(|i| {
                let kind = crate::pglist::nth_int(l, 3 * i + 1);
                Cond {
                    col: crate::pglist::nth_int(l, 3 * i) as usize,
                    // (A condition dropped here could be one PostgreSQL does not check.)
                    kind: CondKind::from_i32(kind).unwrap_or_else(|| {
                        errors::internal(format!("memfdw: unknown row filter condition {kind}"))
                    }),
                    expr: crate::pglist::nth_int(l, 3 * i + 2),
                }
            })
            .collect()
    }
}

/// The filter for the current values of the conditions' expressions (`exprs`, their
/// base types `expr_types`, both indexed as `fdw_exprs`), over columns of `col_types`.
///
/// # Safety
/// Executor structures of the running scan; `econtext` is its expression context.
pub unsafe fn build(
    conds: &[Cond],
    exprs: &[*mut pg_sys::ExprState],
    expr_types: &[pg_sys::Oid],
    col_types: &[ColumnType],
    econtext: *mut pg_sys::ExprContext,
) -> RowFilter {
    let mut f = RowFilter::new();
    // SAFETY: forwarded contract.
    unsafe {
        let mut old =
            pgrx::PgMemoryContexts::For((*econtext).ecxt_per_tuple_memory).set_as_current();
        let mut scratch = [0u8; 16];
        for c in conds {
            let ty = col_types[c.col];
            let mut key = |d: pg_sys::Datum| -> Vec<u8> {
                let b = types::datum_bytes(Codec::of(ty), d, &mut scratch);
                let mut out = Vec::new();
                keys::encode_value(ty, Some(b), &mut out).or_raise();
                out
            };
            if c.kind == CondKind::In {
                // The list's values that some column value equals.
                let (arr, isnull) = crate::scan::eval_expr(exprs[c.expr as usize], econtext);
                let elem =
                    pg_sys::getBaseType(pg_sys::get_element_type(expr_types[c.expr as usize]));
                let mut keys: Vec<Vec<u8>> = if isnull {
                    Vec::new()
                } else {
                    crate::scan::array_elements(arr)
                        .into_iter()
                        .filter_map(|d| match cross_type::to_column(ty, elem, d) {
                            Conv::Exact(x) => Some(key(x)),
                            _ => None,
                        })
                        .collect()
                };
                keys.sort();
                keys.dedup();
                let cond = if keys.is_empty() {
                    ColumnCond::Never
                } else {
                    ColumnCond::AnyOf(keys)
                };
                f.push(c.col, ty, cond);
                continue;
            }
            // The value, converted to the column's type (see `cross_type`).
            let value = (c.expr >= 0)
                .then(|| {
                    let (d, isnull) = crate::scan::eval_expr(exprs[c.expr as usize], econtext);
                    (!isnull).then(|| cross_type::to_column(ty, expr_types[c.expr as usize], d))
                })
                .flatten();
            let cond = match c.kind {
                CondKind::IsNull => ColumnCond::IsNull,
                CondKind::NotNull => ColumnCond::NotNull,
                CondKind::Eq => match value {
                    Some(Conv::Exact(d)) => {
                        let k = key(d);
                        ColumnCond::Range {
                            lo: Some((k.clone(), true)),
                            hi: Some((k, true)),
                        }
                    }
                    // NULL, or no value of the column's type equals it.
                    _ => ColumnCond::Never,
                },
                CondKind::Gt | CondKind::Ge => match value {
                    Some(Conv::Exact(d)) => ColumnCond::Range {
                        lo: Some((key(d), c.kind == CondKind::Ge)),
                        hi: None,
                    },
                    Some(Conv::Rounded(d)) | Some(Conv::Between(d, _)) => ColumnCond::Range {
                        lo: Some((key(d), true)),
                        hi: None,
                    },
                    Some(Conv::BelowAll) => ColumnCond::NotNull,
                    Some(Conv::AboveAll) | None => ColumnCond::Never,
                },
                CondKind::Lt | CondKind::Le => match value {
                    Some(Conv::Exact(d)) => ColumnCond::Range {
                        lo: None,
                        hi: Some((key(d), c.kind == CondKind::Le)),
                    },
                    Some(Conv::Rounded(d)) | Some(Conv::Between(_, d)) => ColumnCond::Range {
                        lo: None,
                        hi: Some((key(d), true)),
                    },
                    Some(Conv::AboveAll) => ColumnCond::NotNull,
                    Some(Conv::BelowAll) | None => ColumnCond::Never,
                },
                // Never planned as a filter.
                _ => errors::internal(format!("memfdw: a row filter cannot check {:?}", c.kind)),
            };
            f.push(c.col, ty, cond);
        }
        old.set_as_current();
    }
    f
}

/// The base type of each expression of `fdw_exprs` up to `n`, looked up once per scan.
///
/// # Safety
/// `fdw_exprs` is a plan's expression list with at least `n` members.
pub unsafe fn expr_types(fdw_exprs: *mut pg_sys::List, n: i32) -> Vec<pg_sys::Oid> {
    // SAFETY: forwarded contract.
    unsafe {
        (0..n)
            .map(|i| pg_sys::getBaseType(pg_sys::exprType(crate::pglist::nth(fdw_exprs, i).cast())))
            .collect()
    }
}

/// The conditions as EXPLAIN shows them, e.g. `((bid = 3) AND (abalance > $1))`.
///
/// # Safety
/// Explain structures of the plan whose `fdw_exprs` hold the values.
pub unsafe fn explain_text(
    plan: *mut pg_sys::ForeignScan,
    es: *mut pg_sys::ExplainState,
    relid: pg_sys::Oid,
    conds: &[Cond],
) -> String {
    // SAFETY: forwarded contract.
    unsafe {
        let context = pg_sys::set_deparse_context_plan(
            (*es).deparse_cxt,
            plan as *mut pg_sys::Plan,
            std::ptr::null_mut(),
        );
        let value = |i: i32| -> String {
            let e = crate::pglist::nth((*plan).fdw_exprs, i) as *mut pg_sys::Node;
            let s = pg_sys::deparse_expression(e, context, (*es).verbose, false);
            std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
        };
        let parts: Vec<String> = conds
            .iter()
            .map(|c| {
                let col = types::quote_ident(&types::column_name(relid, c.col as u16));
                match c.kind {
                    CondKind::IsNull => format!("({col} IS NULL)"),
                    CondKind::NotNull => format!("({col} IS NOT NULL)"),
                    CondKind::In => format!("({col} = ANY ({}))", value(c.expr)),
                    k => {
                        let op = match k {
                            CondKind::Eq => "=",
                            CondKind::Lt => "<",
                            CondKind::Le => "<=",
                            CondKind::Gt => ">",
                            _ => ">=",
                        };
                        format!("({col} {op} {})", value(c.expr))
                    }
                }
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            format!("({})", parts.join(" AND "))
        }
    }
}
