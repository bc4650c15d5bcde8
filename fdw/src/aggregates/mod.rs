//! Aggregates computed where the rows are (PostgreSQL's `GetForeignUpperPaths`).
//!
//! A query that aggregates one memory table — `SELECT count(*), sum(balance) FROM
//! accounts WHERE branch = 3`, or `... GROUP BY branch` — can be answered by one pass
//! of the engine over the table's rows, adding each row's value to running totals
//! (one set per group), instead of the executor fetching every row into a slot and an
//! Agg node calling transition functions on it. The plan is then one `Foreign Scan`
//! for the grouped relation (`scanrelid = 0`) that returns a row per group (one row
//! without GROUP BY).
//!
//! What is computed here, with PostgreSQL's results exactly (types, NULL for an empty
//! input, integer wrap-around where PostgreSQL's own transition functions wrap):
//! `count(*)`, `count(col)`, `sum`/`avg` of int2/int4/int8 columns, `min`/`max` of
//! integer, date, time, timestamp(tz), money and oid columns; GROUP BY plain columns
//! whose equal values have equal bytes (see `groupable`), the groups held in a hash
//! table of the backend (see [`Groups`]); HAVING as the plan's qual, evaluated by
//! PostgreSQL on each group's row. Any other aggregate, a `DISTINCT`, `ORDER BY` or
//! `FILTER` inside one, other GROUP BY expressions, grouping sets, or an argument
//! that is not a plain column of the table leaves the query to PostgreSQL.
//! `memfdw.enable_aggregate_pushdown` turns the path off (as PostgreSQL's `enable_*`
//! settings, for comparisons). Past 100,000 rows the pass runs on several threads
//! (see `parallel_pass`).
//!
//! The table's quals (the WHERE conditions on it, in the order PostgreSQL evaluates a
//! scan's) decide which rows are added. Those the engine can check on each row (see
//! `row_filters`) are checked where the rows lie; if all of them are exact filter
//! conditions, PostgreSQL evaluates none and rows are never copied. Otherwise rows
//! that pass the filter are copied out in batches, as a scan does, and PostgreSQL's
//! expression machinery evaluates the quals on each. An inheritance parent, and quals
//! PostgreSQL checks once (pseudoconstant) or with subplans, leave the query to
//! PostgreSQL.
//!
//! The plan's `fdw_scan_tlist` holds the Aggrefs first (the output), then the grouping
//! columns, then the other table columns the quals read; `fdw_exprs` holds the
//! filter's values, then the quals:
//! setrefs turns the quals' columns into references to those entries, so the scan
//! tuple carries a row's qual columns while quals are evaluated, and the aggregates'
//! values at the end.

mod accumulators;
mod execution;
mod groups;

pub use accumulators::{AggKind, AggSpec};
pub use execution::{begin, end, explain, is_aggregate, iterate, rescan};

use crate::plan_private::AggPrivate;
use crate::xact;
use accumulators::Acc;
use groups::Groups;
use memfdw_engine::ColumnType;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The aggregate of `node` if the engine can compute it over relation `varno` whose
/// columns have `types`.
///
/// # Safety
/// `node` is a planner expression node.
unsafe fn supported(node: *mut pg_sys::Node, varno: u32, types: &[ColumnType]) -> Option<AggSpec> {
    // SAFETY: forwarded contract; nodes are checked by tag before they are cast.
    unsafe {
        if (*node).type_ != pg_sys::NodeTag::T_Aggref {
            return None;
        }
        let a = node as *mut pg_sys::Aggref;
        if (*a).aggsplit != pg_sys::AggSplit::AGGSPLIT_SIMPLE
            || !(*a).aggdistinct.is_null()
            || !(*a).aggorder.is_null()
            || !(*a).aggfilter.is_null()
            || !(*a).aggdirectargs.is_null()
            || (*a).aggvariadic
            || (*a).aggkind != b'n' as std::ffi::c_char
            || (*a).agglevelsup != 0
        {
            return None;
        }
        let (kind, ty) = AggKind::of_function((*a).aggfnoid.to_u32())?;
        if kind == AggKind::CountStar {
            return (*a).aggstar.then_some(AggSpec { kind, col: None });
        }
        if crate::pglist::len((*a).args) != 1 {
            return None;
        }
        let te = crate::pglist::nth((*a).args, 0) as *mut pg_sys::TargetEntry;
        let v = (*te).expr as *mut pg_sys::Node;
        if (*v).type_ != pg_sys::NodeTag::T_Var {
            return None;
        }
        let v = v as *mut pg_sys::Var;
        if (*v).varno as u32 != varno || (*v).varlevelsup != 0 || (*v).varattno <= 0 {
            return None;
        }
        let col = (*v).varattno as usize - 1;
        let col_ty = *types.get(col)?;
        if ty.is_some_and(|t| t != col_ty) || col_ty == ColumnType::Dropped {
            return None;
        }
        Some(AggSpec {
            kind,
            col: Some(col),
        })
    }
}

/// The column (attribute number) a GROUP BY expression `e` of relation `varno`
/// groups by, if the engine can group it: a plain column whose type's equal values
/// have equal bytes (integers, dates and times, booleans, oids; strings under a
/// deterministic collation), compared with its type's own equality `eqop`.
///
/// # Safety
/// Planner structures.
unsafe fn groupable(
    e: *mut pg_sys::Node,
    varno: u32,
    types: &[ColumnType],
    eqop: pg_sys::Oid,
) -> Option<i32> {
    use ColumnType as T;
    // SAFETY: forwarded contract; nodes are checked by tag before they are cast.
    unsafe {
        if e.is_null() || (*e).type_ != pg_sys::NodeTag::T_Var {
            return None;
        }
        let v = e as *mut pg_sys::Var;
        if (*v).varno as u32 != varno || (*v).varlevelsup != 0 || (*v).varattno <= 0 {
            return None;
        }
        let ty = *types.get((*v).varattno as usize - 1)?;
        let textual = matches!(ty, T::Text | T::Varchar(_) | T::Char(_));
        let ok = matches!(
            ty,
            T::Int2
                | T::Int4
                | T::Int8
                | T::Date
                | T::Time
                | T::Timestamp
                | T::TimestampTz
                | T::Bool
                | T::Oid
                | T::Money
        ) || textual && pg_sys::get_collation_isdeterministic((*v).varcollid);
        if !ok {
            return None;
        }
        // The type's own equality (its default btree operator family's), on its own
        // type both sides.
        let typid = pg_sys::getBaseType((*v).vartype);
        if crate::index_paths::bare_bpchar(typid, ty) {
            return None;
        }
        let opfamily = crate::index_paths::default_btree_opfamily(typid);
        if opfamily == pg_sys::InvalidOid
            || pg_sys::get_op_opfamily_strategy(eqop, opfamily)
                != pg_sys::BTEqualStrategyNumber as i32
        {
            return None;
        }
        let (mut l, mut r) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::op_input_types(eqop, &mut l, &mut r);
        // (varchar columns compare with text's operators.)
        let same = |t: pg_sys::Oid| t == typid || textual && t == pg_sys::TEXTOID;
        (same(l) && same(r)).then_some((*v).varattno as i32)
    }
}

/// `GetForeignUpperPaths`: offers the aggregate path for an aggregate of one memory
/// table, ungrouped or grouped by plain columns (see the module documentation).
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_upper_paths(
    root: *mut pg_sys::PlannerInfo,
    stage: pg_sys::UpperRelationKind::Type,
    input_rel: *mut pg_sys::RelOptInfo,
    output_rel: *mut pg_sys::RelOptInfo,
    extra: *mut std::ffi::c_void,
) {
    if stage != pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG
        || !crate::settings::ENABLE_AGGREGATE_PUSHDOWN.get()
        || !crate::shmem::preloaded()
    {
        return;
    }
    // SAFETY: planner structures handed to us by PostgreSQL; `extra` is a
    // GroupPathExtraData at this stage.
    unsafe {
        let extra = extra as *mut pg_sys::GroupPathExtraData;
        let parse = (*root).parse;
        if (*input_rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
            || !crate::handler::is_ours((*input_rel).fdwroutine)
            || extra.is_null()
            || (*extra).patype != pg_sys::PartitionwiseAggregateType::PARTITIONWISE_AGGREGATE_NONE
            || !(*parse).groupingSets.is_null()
            || (*parse).hasTargetSRFs
            || !(*root).rowMarks.is_null()
        {
            return;
        }
        let varno = (*input_rel).relid;
        let rte = *(*root).simple_rte_array.add(varno as usize);
        if (*rte).inh {
            // An inheritance parent: its children's rows are read by other scans.
            return;
        }
        let Some(table) = xact::table_view((*rte).relid) else {
            return;
        };
        let types: Vec<ColumnType> = table.def.columns.iter().map(|c| c.ty).collect();
        // GROUP BY: plain columns whose equal values have equal bytes.
        let mut groups: *mut pg_sys::List = std::ptr::null_mut();
        let mut group_exprs: *mut pg_sys::List = std::ptr::null_mut();
        for i in 0..crate::pglist::len((*parse).groupClause) {
            let sgc = crate::pglist::nth((*parse).groupClause, i) as *mut pg_sys::SortGroupClause;
            let tle = pg_sys::get_sortgroupclause_tle(sgc, (*parse).targetList);
            let Some(attno) =
                groupable((*tle).expr as *mut pg_sys::Node, varno, &types, (*sgc).eqop)
            else {
                return;
            };
            if !pg_sys::list_member_int(groups, attno) {
                groups = pg_sys::lappend_int(groups, attno);
                group_exprs = pg_sys::lappend(group_exprs, (*tle).expr.cast());
            }
        }
        // The output, and HAVING (an implicitly ANDed list, evaluated by PostgreSQL on
        // each group's row): expressions over aggregates and grouping columns.
        let target = (*output_rel).reltarget;
        let having = (*extra).havingQual;
        if !having.is_null() && pg_sys::contain_subplans(having) {
            return;
        }
        let found = pg_sys::list_concat(
            pg_sys::pull_var_clause(
                (*target).exprs as *mut pg_sys::Node,
                (pg_sys::PVC_INCLUDE_AGGREGATES | pg_sys::PVC_INCLUDE_PLACEHOLDERS) as i32,
            ),
            pg_sys::pull_var_clause(
                having,
                (pg_sys::PVC_INCLUDE_AGGREGATES | pg_sys::PVC_INCLUDE_PLACEHOLDERS) as i32,
            ),
        );
        let mut specs = Vec::new();
        let mut aggrefs: *mut pg_sys::List = std::ptr::null_mut();
        for i in 0..crate::pglist::len(found) {
            let node = crate::pglist::nth(found, i) as *mut pg_sys::Node;
            if (*node).type_ == pg_sys::NodeTag::T_Var {
                // A grouping column (PostgreSQL allows no other outside aggregates).
                let v = node as *mut pg_sys::Var;
                if (*v).varno as u32 != varno
                    || (*v).varlevelsup != 0
                    || !pg_sys::list_member_int(groups, (*v).varattno as i32)
                {
                    return;
                }
                continue;
            }
            let Some(spec) = supported(node, varno, &types) else {
                return;
            };
            if pg_sys::list_member(aggrefs, node as *const std::ffi::c_void) {
                continue;
            }
            aggrefs = pg_sys::lappend(aggrefs, node as *mut std::ffi::c_void);
            specs.push(spec);
        }
        if specs.is_empty() && groups.is_null() {
            return;
        }
        // The table's quals, in the order PostgreSQL evaluates a scan's: by security
        // level, then cheapest first (`order_qual_clauses`). A qual without columns
        // (PostgreSQL checks it once, above the scan) leaves the query to PostgreSQL.
        let mut rinfos: Vec<(u32, f64, *mut pg_sys::RestrictInfo)> = Vec::new();
        for r in
            pgrx::PgList::<pg_sys::RestrictInfo>::from_pg((*input_rel).baserestrictinfo).iter_ptr()
        {
            let clause = (*r).clause as *mut pg_sys::Node;
            if (*r).pseudoconstant || pg_sys::contain_subplans(clause) {
                return;
            }
            let mut cost = pg_sys::QualCost::default();
            pg_sys::cost_qual_eval_node(&mut cost, clause, root);
            rinfos.push(((*r).security_level, cost.per_tuple, r));
        }
        rinfos.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let clauses: Vec<*mut pg_sys::RestrictInfo> = rinfos.iter().map(|r| r.2).collect();
        // The quals the engine checks on each row (see `row_filters`); if it checks
        // every one exactly, PostgreSQL evaluates none.
        let mut values: *mut pg_sys::List = std::ptr::null_mut();
        let (filter, all_exact) =
            crate::row_filters::plan(root, input_rel, (*rte).relid, &types, &clauses, &mut values);
        let mut quals: *mut pg_sys::List = std::ptr::null_mut();
        if !all_exact {
            for &r in &clauses {
                quals = pg_sys::lappend(quals, (*r).clause as *mut std::ffi::c_void);
            }
        }
        // The columns the quals read; a whole-row or system column is left to
        // PostgreSQL.
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(quals as *mut pg_sys::Node, varno, &mut attrs);
        let mut qual_cols: *mut pg_sys::List = std::ptr::null_mut();
        for attno in crate::pglist::attnos(attrs) {
            if attno <= 0 || attno as usize > types.len() {
                return;
            }
            // (A grouping column is in the scan tuple already.)
            if !pg_sys::list_member_int(groups, attno) {
                qual_cols = pg_sys::lappend_int(qual_cols, attno);
            }
        }
        // Costs: reading a row in place costs about a comparison, and so does each
        // filter condition; copying a row out and evaluating quals on it costs what a
        // scan's row does (measured: as much as a serial scan feeding PostgreSQL's
        // aggregate, so a parallel plan wins on large tables).
        let tuples = (*input_rel).tuples;
        let qual_cost = (*input_rel).baserestrictcost;
        let per_row = if quals.is_null() {
            pg_sys::cpu_operator_cost * (1.0 + crate::pglist::len(filter) as f64 / 3.0)
        } else {
            pg_sys::cpu_tuple_cost + qual_cost.per_tuple
        };
        // Groups: a hash lookup per row, a row out per group (PostgreSQL's estimate).
        let mut estimation = pg_sys::EstimationInfo::default();
        let ngroups = if groups.is_null() {
            1.0
        } else {
            pg_sys::estimate_num_groups(
                root,
                group_exprs,
                (*input_rel).rows,
                std::ptr::null_mut(),
                &mut estimation,
            )
        };
        if estimation.flags & pg_sys::SELFLAG_USED_DEFAULT != 0 {
            // No statistics to say the groups fit in memory.
            return;
        }
        let per_group_lookup = if groups.is_null() {
            0.0
        } else {
            pg_sys::cpu_operator_cost * crate::pglist::len(groups) as f64
        };
        // The groups are held in the backend's memory until the pass ends: offered only
        // when PostgreSQL's estimate fits a hash aggregate's memory (which would spill
        // to disk instead; this path does not, see the README).
        let width = (*(*input_rel).reltarget).width.max(8) as f64;
        let group_bytes = Groups::ENTRY_BYTES as f64
            + 2.0 * width
            + (std::mem::size_of::<Acc>() * specs.len()) as f64;
        if !groups.is_null() && ngroups * group_bytes > pg_sys::get_hash_memory_limit() as f64 {
            return;
        }
        let total = qual_cost.startup
            + tuples * per_row
            + (*input_rel).rows
                * (pg_sys::cpu_operator_cost * 0.25 * specs.len() as f64 + per_group_lookup)
            + ngroups * pg_sys::cpu_tuple_cost;
        let private = AggPrivate {
            specs,
            groups,
            group_vars: group_exprs,
            having: having as *mut pg_sys::List,
            qual_cols,
            aggrefs,
            quals,
            filter,
            nvalues: crate::pglist::len(values),
            values,
        };
        let path = pg_sys::create_foreign_upper_path(
            root,
            output_rel,
            target,
            ngroups,
            total,
            total,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            private.to_path_list(),
        );
        // Computed by the leader: a parallel worker reads memory tables only through
        // a parallel scan.
        (*path).path.parallel_safe = false;
        pg_sys::add_path(output_rel, path as *mut pg_sys::Path);
    }
}

/// `GetForeignPlan` for the aggregate path.
///
/// # Safety
/// Planner structures of the path being turned into a plan.
pub unsafe fn plan(
    best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
) -> *mut pg_sys::ForeignScan {
    // SAFETY: forwarded contract; the path's private list was built by
    // `get_foreign_upper_paths`.
    unsafe {
        let private = AggPrivate::from_path_list((*best_path).fdw_private);
        // The scan tuple: the Aggrefs, then the quals' columns (see the module
        // documentation).
        let mut scan_tlist: *mut pg_sys::List = std::ptr::null_mut();
        let mut resno = 1i16;
        let mut add = |expr: *mut pg_sys::Expr| {
            let te = pg_sys::makeTargetEntry(expr, resno, std::ptr::null_mut(), false);
            scan_tlist = pg_sys::lappend(scan_tlist, te as *mut std::ffi::c_void);
            resno += 1;
        };
        for i in 0..crate::pglist::len(private.aggrefs) {
            add(
                pg_sys::copyObjectImpl(crate::pglist::nth(private.aggrefs, i)) as *mut pg_sys::Expr,
            );
        }
        for i in 0..crate::pglist::len(private.group_vars) {
            add(
                pg_sys::copyObjectImpl(crate::pglist::nth(private.group_vars, i))
                    as *mut pg_sys::Expr,
            );
        }
        // (A placeholder over a column in a qual is evaluated from the column.)
        let vars = pg_sys::pull_var_clause(
            private.quals as *mut pg_sys::Node,
            pg_sys::PVC_RECURSE_PLACEHOLDERS as i32,
        );
        for i in 0..crate::pglist::len(private.qual_cols) {
            let attno = crate::pglist::nth_int(private.qual_cols, i);
            let var = (0..crate::pglist::len(vars))
                .map(|j| crate::pglist::nth(vars, j) as *mut pg_sys::Var)
                .find(|v| (**v).varattno as i32 == attno)
                .expect("a qual column is a Var of the quals");
            add(pg_sys::copyObjectImpl(var as *const std::ffi::c_void) as *mut pg_sys::Expr);
        }
        let exprs = pg_sys::list_concat_copy(private.values, private.quals);
        // HAVING: the plan's own qual, over the aggregates' row (setrefs refers its
        // Aggrefs and grouping columns to the scan tuple's).
        pg_sys::make_foreignscan(
            tlist,
            private.having,
            0,
            exprs,
            private.to_plan_list(),
            scan_tlist,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}
