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

use crate::errors::{self, OrRaise};
use crate::plan_private::AggPrivate;
use crate::types::{self, Codec};
use crate::xact;
use memfdw_engine::{ColumnType, RowBatch, RowLayout, ScanCursor, TableHandle, Tid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::ffi::CString;

/// An aggregate the engine computes; stored in plans as its discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar = 1,
    Count = 2,
    /// `sum(int2)`, `sum(int4)`: int8, wrapping as `int4_sum` does.
    SumToInt8 = 3,
    /// `sum(int8)`: numeric, from a 128-bit sum (`numeric_poly_sum`).
    SumToNumeric = 4,
    /// `avg(int2)`, `avg(int4)`: numeric, from an int8 sum (`int8_avg`).
    AvgOfInt8Sum = 5,
    /// `avg(int8)`: numeric, from a 128-bit sum (`numeric_poly_avg`).
    AvgOf128Sum = 6,
    Min = 7,
    Max = 8,
}

impl AggKind {
    pub fn from_int(v: i32) -> Option<AggKind> {
        use AggKind::*;
        [
            CountStar,
            Count,
            SumToInt8,
            SumToNumeric,
            AvgOfInt8Sum,
            AvgOf128Sum,
            Min,
            Max,
        ]
        .into_iter()
        .find(|k| *k as i32 == v)
    }

    /// The aggregate a built-in aggregate function is, with the column type its
    /// argument must have in the engine (None for `count`, which takes any).
    fn of_function(f: u32) -> Option<(AggKind, Option<ColumnType>)> {
        use pg_sys as p;
        use AggKind::*;
        use ColumnType as T;
        let minmax = |k: AggKind, f: u32, min_f: [u32; 8], max_f: [u32; 8]| {
            let types = [
                T::Int2,
                T::Int4,
                T::Int8,
                T::Date,
                T::Time,
                T::Timestamp,
                T::TimestampTz,
                T::Money,
            ];
            let list = if k == Min { min_f } else { max_f };
            list.iter()
                .position(|&x| x == f)
                .map(|i| (k, Some(types[i])))
        };
        let min_f = [
            p::F_MIN_INT2,
            p::F_MIN_INT4,
            p::F_MIN_INT8,
            p::F_MIN_DATE,
            p::F_MIN_TIME,
            p::F_MIN_TIMESTAMP,
            p::F_MIN_TIMESTAMPTZ,
            p::F_MIN_MONEY,
        ];
        let max_f = [
            p::F_MAX_INT2,
            p::F_MAX_INT4,
            p::F_MAX_INT8,
            p::F_MAX_DATE,
            p::F_MAX_TIME,
            p::F_MAX_TIMESTAMP,
            p::F_MAX_TIMESTAMPTZ,
            p::F_MAX_MONEY,
        ];
        Some(match f {
            p::F_COUNT_ => (CountStar, None),
            p::F_COUNT_ANY => (Count, None),
            p::F_SUM_INT2 => (SumToInt8, Some(T::Int2)),
            p::F_SUM_INT4 => (SumToInt8, Some(T::Int4)),
            p::F_SUM_INT8 => (SumToNumeric, Some(T::Int8)),
            p::F_AVG_INT2 => (AvgOfInt8Sum, Some(T::Int2)),
            p::F_AVG_INT4 => (AvgOfInt8Sum, Some(T::Int4)),
            p::F_AVG_INT8 => (AvgOf128Sum, Some(T::Int8)),
            _ if f == p::F_MIN_OID.to_u32() => (Min, Some(T::Oid)),
            _ if f == p::F_MAX_OID.to_u32() => (Max, Some(T::Oid)),
            _ => return minmax(Min, f, min_f, max_f).or_else(|| minmax(Max, f, min_f, max_f)),
        })
    }
}

/// One aggregate of a plan: its kind and the column it reads (None for `count(*)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggSpec {
    pub kind: AggKind,
    /// 0-based column index.
    pub col: Option<usize>,
}

/// How a column's bytes read as an integer that orders as the type does.
#[derive(Debug, Clone, Copy)]
enum IntForm {
    I16,
    I32,
    U32,
    I64,
}

impl IntForm {
    fn of(ty: ColumnType) -> Option<IntForm> {
        use ColumnType as T;
        Some(match ty {
            T::Int2 => IntForm::I16,
            T::Int4 | T::Date => IntForm::I32,
            T::Oid => IntForm::U32,
            T::Int8 | T::Time | T::Timestamp | T::TimestampTz | T::Money => IntForm::I64,
            _ => return None,
        })
    }

    #[inline]
    fn read(self, b: &[u8]) -> i64 {
        match self {
            IntForm::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            IntForm::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            IntForm::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            IntForm::I64 => i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        }
    }

    fn datum(self, v: i64) -> pg_sys::Datum {
        match self {
            IntForm::I16 => pg_sys::Datum::from(v as i16),
            IntForm::I32 => pg_sys::Datum::from(v as i32),
            IntForm::U32 => pg_sys::Datum::from(v as u32),
            IntForm::I64 => pg_sys::Datum::from(v),
        }
    }
}

/// The running state of one aggregate.
#[derive(Debug, Clone, Copy)]
struct Acc {
    spec: AggSpec,
    form: Option<IntForm>,
    /// Input rows counted (non-NULL ones for a column aggregate).
    n: i64,
    /// Sums wrap at 64 bits where PostgreSQL's int8 transition state does, else at 128
    /// (never, for fewer than 2^64 rows).
    sum: i128,
    best: i64,
}

impl Acc {
    #[inline]
    fn add(&mut self, layout: &RowLayout, row: &[u8]) {
        let Some(col) = self.spec.col else {
            self.n += 1;
            return;
        };
        let Some(b) = layout.get(row, col) else {
            return;
        };
        self.n += 1;
        let Some(form) = self.form else {
            return;
        };
        let v = form.read(b);
        match self.spec.kind {
            AggKind::SumToInt8 | AggKind::AvgOfInt8Sum => {
                self.sum = (self.sum as i64).wrapping_add(v) as i128
            }
            AggKind::SumToNumeric | AggKind::AvgOf128Sum => self.sum += v as i128,
            AggKind::Min if self.n == 1 || v < self.best => self.best = v,
            AggKind::Max if self.n == 1 || v > self.best => self.best = v,
            _ => {}
        }
    }

    /// Adds what `o` (the same aggregate over other rows) counted: the result is the
    /// aggregate over both sets of rows (sums that wrap at 64 bits wrap the same way
    /// in any order).
    fn merge(&mut self, o: &Acc) {
        let had = self.n > 0;
        self.n += o.n;
        match self.spec.kind {
            AggKind::SumToInt8 | AggKind::AvgOfInt8Sum => {
                self.sum = (self.sum as i64).wrapping_add(o.sum as i64) as i128
            }
            AggKind::SumToNumeric | AggKind::AvgOf128Sum => self.sum += o.sum,
            AggKind::Min if o.n > 0 && (!had || o.best < self.best) => self.best = o.best,
            AggKind::Max if o.n > 0 && (!had || o.best > self.best) => self.best = o.best,
            _ => {}
        }
    }

    /// The aggregate's value (None = NULL), allocated in the current memory context.
    ///
    /// # Safety
    /// Calls PostgreSQL's numeric functions.
    unsafe fn result(&self) -> Option<pg_sys::Datum> {
        use AggKind::*;
        match self.spec.kind {
            CountStar | Count => Some(pg_sys::Datum::from(self.n)),
            _ if self.n == 0 => None,
            SumToInt8 => Some(pg_sys::Datum::from(self.sum as i64)),
            Min | Max => Some(self.form.expect("typed").datum(self.best)),
            // SAFETY: PostgreSQL's numeric functions on values built here.
            SumToNumeric => Some(unsafe { numeric_of(self.sum) }),
            // SAFETY: PostgreSQL's numeric functions on values built here.
            AvgOfInt8Sum | AvgOf128Sum => unsafe {
                let count = pg_sys::Datum::from(pg_sys::int64_to_numeric(self.n));
                pgrx::fcinfo::direct_function_call_as_datum(
                    pg_sys::numeric_div,
                    &[Some(numeric_of(self.sum)), Some(count)],
                )
            },
        }
    }
}

/// A numeric datum for a 128-bit integer.
///
/// # Safety
/// Calls PostgreSQL's numeric functions.
unsafe fn numeric_of(v: i128) -> pg_sys::Datum {
    // SAFETY: PostgreSQL's numeric constructors on a well-formed integer literal.
    unsafe {
        if let Ok(small) = i64::try_from(v) {
            return pg_sys::Datum::from(pg_sys::int64_to_numeric(small));
        }
        let text = CString::new(v.to_string()).expect("digits");
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::numeric_in,
            &[
                Some(pg_sys::Datum::from(text.as_ptr())),
                Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                Some(pg_sys::Datum::from(-1i32)),
            ],
        )
        .expect("numeric_in returns a value")
    }
}

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
        let opclass = pg_sys::GetDefaultOpClass(typid, pg_sys::BTREE_AM_OID);
        if opclass == pg_sys::InvalidOid
            || pg_sys::get_op_opfamily_strategy(eqop, pg_sys::get_opclass_family(opclass))
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
        let mut m = -1;
        loop {
            m = pg_sys::bms_next_member(attrs, m);
            if m < 0 {
                break;
            }
            let attno = m + pg_sys::FirstLowInvalidHeapAttributeNumber;
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

/// FNV-1a, for the group table: group keys are short, and need no protection against
/// chosen collisions (the worst case is a slow query, as for any hash aggregate).
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The running aggregates: one set, or one per group of a GROUP BY.
///
/// A group's key is its columns' bytes as the rows store them, each as a NULL mark (0)
/// or a value mark (1), its length (u32) and its bytes: `groupable` admits only types
/// whose equal values have equal bytes. Rows are added inside the engine's scan (see
/// `Txn::scan_visit`), which must not allocate shared memory: the key buffer was
/// allocated here, so growing it keeps it private, and a new group is entered outside
/// the engine's scope.
struct Groups {
    cols: Vec<usize>,
    template: Vec<Acc>,
    /// Bytes the groups take (about), and the most they may: past it the pass fails
    /// with an error rather than take the backend's memory (PostgreSQL's hash
    /// aggregate would spill to disk).
    bytes: usize,
    limit: usize,
    overflow: bool,
    map: std::collections::HashMap<Vec<u8>, usize, std::hash::BuildHasherDefault<Fnv>>,
    /// Each group's key and aggregates, in the order the groups were met.
    states: Vec<(Vec<u8>, Vec<Acc>)>,
    key: Vec<u8>,
}

impl Groups {
    /// Bytes of a group besides its key (twice) and aggregates: the hash table's entry
    /// and the allocations' overheads.
    const ENTRY_BYTES: usize = 96;

    fn new(cols: Vec<usize>, template: Vec<Acc>) -> Groups {
        let states = if cols.is_empty() {
            // Without GROUP BY there is one row, even for no input.
            vec![(Vec::new(), template.clone())]
        } else {
            Vec::new()
        };
        Groups {
            cols,
            template,
            bytes: 0,
            limit: usize::MAX,
            overflow: false,
            map: Default::default(),
            states,
            key: Vec::with_capacity(256),
        }
    }

    #[inline]
    fn add(&mut self, layout: &RowLayout, row: &[u8]) {
        if self.overflow {
            // The pass fails at its end.
            return;
        }
        let i = if self.cols.is_empty() {
            0
        } else {
            self.key.clear();
            for &c in &self.cols {
                match layout.get(row, c) {
                    None => self.key.push(0),
                    Some(b) => {
                        self.key.push(1);
                        self.key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                        self.key.extend_from_slice(b);
                    }
                }
            }
            match self.map.get(self.key.as_slice()) {
                Some(&i) => i,
                None => {
                    self.bytes += Self::ENTRY_BYTES
                        + 2 * self.key.len()
                        + std::mem::size_of::<Acc>() * self.template.len();
                    if self.bytes > self.limit {
                        self.overflow = true;
                        return;
                    }
                    memfdw_engine::scope::outside(|| {
                        let i = self.states.len();
                        self.states.push((self.key.clone(), self.template.clone()));
                        self.map.insert(self.key.clone(), i);
                        i
                    })
                }
            }
        };
        for a in self.states[i].1.iter_mut() {
            a.add(layout, row);
        }
    }
}

impl Groups {
    /// Adds `other`'s groups (the same aggregates over other rows).
    fn merge(&mut self, other: Groups) {
        self.overflow |= other.overflow;
        if self.cols.is_empty() {
            for (a, b) in self.states[0].1.iter_mut().zip(&other.states[0].1) {
                a.merge(b);
            }
            return;
        }
        for (key, accs) in other.states {
            match self.map.get(key.as_slice()) {
                Some(&i) => {
                    for (a, b) in self.states[i].1.iter_mut().zip(&accs) {
                        a.merge(b);
                    }
                }
                None => {
                    self.bytes +=
                        Self::ENTRY_BYTES + 2 * key.len() + std::mem::size_of::<Acc>() * accs.len();
                    self.overflow |= self.bytes > self.limit;
                    self.map.insert(key.clone(), self.states.len());
                    self.states.push((key, accs));
                }
            }
        }
    }
}

/// The values of a group key's columns (see [`Groups`]): None for NULL.
fn key_values(mut key: &[u8]) -> Vec<Option<&[u8]>> {
    let mut out = Vec::new();
    while let Some((&mark, rest)) = key.split_first() {
        if mark == 0 {
            out.push(None);
            key = rest;
            continue;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("a length")) as usize;
        out.push(Some(&rest[4..4 + len]));
        key = &rest[4 + len..];
    }
    out
}

/// The state of an aggregate scan.
pub struct AggScanState {
    table: TableHandle,
    /// The aggregates, zeroed.
    accs: Vec<Acc>,
    /// GROUP BY columns: (column index, codec); their places in the scan tuple follow
    /// the aggregates'.
    groups: Vec<(usize, Codec)>,
    /// The last pass's groups, and the next one to return.
    result: Option<Groups>,
    next: usize,
    /// Per qual column that is not a grouping column: (its place in the scan tuple,
    /// column index, codec).
    qual_cols: Vec<(usize, usize, Codec)>,
    qual: *mut pg_sys::ExprState,
    /// The row filter's conditions, and its values' expressions and base types
    /// (indexed as `fdw_exprs`; see `row_filters`).
    filter_conds: Vec<crate::index_paths::Cond>,
    filter_exprs: Vec<*mut pg_sys::ExprState>,
    filter_types: Vec<pg_sys::Oid>,
    /// Rows the filter rejected.
    removed: u64,
    cid: u32,
    snapshot: Option<Tid>,
    starts: u64,
    examined: u64,
    /// Threads and rounds of the last pass (1 and 0 on one thread).
    threads: usize,
    rounds: u64,
}

/// True if `node` is an aggregate scan (the grouped relation's, `scanrelid = 0`).
///
/// # Safety
/// `node` is a ForeignScanState of a memfdw plan.
pub unsafe fn is_aggregate(node: *mut pg_sys::ForeignScanState) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        (*((*node).ss.ps.plan as *mut pg_sys::ForeignScan))
            .scan
            .scanrelid
            == 0
    }
}

/// The relation an aggregate scan reads.
///
/// # Safety
/// `node` is an aggregate scan's state, initialised by the executor.
unsafe fn scanned_relation(node: *mut pg_sys::ForeignScanState) -> pg_sys::Oid {
    // SAFETY: forwarded contract: its plan names exactly one base relation.
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let rti = pg_sys::bms_next_member((*plan).fs_relids, -1);
        (*pg_sys::exec_rt_fetch(rti as pg_sys::Index, (*node).ss.ps.state)).relid
    }
}

/// `BeginForeignScan` of an aggregate scan.
///
/// # Safety
/// Called from `BeginForeignScan` for an aggregate scan.
pub unsafe fn begin(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: executor structures handed to us by PostgreSQL.
    unsafe {
        if pg_sys::ParallelWorkerNumber >= 0 {
            // Never planned so (the path is not parallel safe).
            errors::internal("a memory-table aggregate ran in a parallel worker".into());
        }
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let estate = (*node).ss.ps.state;
        let relid = scanned_relation(node);
        let Some(table) = xact::table(relid) else {
            errors::missing_table(relid)
        };
        let private = AggPrivate::from_plan_list((*plan).fdw_private);
        let ncols = table.def.columns.len();
        let rti = pg_sys::bms_next_member((*plan).fs_relids, -1) as pg_sys::Index;
        let natts = (*(*pg_sys::ExecGetRangeTableRelation(estate, rti)).rd_att).natts;
        if natts as usize != ncols {
            // As a scan: never read rows with the wrong layout.
            errors::internal(format!(
                "memory table \"{}\" does not match its catalog definition ({} columns in the engine, {} in the catalog)",
                types::relation_name(relid),
                ncols,
                natts
            ));
        }
        let type_of = |col: usize| table.def.columns.get(col).map(|c| c.ty);
        let accs = private
            .specs
            .iter()
            .map(|&spec| {
                let form = match spec.kind {
                    AggKind::CountStar | AggKind::Count => None,
                    _ => spec.col.and_then(type_of).and_then(IntForm::of),
                };
                let usable = match spec.kind {
                    AggKind::CountStar => true,
                    AggKind::Count => spec.col.is_some_and(|c| c < ncols),
                    _ => form.is_some(),
                };
                if !usable {
                    // Plans are invalidated when the table changes: a bug.
                    errors::internal(format!(
                        "memory table \"{}\" does not match the aggregate's plan",
                        types::relation_name(relid)
                    ));
                }
                Acc {
                    spec,
                    form,
                    n: 0,
                    sum: 0,
                    best: 0,
                }
            })
            .collect();
        let naggs = private.specs.len();
        let column = |attno: usize| {
            let ty = type_of(attno.wrapping_sub(1)).unwrap_or_else(|| {
                errors::internal("a memory-table aggregate's column is gone".into())
            });
            (attno - 1, Codec::of(ty))
        };
        let groups: Vec<(usize, Codec)> = (0..crate::pglist::len(private.groups))
            .map(|i| column(crate::pglist::nth_int(private.groups, i) as usize))
            .collect();
        let ngroups = groups.len();
        let qual_cols = (0..crate::pglist::len(private.qual_cols))
            .map(|i| {
                let (col, codec) = column(crate::pglist::nth_int(private.qual_cols, i) as usize);
                (naggs + ngroups + i as usize, col, codec)
            })
            .collect();
        // fdw_exprs: the filter's values, then the quals PostgreSQL evaluates.
        let nvalues = private.nvalues;
        let filter_exprs = (0..nvalues)
            .map(|i| {
                pg_sys::ExecInitExpr(
                    crate::pglist::nth((*plan).fdw_exprs, i).cast(),
                    node as *mut pg_sys::PlanState,
                )
            })
            .collect();
        let filter_types = crate::row_filters::expr_types((*plan).fdw_exprs, nvalues);
        let mut quals: *mut pg_sys::List = std::ptr::null_mut();
        for i in nvalues..crate::pglist::len((*plan).fdw_exprs) {
            quals = pg_sys::lappend(quals, crate::pglist::nth((*plan).fdw_exprs, i));
        }
        let qual = if quals.is_null() {
            std::ptr::null_mut()
        } else {
            pg_sys::ExecInitQual(quals, node as *mut pg_sys::PlanState)
        };
        let state = AggScanState {
            accs,
            groups,
            result: None,
            next: 0,
            qual_cols,
            qual,
            filter_conds: crate::row_filters::conds_from_list(private.filter),
            filter_exprs,
            filter_types,
            removed: 0,
            cid: (*(*estate).es_snapshot).curcid,
            snapshot: crate::snapshots::statement_snapshot((*estate).es_snapshot),
            table,
            threads: 1,
            rounds: 0,
            starts: 1,
            examined: 0,
        };
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state)
            as *mut std::ffi::c_void;
    }
}

/// Rows read from the engine at a time, between checks for cancellation.
const VISIT_ROWS: usize = 16 * 1024;

/// `IterateForeignScan` of an aggregate scan: the aggregates' row, once.
///
/// # Safety
/// Called from `IterateForeignScan` for an aggregate scan.
pub unsafe fn iterate(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures handed to us by PostgreSQL; fdw_state is ours.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        let Some(st) = ((*node).fdw_state as *mut AggScanState).as_mut() else {
            return pg_sys::ExecClearTuple(slot);
        };
        if st.result.is_none() {
            compute(node, st);
            st.next = 0;
        }
        let econtext = (*node).ss.ps.ps_ExprContext;
        let groups = st.result.as_ref().expect("computed");
        let Some((key, accs)) = groups.states.get(st.next) else {
            return pg_sys::ExecClearTuple(slot);
        };
        st.next += 1;
        // The row: the aggregates, the group's columns, then NULL qual columns;
        // values allocated for this row only (the context is reset before the next).
        let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
        types::clear_slot(slot);
        let n = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
        nulls.iter_mut().for_each(|x| *x = true);
        for (i, a) in accs.iter().enumerate() {
            if let Some(d) = a.result() {
                values[i] = d;
                nulls[i] = false;
            }
        }
        let naggs = accs.len();
        for (i, v) in key_values(key).into_iter().enumerate() {
            if let Some(b) = v {
                values[naggs + i] = types::datum(st.groups[i].1, b);
                nulls[naggs + i] = false;
            }
        }
        pg_sys::MemoryContextSwitchTo(old);
        types::store_virtual(slot)
    }
}

/// One pass over the table: the aggregates of every group (of the whole table without
/// GROUP BY) into `st.result`.
///
/// # Safety
/// `node` is the aggregate scan whose state is `st`.
unsafe fn compute(node: *mut pg_sys::ForeignScanState, st: &mut AggScanState) {
    // SAFETY: executor structures of the running scan.
    unsafe {
        let mut groups = Groups::new(st.groups.iter().map(|g| g.0).collect(), st.accs.clone());
        // Four times a hash aggregate's memory: estimates are estimates.
        groups.limit = pg_sys::get_hash_memory_limit().saturating_mul(4);
        let filter = (!st.filter_conds.is_empty()).then(|| {
            let types: Vec<_> = st.table.def.columns.iter().map(|c| c.ty).collect();
            std::sync::Arc::new(crate::row_filters::build(
                &st.filter_conds,
                &st.filter_exprs,
                &st.filter_types,
                &types,
                (*node).ss.ps.ps_ExprContext,
            ))
        });
        let mut cursor = match &filter {
            Some(f) => ScanCursor::filtered(f.clone()),
            None => ScanCursor::new(),
        };
        (st.threads, st.rounds) = (1, 0);
        if st.qual.is_null() && !cursor.done() && parallel_pass(st, filter.as_ref(), &mut groups) {
            // Done on every core.
        } else if st.qual.is_null() {
            let AggScanState {
                table,
                cid,
                snapshot,
                examined,
                ..
            } = st;
            let layout = &table.layout;
            while !cursor.done() {
                pgrx::check_for_interrupts!();
                xact::with_txn(|t| {
                    t.set_read_snapshot(*snapshot);
                    t.scan_visit(table, &mut cursor, *cid, VISIT_ROWS, |row| {
                        *examined += 1;
                        groups.add(layout, row);
                    })
                })
                .or_raise();
            }
        } else {
            filtered_pass(node, st, &mut cursor, &mut groups);
        }
        st.removed += cursor.removed();
        if groups.overflow {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "too many groups for an aggregate computed in memory (more than {} before the limit of 4 x work_mem x hash_mem_multiplier)",
                    groups.states.len()
                ),
                "memfdw",
            )
            .set_detail("The planner estimated fewer groups.")
            .set_hint("ANALYZE the table, or SET memfdw.enable_aggregate_pushdown = off for this query.")
            .report(PgLogLevel::ERROR);
            unreachable!("an ERROR does not return");
        }
        st.result = Some(groups);
    }
}

/// Tables with fewer live rows than this are aggregated on one thread.
const PARALLEL_MIN_ROWS: i64 = 100_000;
/// Rounds a parallel pass makes at least (between them, cancels are seen), and the
/// fewest row ids a round covers.
const PARALLEL_ROUNDS: u64 = 16;
const PARALLEL_MIN_ROUND: u64 = 1 << 16;

/// The pass on several cores (the engine's helper threads, see
/// `memfdw_engine::threads`): as many as `max_parallel_workers_per_gather` allows
/// PostgreSQL's own parallel plans, plus this one. Each thread aggregates a part of
/// each round of row ids into groups of its own (each part under the whole limit),
/// merged at the end. Returns false, having changed nothing, when the table is small,
/// one thread is allowed, or the transaction sees the table otherwise than as
/// committed (its own writes): the caller then makes the pass on its thread.
///
/// # Safety
/// Called by `compute` for a scan without PostgreSQL-evaluated quals.
unsafe fn parallel_pass(
    st: &mut AggScanState,
    filter: Option<&std::sync::Arc<memfdw_engine::RowFilter>>,
    groups: &mut Groups,
) -> bool {
    let live = crate::shmem::engine()
        .table_stats(st.table.id)
        .map_or(0, |s| s.rows);
    // SAFETY: a GUC variable, read on the backend's thread.
    let allowed = unsafe { pg_sys::max_parallel_workers_per_gather }.max(0) as usize + 1;
    if live < PARALLEL_MIN_ROWS || allowed < 2 {
        return false;
    }
    let threads = memfdw_engine::helper_threads().min(allowed);
    if threads < 2 {
        return false;
    }
    let end = st.table.peek_next_rowid().0;
    let round = (end / PARALLEL_ROUNDS).max(PARALLEL_MIN_ROUND);
    let AggScanState {
        table, snapshot, ..
    } = st;
    let layout = &table.layout;
    let mut parts: Vec<Groups> = (0..threads)
        .map(|_| {
            let mut g = Groups::new(groups.cols.clone(), groups.template.clone());
            g.limit = groups.limit;
            g
        })
        .collect();
    let (mut removed, mut visited, mut rounds) = (0, 0, 0);
    let mut from = 0;
    while from < end {
        pgrx::check_for_interrupts!();
        let to = (from + round).min(end);
        let done = xact::with_txn(|t| {
            t.set_read_snapshot(*snapshot);
            t.scan_visit_parallel(
                table,
                filter,
                from,
                to,
                &mut parts,
                |g: &mut Groups, row| g.add(layout, row),
            )
        })
        .or_raise();
        let Some((r, v)) = done else {
            // (Known at the first round: the transaction's view does not change
            // within the statement.)
            return false;
        };
        removed += r;
        visited += v;
        rounds += 1;
        if let Some(i) = parts.iter().position(|p| p.overflow) {
            // A part's groups are groups of the table: one thread would fail too.
            *groups = parts.swap_remove(i);
            return true;
        }
        from = to;
    }
    let mut parts = parts.into_iter();
    *groups = parts.next().expect("two parts or more");
    for p in parts {
        groups.merge(p);
    }
    st.removed += removed;
    st.examined += visited;
    st.threads = threads;
    st.rounds = rounds;
    true
}

/// Adds the rows that pass the quals: they are copied out in batches, and each one's
/// qual columns are put in the scan tuple for PostgreSQL to evaluate the quals on.
///
/// # Safety
/// `node` is the aggregate scan whose state is `st`.
unsafe fn filtered_pass(
    node: *mut pg_sys::ForeignScanState,
    st: &mut AggScanState,
    cursor: &mut ScanCursor,
    result: &mut Groups,
) {
    // SAFETY: executor structures of the running scan.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        let econtext = (*node).ss.ps.ps_ExprContext;
        let n = (*(*slot).tts_tupleDescriptor).natts as usize;
        let mut batch = RowBatch::new();
        let batch_rows = crate::settings::SCAN_BATCH_ROWS.get().max(1) as usize;
        let AggScanState {
            table,
            accs,
            groups,
            qual_cols,
            qual,
            cid,
            snapshot,
            examined,
            ..
        } = st;
        // The quals read grouping columns from their places after the aggregates.
        let naggs = accs.len();
        let row_cols: Vec<(usize, usize, Codec)> = groups
            .iter()
            .enumerate()
            .map(|(i, &(col, codec))| (naggs + i, col, codec))
            .chain(qual_cols.iter().copied())
            .collect();
        let layout = &table.layout;
        while !cursor.done() {
            pgrx::check_for_interrupts!();
            xact::with_txn(|t| {
                t.set_read_snapshot(*snapshot);
                t.scan(table, cursor, *cid, &mut batch, batch_rows)
            })
            .or_raise();
            while let Some(r) = batch.next() {
                *examined += 1;
                pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
                let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
                types::clear_slot(slot);
                let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
                let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
                nulls.iter_mut().for_each(|x| *x = true);
                for &(pos, col, codec) in row_cols.iter() {
                    if let Some(b) = layout.get(r.data, col) {
                        values[pos] = types::datum(codec, b);
                        nulls[pos] = false;
                    }
                }
                types::store_virtual(slot);
                (*econtext).ecxt_scantuple = slot;
                let pass = pg_sys::ExecQual(*qual, econtext);
                pg_sys::MemoryContextSwitchTo(old);
                if pass {
                    result.add(layout, r.data);
                }
            }
        }
        pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
    }
}

/// `ReScanForeignScan` of an aggregate scan (its quals' parameters may have changed).
///
/// # Safety
/// Called from `ReScanForeignScan` for an aggregate scan.
pub unsafe fn rescan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours.
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_mut() {
            st.result = None;
            st.starts += 1;
        }
    }
}

/// `EndForeignScan` of an aggregate scan: its reads count as sequential scans of the
/// table.
///
/// # Safety
/// Called from `EndForeignScan` for an aggregate scan.
pub unsafe fn end(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours (null for EXPLAIN without ANALYZE).
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_ref() {
            use std::sync::atomic::Ordering::Relaxed;
            let a = &st.table.access;
            a.seq_scan.fetch_add(st.starts, Relaxed);
            a.seq_tup_read.fetch_add(st.examined, Relaxed);
        }
    }
}

/// `ExplainForeignScan` of an aggregate scan.
///
/// # Safety
/// Called from `ExplainForeignScan` for an aggregate scan.
pub unsafe fn explain(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    // SAFETY: executor and explain structures handed to us by PostgreSQL.
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let relid = scanned_relation(node);
        let rel = CString::new(format!(
            "Aggregate on {}",
            types::quote_ident(&types::relation_name(relid))
        ))
        .expect("no NUL");
        pg_sys::ExplainPropertyText(c"Relations".as_ptr(), rel.as_ptr(), es);
        pg_sys::ExplainPropertyText(
            c"Memory Table Access".as_ptr(),
            c"full scan (row id order), aggregated in memory".as_ptr(),
            es,
        );
        let private = AggPrivate::from_plan_list((*plan).fdw_private);
        if !private.groups.is_null() {
            let names: Vec<String> = (0..crate::pglist::len(private.groups))
                .map(|i| {
                    let attno = crate::pglist::nth_int(private.groups, i);
                    types::quote_ident(&types::column_name(relid, (attno - 1) as u16))
                })
                .collect();
            let text = CString::new(names.join(", ")).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Group Key".as_ptr(), text.as_ptr(), es);
        }
        let filter = crate::row_filters::conds_from_list(private.filter);
        if !filter.is_empty() {
            let text = crate::row_filters::explain_text(plan, es, relid, &filter);
            let text = CString::new(text).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Memory Filter".as_ptr(), text.as_ptr(), es);
        }
        let mut quals: *mut pg_sys::List = std::ptr::null_mut();
        for i in private.nvalues..crate::pglist::len((*plan).fdw_exprs) {
            quals = pg_sys::lappend(quals, crate::pglist::nth((*plan).fdw_exprs, i));
        }
        if !quals.is_null() {
            let context = pg_sys::set_deparse_context_plan(
                (*es).deparse_cxt,
                plan as *mut pg_sys::Plan,
                std::ptr::null_mut(),
            );
            let quals = pg_sys::make_ands_explicit(quals);
            let s = pg_sys::deparse_expression(quals as _, context, (*es).verbose, false);
            pg_sys::ExplainPropertyText(c"Filter".as_ptr(), s, es);
        }
        if (*es).analyze {
            if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_ref() {
                pg_sys::ExplainPropertyInteger(
                    c"Rows Examined".as_ptr(),
                    std::ptr::null(),
                    st.examined as i64,
                    es,
                );
                pg_sys::ExplainPropertyInteger(
                    c"Threads".as_ptr(),
                    std::ptr::null(),
                    st.threads as i64,
                    es,
                );
                if !st.filter_conds.is_empty() {
                    pg_sys::ExplainPropertyInteger(
                        c"Rows Removed by Memory Filter".as_ptr(),
                        std::ptr::null(),
                        st.removed as i64,
                        es,
                    );
                }
            }
        }
    }
}
