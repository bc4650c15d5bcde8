//! Index paths for memory tables (GetForeignPaths), after postgres_fdw's
//! `postgresGetForeignPaths`: for each engine index,
//! * an index path from restriction clauses on leading index columns: equality,
//!   `IN (...)`, `IS NULL` for a prefix, then a range (`<`, `<=`, `>`, `>=`,
//!   `IS NOT NULL`) on the next column;
//! * parameterized paths from join clauses on the first column (equivalence classes and
//!   plain join clauses), so joins can run as index nested loops;
//! * pathkeys when the index order answers the query's ORDER BY (ASC NULLS LAST, or
//!   DESC NULLS FIRST read backwards), so `ORDER BY ... LIMIT n` stops early.
//!
//! Only operators of the column type's default btree operator family are used, with a
//! comparison value of the column's own type (or text for varchar), or of another type
//! of the family that `cross_type` converts (int2/4/8, float4/8, date and timestamps,
//! as drivers bind them); text ranges and
//! ordering need the C collation (keys compare as bytes), text equality a deterministic
//! one. Every clause is still checked by PostgreSQL on the rows the index returns, so
//! the index only has to return a superset.
//!
//! What the plan carries (see [`IndexChoice`]): the index id, direction, whether it is
//! a point lookup or ordered, and per condition (index column, kind, position of the
//! comparison value in `fdw_exprs`).

use crate::shmem::engine;
use memfdw_engine::stats::IndexStatsView;
use memfdw_engine::{keys, ColumnType, IndexDef};
use pgrx::pg_sys;
use pgrx::PgList;
use std::ffi::c_void;

/// What a condition asks of its index column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum CondKind {
    Lt = 1,
    Le = 2,
    Eq = 3,
    Ge = 4,
    Gt = 5,
    IsNull = 6,
    In = 7,
    NotNull = 8,
    /// `LIKE 'abc%'`: the rows whose key starts with the pattern's fixed prefix.
    Like = 9,
    /// `~ '^abc'`: the same for a regular expression's fixed prefix.
    Regex = 10,
    /// `ILIKE '12%'`: the prefix up to the first character that has case.
    ILike = 11,
    /// `~* '^12'`: the same for a case-insensitive regular expression.
    IRegex = 12,
}

impl CondKind {
    pub fn from_i32(v: i32) -> Option<CondKind> {
        use CondKind::*;
        Some(match v {
            1 => Lt,
            2 => Le,
            3 => Eq,
            4 => Ge,
            5 => Gt,
            6 => IsNull,
            7 => In,
            8 => NotNull,
            9 => Like,
            10 => Regex,
            11 => ILike,
            12 => IRegex,
            _ => return None,
        })
    }

    fn prefix(self) -> bool {
        matches!(self, CondKind::Eq | CondKind::IsNull | CondKind::In)
    }

    /// A pattern match (LIKE, ILIKE, ~, ~*) with a fixed prefix.
    pub fn is_pattern(self) -> bool {
        matches!(
            self,
            CondKind::Like | CondKind::Regex | CondKind::ILike | CondKind::IRegex
        )
    }
}

/// A condition of an index scan: index column position, kind, and the position of its
/// comparison value in the plan's `fdw_exprs` (-1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub col: usize,
    pub kind: CondKind,
    pub expr: i32,
}

/// An index access chosen for a path (and carried into the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChoice {
    pub index_id: u32,
    pub reverse: bool,
    pub ordered: bool,
    pub point: bool,
    pub conds: Vec<Cond>,
}

impl IndexChoice {
    /// As an integer list (for `fdw_private`).
    pub fn to_list(&self) -> *mut pg_sys::List {
        let mut v = vec![
            self.index_id as i32,
            self.reverse as i32,
            self.ordered as i32,
            self.point as i32,
        ];
        for c in &self.conds {
            v.extend([c.col as i32, c.kind as i32, c.expr]);
        }
        let mut l: *mut pg_sys::List = std::ptr::null_mut();
        for x in v {
            // SAFETY: builds a list in the current memory context.
            l = unsafe { pg_sys::lappend_int(l, x) };
        }
        l
    }

    /// From [`IndexChoice::to_list`]'s list; None for an empty list (full scan).
    pub fn from_list(l: *mut pg_sys::List) -> Option<IndexChoice> {
        // SAFETY: an integer list we built (or NIL).
        let v: Vec<i32> = unsafe {
            (0..crate::pglist::len(l))
                .map(|i| crate::pglist::nth_int(l, i))
                .collect()
        };
        if v.len() < 4 {
            return None;
        }
        let conds = v[4..]
            .chunks_exact(3)
            .filter_map(|c| {
                Some(Cond {
                    col: c[0] as usize,
                    kind: CondKind::from_i32(c[1])?,
                    expr: c[2],
                })
            })
            .collect();
        Some(IndexChoice {
            index_id: v[0] as u32,
            reverse: v[1] != 0,
            ordered: v[2] != 0,
            point: v[3] != 0,
            conds,
        })
    }

    pub fn kind_name(&self) -> &'static str {
        if self.point {
            "point"
        } else if self.conds.is_empty() {
            "full"
        } else if self.conds.iter().all(|c| c.kind.prefix()) {
            "equality"
        } else {
            "range"
        }
    }
}

/// One index column as the planner sees it.
struct KeyCol {
    attno: i16,
    /// The column's type (domains resolved).
    typid: pg_sys::Oid,
    ty: ColumnType,
    opfamily: pg_sys::Oid,
}

fn is_text(t: pg_sys::Oid) -> bool {
    t == pg_sys::TEXTOID || t == pg_sys::VARCHAROID
}

/// Is `coll` a collation whose order is byte order: C, POSIX, and C.UTF-8 (code point
/// order, which is UTF-8's byte order), as a collation object (ucs_basic is C) or as
/// the database's default?
fn collation_is_c(coll: pg_sys::Oid) -> bool {
    if coll == pg_sys::C_COLLATION_OID || coll == pg_sys::POSIX_COLLATION_OID {
        return true;
    }
    let byte_ordered = |name: &[u8]| {
        matches!(
            name,
            b"C" | b"POSIX" | b"C.UTF-8" | b"C.utf8" | b"C.UTF8" | b"C.utf-8"
        )
    };
    if coll == pg_sys::DEFAULT_COLLATION_OID {
        if !default_collation_is_libc() {
            // An ICU default collation orders by ICU whatever lc_collate says.
            return false;
        }
        // SAFETY: reading a GUC's value.
        let v = unsafe { pg_sys::GetConfigOption(c"lc_collate".as_ptr(), true, false) };
        if v.is_null() {
            return false;
        }
        // SAFETY: GUC strings are NUL-terminated.
        return byte_ordered(unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes());
    }
    // SAFETY: a syscache lookup, released below; the attribute is read while pinned.
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::COLLOID as _,
            pg_sys::Datum::from(coll),
        );
        if tup.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_collation;
        let mut ok = false;
        if (*form).collprovider == pg_sys::COLLPROVIDER_LIBC as std::ffi::c_char {
            let mut isnull = false;
            let d = pg_sys::SysCacheGetAttr(
                pg_sys::SysCacheIdentifier::COLLOID as _,
                tup,
                pg_sys::Anum_pg_collation_collcollate as _,
                &mut isnull,
            );
            if !isnull {
                let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
                ok = byte_ordered(std::ffi::CStr::from_ptr(c).to_bytes());
                pg_sys::pfree(c.cast());
            }
        }
        pg_sys::ReleaseSysCache(tup);
        ok
    }
}

/// Does the current database's default collation come from libc (not ICU)?
fn default_collation_is_libc() -> bool {
    // SAFETY: a syscache lookup of the current database, released below.
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::DATABASEOID as _,
            pg_sys::Datum::from(pg_sys::MyDatabaseId),
        );
        if tup.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_database;
        let libc = (*form).datlocprovider == pg_sys::COLLPROVIDER_LIBC as std::ffi::c_char;
        pg_sys::ReleaseSysCache(tup);
        libc
    }
}

fn is_textual(ty: ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Char(_) | ColumnType::Name
    )
}

/// `e` without binary-compatible relabelling.
///
/// # Safety
/// `e` must be an expression node or null.
unsafe fn strip(mut e: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: forwarded contract.
    unsafe {
        while !e.is_null() && (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*(e as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
        }
    }
    e
}

/// Is `e` column `attno` of relation `varno` (this query level)?
///
/// # Safety
/// `e` must be an expression node or null.
unsafe fn is_column(e: *mut pg_sys::Node, varno: u32, attno: i16) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        let e = strip(e);
        if e.is_null() || (*e).type_ != pg_sys::NodeTag::T_Var {
            return false;
        }
        let v = e as *mut pg_sys::Var;
        (*v).varno as u32 == varno && (*v).varlevelsup == 0 && (*v).varattno == attno
    }
}

struct Matcher {
    root: *mut pg_sys::PlannerInfo,
    varno: u32,
}

impl Matcher {
    /// Can `e` be computed before the scan (no column of this relation, nothing
    /// volatile)? Returns the relations it needs.
    ///
    /// # Safety
    /// `e` must be an expression node.
    unsafe fn outside_value(&self, e: *mut pg_sys::Node) -> Option<*mut pg_sys::Bitmapset> {
        // SAFETY: forwarded contract.
        unsafe {
            let rels = pg_sys::pull_varnos(self.root, e);
            if pg_sys::bms_is_member(self.varno as i32, rels)
                || pg_sys::contain_volatile_functions(e)
            {
                return None;
            }
            Some(rels)
        }
    }

    /// Matches `clause` to index column `col`: its kind, its comparison value and the
    /// relations that value needs.
    ///
    /// # Safety
    /// `clause` must be an expression node.
    unsafe fn match_clause(
        &self,
        clause: *mut pg_sys::Node,
        col: &KeyCol,
    ) -> Option<(CondKind, *mut pg_sys::Node, *mut pg_sys::Bitmapset)> {
        // SAFETY: forwarded contract; planner structures.
        unsafe {
            match (*clause).type_ {
                pg_sys::NodeTag::T_OpExpr => {
                    let op = clause as *mut pg_sys::OpExpr;
                    if crate::pglist::len((*op).args) != 2 {
                        return None;
                    }
                    let l = crate::pglist::nth((*op).args, 0) as *mut pg_sys::Node;
                    let r = crate::pglist::nth((*op).args, 1) as *mut pg_sys::Node;
                    if let Some(m) = self.match_pattern(op, l, r, col) {
                        return Some(m);
                    }
                    let (opno, other) = if is_column(l, self.varno, col.attno) {
                        ((*op).opno, r)
                    } else if is_column(r, self.varno, col.attno) {
                        (pg_sys::get_commutator((*op).opno), l)
                    } else {
                        return None;
                    };
                    if opno == pg_sys::InvalidOid {
                        return None;
                    }
                    let kind =
                        CondKind::from_i32(pg_sys::get_op_opfamily_strategy(opno, col.opfamily))?;
                    self.value_ok(other, col, kind, (*op).inputcollid)?;
                    let rels = self.outside_value(other)?;
                    Some((kind, other, rels))
                }
                pg_sys::NodeTag::T_ScalarArrayOpExpr => {
                    let op = clause as *mut pg_sys::ScalarArrayOpExpr;
                    if !(*op).useOr || crate::pglist::len((*op).args) != 2 {
                        return None;
                    }
                    let l = crate::pglist::nth((*op).args, 0) as *mut pg_sys::Node;
                    let r = crate::pglist::nth((*op).args, 1) as *mut pg_sys::Node;
                    if !is_column(l, self.varno, col.attno)
                        || pg_sys::get_op_opfamily_strategy((*op).opno, col.opfamily)
                            != CondKind::Eq as i32
                    {
                        return None;
                    }
                    let elem = pg_sys::get_element_type(pg_sys::exprType(r));
                    let elem = if elem == pg_sys::InvalidOid {
                        elem
                    } else {
                        pg_sys::getBaseType(elem)
                    };
                    if !value_type_ok(elem, col) {
                        return None;
                    }
                    self.collation_ok(col, CondKind::Eq, (*op).inputcollid)?;
                    let rels = self.outside_value(r)?;
                    Some((CondKind::In, r, rels))
                }
                pg_sys::NodeTag::T_NullTest => {
                    let nt = clause as *mut pg_sys::NullTest;
                    if (*nt).argisrow
                        || !is_column((*nt).arg as *mut pg_sys::Node, self.varno, col.attno)
                    {
                        return None;
                    }
                    let kind = if (*nt).nulltesttype == pg_sys::NullTestType::IS_NULL {
                        CondKind::IsNull
                    } else {
                        CondKind::NotNull
                    };
                    Some((kind, std::ptr::null_mut(), std::ptr::null_mut()))
                }
                _ => None,
            }
        }
    }

    /// `text_col LIKE 'abc%'` or `text_col ~ '^abc'` with a constant pattern that has
    /// a fixed prefix, under a byte-ordered collation: a key range (PostgreSQL's
    /// "special index operator" for btree).
    ///
    /// # Safety
    /// `op` must be a valid two-argument operator expression with arguments `l`, `r`.
    unsafe fn match_pattern(
        &self,
        op: *mut pg_sys::OpExpr,
        l: *mut pg_sys::Node,
        r: *mut pg_sys::Node,
        col: &KeyCol,
    ) -> Option<(CondKind, *mut pg_sys::Node, *mut pg_sys::Bitmapset)> {
        // SAFETY: forwarded contract.
        unsafe {
            use pg_sys::*;
            // (operator, the column types it applies to)
            let (kind, family_ok) = match (*op).opno.to_u32() {
                OID_TEXT_LIKE_OP => (CondKind::Like, is_text(col.typid)),
                OID_TEXT_REGEXEQ_OP => (CondKind::Regex, is_text(col.typid)),
                OID_TEXT_ICLIKE_OP => (CondKind::ILike, is_text(col.typid)),
                OID_TEXT_ICREGEXEQ_OP => (CondKind::IRegex, is_text(col.typid)),
                OID_BPCHAR_LIKE_OP => (CondKind::Like, matches!(col.ty, ColumnType::Char(_))),
                OID_BPCHAR_REGEXEQ_OP => (CondKind::Regex, matches!(col.ty, ColumnType::Char(_))),
                OID_BPCHAR_ICLIKE_OP => (CondKind::ILike, matches!(col.ty, ColumnType::Char(_))),
                OID_BPCHAR_ICREGEXEQ_OP => {
                    (CondKind::IRegex, matches!(col.ty, ColumnType::Char(_)))
                }
                OID_NAME_LIKE_OP => (CondKind::Like, col.ty == ColumnType::Name),
                OID_NAME_REGEXEQ_OP => (CondKind::Regex, col.ty == ColumnType::Name),
                OID_NAME_ICLIKE_OP => (CondKind::ILike, col.ty == ColumnType::Name),
                OID_NAME_ICREGEXEQ_OP => (CondKind::IRegex, col.ty == ColumnType::Name),
                _ => return None,
            };
            if !family_ok || !is_column(l, self.varno, col.attno) {
                return None;
            }
            let c = strip(r);
            if (*c).type_ != pg_sys::NodeTag::T_Const || (*(c as *mut pg_sys::Const)).constisnull {
                return None;
            }
            if !collation_is_c((*op).inputcollid) {
                return None;
            }
            let prefix = pattern_prefix(kind, (*(c as *mut pg_sys::Const)).constvalue)?;
            (!prefix.is_empty()).then_some((kind, c, std::ptr::null_mut()))
        }
    }

    /// # Safety
    /// `other` must be an expression node.
    unsafe fn value_ok(
        &self,
        other: *mut pg_sys::Node,
        col: &KeyCol,
        kind: CondKind,
        coll: pg_sys::Oid,
    ) -> Option<()> {
        // SAFETY: forwarded contract.
        let t = unsafe { pg_sys::exprType(strip(other)) };
        let t = if t == pg_sys::InvalidOid {
            t
        } else {
            // SAFETY: catalog lookup of a valid type.
            unsafe { pg_sys::getBaseType(t) }
        };
        let range = matches!(
            kind,
            CondKind::Lt | CondKind::Le | CondKind::Gt | CondKind::Ge
        );
        let ok = value_type_ok(t, col)
            || (range && crate::cross_type::convertible_for_range(col.typid, t));
        if !ok {
            return None;
        }
        self.collation_ok(col, kind, coll)
    }

    fn collation_ok(&self, col: &KeyCol, kind: CondKind, coll: pg_sys::Oid) -> Option<()> {
        if !is_textual(col.ty) {
            return Some(());
        }
        if kind == CondKind::Eq {
            // SAFETY: catalog lookup.
            let det = coll == pg_sys::InvalidOid
                || unsafe { pg_sys::get_collation_isdeterministic(coll) };
            det.then_some(())
        } else {
            collation_is_c(coll).then_some(())
        }
    }
}

/// Can a comparison value of type `t` (a base type) be turned into a key of `col`: the
/// column's own type, text for varchar, or another type of its operator family that
/// `cross_type` converts?
fn value_type_ok(t: pg_sys::Oid, col: &KeyCol) -> bool {
    t == col.typid
        || is_text(t) && is_text(col.typid)
        || crate::cross_type::convertible(col.typid, t)
}

/// Is a column of base type `typid` stored as engine type `ty` a `bpchar` without a
/// length? Its values are stored as given, unpadded, and compare ignoring trailing
/// blanks (`'a' = 'a  '`), which their keys do not: no index condition, row filter or
/// grouping may rely on its bytes. (`char(n)` values are padded to n, and their keys
/// drop trailing blanks.)
pub fn bare_bpchar(typid: pg_sys::Oid, ty: ColumnType) -> bool {
    typid == pg_sys::BPCHAROID && !matches!(ty, ColumnType::Char(_))
}

/// The operator family of the default btree operator class of type `typid`
/// (`InvalidOid`: none), from PostgreSQL's type cache. `GetDefaultOpClass` scans
/// `pg_opclass` on every call: once per index column of every plan, it was a sixth of
/// an unprepared point SELECT's time. (The type cache calls it once per type, and
/// forgets the answer when `pg_opclass` changes.)
pub fn default_btree_opfamily(typid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: `typid` is a valid type (a column's); the entry lives as long as the
    // backend.
    unsafe {
        (*pg_sys::lookup_type_cache(typid, pg_sys::TYPECACHE_BTREE_OPFAMILY as i32)).btree_opf
    }
}

/// The index columns of `def` on relation `relid`.
fn key_cols(relid: pg_sys::Oid, def: &IndexDef, types: &[ColumnType]) -> Option<Vec<KeyCol>> {
    def.columns
        .iter()
        .map(|&c| {
            let attno = c as i16 + 1;
            // SAFETY: catalog lookups.
            unsafe {
                let typid = pg_sys::getBaseType(pg_sys::get_atttype(relid, attno));
                if bare_bpchar(typid, types[c as usize]) {
                    return None;
                }
                let opfamily = default_btree_opfamily(typid);
                if opfamily == pg_sys::InvalidOid {
                    return None;
                }
                Some(KeyCol {
                    attno,
                    typid,
                    ty: types[c as usize],
                    opfamily,
                })
            }
        })
        .collect()
}

/// A candidate scan before costing.
struct Candidate {
    conds: Vec<Cond>,
    exprs: Vec<*mut pg_sys::Node>,
    clauses: *mut pg_sys::List,
    required_outer: *mut pg_sys::Bitmapset,
    probes: f64,
}

/// Adds index paths for `baserel` (relation `relid`) to the planner.
///
/// # Safety
/// Called from GetForeignPaths with its arguments.
pub unsafe fn add_index_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
) {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let Some(table) = engine().table(crate::handler::table_id(relid)) else {
            return;
        };
        let types: Vec<ColumnType> = table.def.columns.iter().map(|c| c.ty).collect();
        let m = Matcher {
            root,
            varno: (*baserel).relid,
        };
        // Only quals PostgreSQL would let run ahead of a security barrier's (as its
        // own index paths: `match_restriction_clauses_to_index`).
        let restrict: Vec<*mut pg_sys::RestrictInfo> =
            PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).baserestrictinfo)
                .iter_ptr()
                .filter(|&r| pg_sys::restriction_is_securely_promotable(r, baserel))
                .collect();
        // (Not the indexes other transactions are creating: PostgreSQL's planner
        // does not see an index before its creator commits either.)
        let rel = relid.to_u32();
        for def in table.plannable_index_defs(|id| crate::xact::index_created_here(rel, id)) {
            if crate::xact::index_drop_pending(relid.to_u32(), def.id) {
                continue;
            }
            let stats = crate::settings::ENABLE_INDEX_STATISTICS
                .get()
                .then(|| table.index_stats(def.id))
                .flatten();
            let stats = stats.as_ref();
            let Some(cols) = key_cols(relid, &def, &types) else {
                continue;
            };
            // Restriction conditions: an equality prefix, then a range.
            let base = conditions(
                &m,
                &cols,
                &restrict,
                0,
                Candidate {
                    conds: Vec::new(),
                    exprs: Vec::new(),
                    clauses: std::ptr::null_mut(),
                    required_outer: std::ptr::null_mut(),
                    probes: 1.0,
                },
            );
            let ordered = pathkeys_direction(root, &m, &cols, &base.conds, &types, &def);
            if !base.conds.is_empty() {
                add_path(root, baserel, &def, stats, &cols, &base, None);
            }
            if let Some(reverse) = ordered {
                add_path(root, baserel, &def, stats, &cols, &base, Some(reverse));
            }
            // Parameterized by a join clause on the first column.
            if base
                .conds
                .first()
                .is_some_and(|c| c.col == 0 && c.kind.prefix())
            {
                continue;
            }
            for rinfo in join_clauses(root, baserel, cols[0].attno) {
                let clause = (*rinfo).clause as *mut pg_sys::Node;
                let Some((CondKind::Eq, value, rels)) = m.match_clause(clause, &cols[0]) else {
                    continue;
                };
                if pg_sys::bms_is_empty(rels) {
                    continue;
                }
                let first = Candidate {
                    conds: vec![Cond {
                        col: 0,
                        kind: CondKind::Eq,
                        expr: 0,
                    }],
                    exprs: vec![value],
                    clauses: pg_sys::lappend(std::ptr::null_mut(), rinfo as *mut c_void),
                    required_outer: rels,
                    probes: 1.0,
                };
                let cand = conditions(&m, &cols, &restrict, 1, first);
                add_path(root, baserel, &def, stats, &cols, &cand, None);
            }
        }
    }
}

/// Extends `cand` with restriction conditions from index column `from` on.
///
/// # Safety
/// Planner structures.
unsafe fn conditions(
    m: &Matcher,
    cols: &[KeyCol],
    restrict: &[*mut pg_sys::RestrictInfo],
    from: usize,
    mut cand: Candidate,
) -> Candidate {
    // SAFETY: forwarded contract.
    unsafe {
        let mut has_in = false;
        for (i, col) in cols.iter().enumerate().skip(from) {
            let mut prefix = None;
            let (mut lower, mut upper, mut not_null, mut pattern) = (None, None, None, None);
            for &ri in restrict {
                let Some((kind, value, _)) = m.match_clause((*ri).clause as *mut pg_sys::Node, col)
                else {
                    continue;
                };
                match kind {
                    CondKind::Eq | CondKind::IsNull if prefix.is_none() => {
                        prefix = Some((kind, value, ri))
                    }
                    CondKind::In if prefix.is_none() && !has_in => prefix = Some((kind, value, ri)),
                    CondKind::Gt | CondKind::Ge if lower.is_none() => {
                        lower = Some((kind, value, ri))
                    }
                    CondKind::Lt | CondKind::Le if upper.is_none() => {
                        upper = Some((kind, value, ri))
                    }
                    CondKind::NotNull => not_null = Some((kind, value, ri)),
                    k if k.is_pattern() && pattern.is_none() => pattern = Some((kind, value, ri)),
                    _ => {}
                }
            }
            let push = |cand: &mut Candidate,
                        (kind, value, ri): (
                CondKind,
                *mut pg_sys::Node,
                *mut pg_sys::RestrictInfo,
            )| {
                let expr = if value.is_null() {
                    -1
                } else {
                    cand.exprs.push(value);
                    cand.exprs.len() as i32 - 1
                };
                cand.conds.push(Cond { col: i, kind, expr });
                cand.clauses = pg_sys::lappend(cand.clauses, ri as *mut c_void);
                if kind == CondKind::In {
                    cand.probes *= in_list_len(value);
                }
            };
            if let Some(p) = prefix {
                has_in |= p.0 == CondKind::In;
                push(&mut cand, p);
                continue;
            }
            let ranged = lower.is_some() || upper.is_some();
            for c in [lower, upper].into_iter().flatten() {
                push(&mut cand, c);
            }
            if !ranged {
                if let Some(c) = pattern.or(not_null) {
                    push(&mut cand, c);
                }
            }
            break;
        }
        cand
    }
}

/// Number of elements of an IN list's array (10 if unknown before execution).
///
/// # Safety
/// `e` must be an array expression.
unsafe fn in_list_len(e: *mut pg_sys::Node) -> f64 {
    // SAFETY: forwarded contract.
    unsafe {
        let e = strip(e);
        match (*e).type_ {
            pg_sys::NodeTag::T_Const if !(*(e as *mut pg_sys::Const)).constisnull => {
                let arr = pg_sys::pg_detoast_datum(
                    (*(e as *mut pg_sys::Const)).constvalue.cast_mut_ptr(),
                ) as *mut pg_sys::ArrayType;
                let ndim = (*arr).ndim;
                let dims =
                    (arr as *mut u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
                pg_sys::ArrayGetNItems(ndim, dims).max(1) as f64
            }
            pg_sys::NodeTag::T_ArrayExpr => {
                crate::pglist::len((*(e as *mut pg_sys::ArrayExpr)).elements).max(1) as f64
            }
            _ => 10.0,
        }
    }
}

/// Join clauses that could drive a parameterized scan on column `attno`: implied
/// equalities of equivalence classes, and movable plain join clauses.
///
/// # Safety
/// Planner structures.
unsafe fn join_clauses(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    attno: i16,
) -> Vec<*mut pg_sys::RestrictInfo> {
    // SAFETY: forwarded contract.
    unsafe {
        let mut out = Vec::new();
        let mut arg = (attno, (*baserel).relid);
        let ec = pg_sys::generate_implied_equalities_for_column(
            root,
            baserel,
            Some(ec_member_is_column),
            &mut arg as *mut (i16, u32) as *mut c_void,
            std::ptr::null_mut(),
        );
        out.extend(PgList::<pg_sys::RestrictInfo>::from_pg(ec).iter_ptr());
        for ri in PgList::<pg_sys::RestrictInfo>::from_pg((*baserel).joininfo).iter_ptr() {
            if pg_sys::join_clause_is_movable_to(ri, baserel) {
                out.push(ri);
            }
        }
        out
    }
}

/// # Safety
/// Called by PostgreSQL only (`generate_implied_equalities_for_column`), with `arg`
/// pointing at the `(i16, u32)` the caller passed.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn ec_member_is_column(
    _root: *mut pg_sys::PlannerInfo,
    _rel: *mut pg_sys::RelOptInfo,
    _ec: *mut pg_sys::EquivalenceClass,
    em: *mut pg_sys::EquivalenceMember,
    arg: *mut c_void,
) -> bool {
    // SAFETY: `arg` is the (attno, varno) pair passed by `join_clauses`.
    unsafe {
        let (attno, varno) = *(arg as *mut (i16, u32));
        is_column((*em).em_expr as *mut pg_sys::Node, varno, attno)
    }
}

/// If reading index `def` after the prefix of `conds` returns rows in the query's
/// ORDER BY, the direction (true = backwards).
///
/// # Safety
/// Planner structures.
unsafe fn pathkeys_direction(
    root: *mut pg_sys::PlannerInfo,
    m: &Matcher,
    cols: &[KeyCol],
    conds: &[Cond],
    types: &[ColumnType],
    def: &IndexDef,
) -> Option<bool> {
    // SAFETY: forwarded contract.
    unsafe {
        let pathkeys = PgList::<pg_sys::PathKey>::from_pg((*root).query_pathkeys);
        if pathkeys.is_empty() || conds.iter().any(|c| c.kind == CondKind::In) {
            return None;
        }
        // Columns fixed to one value (or NULL) by the prefix keep the order of the rest.
        let fixed = conds
            .iter()
            .take_while(|c| matches!(c.kind, CondKind::Eq | CondKind::IsNull))
            .count();
        let mut dir = None;
        for (j, pk) in pathkeys.iter_ptr().enumerate() {
            let col = cols.get(fixed + j)?;
            if (*pk).pk_opfamily != col.opfamily {
                return None;
            }
            let desc = (*pk).pk_strategy == CondKind::Gt as i32;
            if (*pk).pk_nulls_first != desc || dir.is_some_and(|d| d != desc) {
                return None;
            }
            dir = Some(desc);
            let ec = (*pk).pk_eclass;
            if (*ec).ec_has_volatile {
                return None;
            }
            let member = PgList::<pg_sys::EquivalenceMember>::from_pg((*ec).ec_members)
                .iter_ptr()
                .any(|em| is_column((*em).em_expr as *mut pg_sys::Node, m.varno, col.attno));
            if !member {
                return None;
            }
            let ty = types[def.columns[fixed + j] as usize];
            if is_textual(ty) && !collation_is_c((*ec).ec_collation) {
                return None;
            }
        }
        dir
    }
}

/// Costs `cand` and adds its path (ordered in direction `order` if given). With the
/// index's statistics (`memfdw_engine::stats`), an equality prefix of the key selects
/// one of its distinct values: they know what PostgreSQL's per-column estimates do
/// not (a column with few values before ANALYZE fills pg_statistic, correlated
/// columns); the conditions after the prefix are estimated by PostgreSQL.
///
/// # Safety
/// Planner structures.
unsafe fn add_path(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    def: &IndexDef,
    stats: Option<&IndexStatsView>,
    cols: &[KeyCol],
    cand: &Candidate,
    order: Option<bool>,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let tuples = (*baserel).tuples.max(1.0);
        let point = def.unique
            && cand.conds.len() == cols.len()
            && cand.conds.iter().all(|c| c.kind == CondKind::Eq);
        let selectivity = |clauses: *mut pg_sys::List| {
            if clauses.is_null() {
                1.0
            } else {
                pg_sys::clauselist_selectivity(
                    root,
                    clauses,
                    (*baserel).relid as i32,
                    pg_sys::JoinType::JOIN_INNER,
                    std::ptr::null_mut(),
                )
            }
        };
        // Conditions and clauses correspond one to one, in order (see `conditions`).
        let eq_prefix = cand
            .conds
            .iter()
            .take_while(|c| c.kind == CondKind::Eq)
            .count();
        let distinct = stats
            .filter(|_| eq_prefix > 0)
            .and_then(|s| s.distinct.get(eq_prefix - 1).copied())
            .filter(|&d| d > 0);
        // A point lookup fetches a row per probe: no selectivity to estimate (without
        // index statistics that was a second `clauselist_selectivity` of the key
        // clauses).
        let fetched = if point {
            cand.probes.min(tuples)
        } else {
            let sel = match distinct {
                Some(d) => {
                    let mut rest: *mut pg_sys::List = std::ptr::null_mut();
                    for c in PgList::<c_void>::from_pg(cand.clauses)
                        .iter_ptr()
                        .skip(eq_prefix)
                    {
                        rest = pg_sys::lappend(rest, c);
                    }
                    selectivity(rest) / d as f64
                }
                None => selectivity(cand.clauses),
            };
            (tuples * sel).max(1.0)
        };
        let (rows, param_info) = if pg_sys::bms_is_empty(cand.required_outer) {
            ((*baserel).rows, std::ptr::null_mut())
        } else {
            let ppi = pg_sys::get_baserel_parampathinfo(root, baserel, cand.required_outer);
            ((*ppi).ppi_rows, ppi)
        };
        let _ = param_info;
        let rows = if point { rows.min(cand.probes) } else { rows };
        let startup = (*baserel).baserestrictcost.startup
            + cand.probes * pg_sys::cpu_operator_cost * (tuples + 2.0).log2();
        let per_row = pg_sys::cpu_tuple_cost
            + pg_sys::cpu_index_tuple_cost
            + (*baserel).baserestrictcost.per_tuple;
        let total = startup + fetched * per_row;
        let choice = IndexChoice {
            index_id: def.id,
            reverse: order == Some(true),
            ordered: order.is_some(),
            point,
            conds: cand.conds.clone(),
        };
        let mut exprs: *mut pg_sys::List = std::ptr::null_mut();
        for &e in &cand.exprs {
            exprs = pg_sys::lappend(exprs, e as *mut c_void);
        }
        // Conditions and clauses correspond one to one (see `conditions`).
        let mut exact: *mut pg_sys::List = std::ptr::null_mut();
        for (c, ri) in cand
            .conds
            .iter()
            .zip(PgList::<pg_sys::RestrictInfo>::from_pg(cand.clauses).iter_ptr())
        {
            let value = usize::try_from(c.expr).ok().map(|i| cand.exprs[i]);
            if value.is_some_and(|v| exact_cond(c.kind, &cols[c.col], v)) {
                exact = pg_sys::lappend(exact, ri as *mut c_void);
            }
        }
        let private = crate::plan_private::PathPrivate {
            choice: choice.to_list(),
            exprs,
            exact,
        }
        .to_list();
        let pathkeys = if order.is_some() {
            (*root).query_pathkeys
        } else {
            std::ptr::null_mut()
        };
        let path = pg_sys::create_foreignscan_path(
            root,
            baserel,
            std::ptr::null_mut(),
            rows,
            startup,
            total,
            pathkeys,
            cand.required_outer,
            std::ptr::null_mut(),
            private,
        );
        pg_sys::add_path(baserel, path as *mut pg_sys::Path);
    }
}

/// Does an index scan return exactly the rows for which a condition of `kind` on
/// `col`, comparing with `value`, is true (so that PostgreSQL need not evaluate it
/// again on each row)? Only where that is plain to see: an equality or a range of an
/// integer column with an integer value (`cross_type` converts those exactly, or
/// finds that no value or every value of the column matches; a NULL value matches
/// nothing, as the comparison does). The scan compares the key of the version it
/// reads, and its bounds skip NULL keys and whole prefixes (see
/// `IndexScan::new`). Other types keep the check: their keys may equate values the
/// operator tells apart, or the reverse (floats' zeros, numeric scales, collations).
///
/// # Safety
/// `value` is an expression node.
unsafe fn exact_cond(kind: CondKind, col: &KeyCol, value: *mut pg_sys::Node) -> bool {
    let int = |t: pg_sys::Oid| matches!(t, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID);
    if !matches!(
        kind,
        CondKind::Eq | CondKind::Lt | CondKind::Le | CondKind::Gt | CondKind::Ge
    ) || !matches!(
        col.ty,
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8
    ) || !int(col.typid)
    {
        return false;
    }
    // SAFETY: `value` is an expression node (forwarded contract).
    let t = unsafe { pg_sys::exprType(strip(value)) };
    // SAFETY: a catalog lookup of a valid type (checked just before).
    t != pg_sys::InvalidOid && int(unsafe { pg_sys::getBaseType(t) })
}

/// The fixed prefix of a LIKE pattern (`kind` Like) or of a regular expression
/// (`kind` Regex), as bytes: what every matching string starts with. None if the
/// pattern cannot be read (PostgreSQL then reports it when it evaluates the clause).
///
/// # Safety
/// `pattern` must be a valid text datum.
pub unsafe fn pattern_prefix(kind: CondKind, pattern: pg_sys::Datum) -> Option<Vec<u8>> {
    // SAFETY: forwarded contract; a detoasted copy or the original, read only.
    unsafe {
        let t = pg_sys::pg_detoast_datum_packed(pattern.cast_mut_ptr());
        match kind {
            CondKind::Like | CondKind::ILike => {
                let bytes = pgrx::varlena::varlena_to_byte_slice(t);
                let mut out = Vec::new();
                let mut it = bytes.iter();
                while let Some(&b) = it.next() {
                    let b = match b {
                        b'%' | b'_' => break,
                        // The default escape: the next byte is literal.
                        b'\\' => *it.next()?,
                        _ => b,
                    };
                    // ILIKE: the prefix ends before the first character that may have
                    // another case (an ASCII letter, or any non-ASCII character).
                    if kind == CondKind::ILike && (b.is_ascii_alphabetic() || b >= 0x80) {
                        break;
                    }
                    out.push(b);
                }
                Some(out)
            }
            CondKind::Regex | CondKind::IRegex => {
                // Embedded options ("(?i)", "***:") may make the match case-insensitive
                // under the clause's collation: no prefix then.
                let bytes = pgrx::varlena::varlena_to_byte_slice(t);
                if bytes.starts_with(b"***") || bytes.windows(2).any(|w| w == b"(?") {
                    return Some(Vec::new());
                }
                let mut exact = false;
                let p = pg_sys::regexp_fixed_prefix(
                    t as *mut pg_sys::text,
                    kind == CondKind::IRegex,
                    pg_sys::C_COLLATION_OID,
                    &mut exact,
                );
                if p.is_null() {
                    return Some(Vec::new());
                }
                let out = std::ffi::CStr::from_ptr(p).to_bytes().to_vec();
                pg_sys::pfree(p.cast());
                Some(out)
            }
            _ => None,
        }
    }
}

/// A condition a scan can check on each row where it lies, before the row is copied
/// out (see `memfdw_engine::row_filter`): `column op value`, `column IS [NOT] NULL`.
pub struct FilterCond {
    /// Column index.
    pub col: usize,
    pub kind: CondKind,
    /// The comparison value (computable before the scan), null for a null test.
    pub value: *mut pg_sys::Node,
    /// The row filter decides exactly what the clause decides (the value has the
    /// column's type, or is an integer of another width, so no conversion rounds
    /// it); otherwise the filter only passes a superset of the clause's rows.
    pub exact: bool,
}

/// The row-filter form of `clause`, a qual of relation `varno` (PostgreSQL relation
/// `relid`, engine column types `types`), if it has one: the comparisons an index
/// condition may use (equality, `IN` lists, ranges, null tests; not patterns), on one
/// column, with a value that needs no other relation.
///
/// # Safety
/// Planner structures; `clause` is an expression of the relation's quals.
pub unsafe fn filter_condition(
    root: *mut pg_sys::PlannerInfo,
    varno: u32,
    relid: pg_sys::Oid,
    types: &[ColumnType],
    clause: *mut pg_sys::Node,
) -> Option<FilterCond> {
    // SAFETY: forwarded contract.
    unsafe {
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(clause, varno, &mut attrs);
        let [attno] = crate::pglist::attnos(attrs)[..] else {
            return None;
        };
        if attno <= 0 || attno as usize > types.len() {
            return None;
        }
        let c = attno as usize - 1;
        if !keys::indexable(types[c]) {
            return None;
        }
        let def = IndexDef {
            id: 0,
            name: String::new(),
            columns: vec![c as u16],
            unique: false,
            primary: false,
        };
        let col = key_cols(relid, &def, types)?.pop()?;
        let m = Matcher { root, varno };
        let (kind, value, rels) = m.match_clause(clause, &col)?;
        let supported = matches!(
            kind,
            CondKind::Eq
                | CondKind::In
                | CondKind::Lt
                | CondKind::Le
                | CondKind::Gt
                | CondKind::Ge
                | CondKind::IsNull
                | CondKind::NotNull
        );
        // (A value with a subquery is left to PostgreSQL, which evaluates it per row.)
        if !supported
            || !pg_sys::bms_is_empty(rels)
            || (!value.is_null() && pg_sys::contain_subplans(value))
        {
            return None;
        }
        // Integers of other widths convert exactly or lie beyond every column value
        // (see `cross_type`); other conversions may round to a wider bound.
        let exact = value.is_null() || {
            let mut t = pg_sys::exprType(strip(value));
            if kind == CondKind::In {
                t = pg_sys::get_element_type(t);
            }
            let t = pg_sys::getBaseType(t);
            t == col.typid
                || is_text(t) && is_text(col.typid)
                || crate::cross_type::int_family(t) && crate::cross_type::int_family(col.typid)
        };
        Some(FilterCond {
            col: c,
            kind,
            value,
            exact,
        })
    }
}
