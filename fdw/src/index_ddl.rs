//! Keys and indexes of memory tables in SQL.
//!
//! PostgreSQL refuses PRIMARY KEY and UNIQUE on foreign tables and CREATE INDEX on
//! them; memfdw takes these statements in `ProcessUtility_hook`:
//! * `PRIMARY KEY` / `UNIQUE` (column or table constraints) of `CREATE FOREIGN TABLE`
//!   are taken out of a copy of the statement before it runs (primary-key columns
//!   become NOT NULL, as PostgreSQL makes them), then built as engine indexes;
//! * `CREATE [UNIQUE] INDEX [IF NOT EXISTS] [name] ON t [USING btree] (col, ...)` builds
//!   an engine index under a ShareRowExclusiveLock on the table (writers and other
//!   index builds wait, readers do not);
//!   expression and partial indexes, INCLUDE, other access methods, DEFERRABLE and
//!   NULLS NOT DISTINCT are refused with 0A000;
//! * `DROP INDEX [IF EXISTS] name, ...` drops engine indexes at commit (and leaves
//!   other names to PostgreSQL).
//!
//! Index names live in the table's schema, beside relation names: a new name may not
//! be taken by either. Engine indexes have no pg_class entry; `memfdw.indexes()`
//! lists them. Index DDL is undone with its (sub)transaction (see `xact`).

use crate::errors::OrRaise;
use crate::shmem::engine;
use crate::{types, xact};
use memfdw_engine::IndexDef;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::{CStr, CString};

/// A key declared in CREATE FOREIGN TABLE.
pub struct KeySpec {
    name: Option<String>,
    columns: Vec<String>,
    primary: bool,
}

pub(crate) fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: PostgreSQL C strings (or null).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn unsupported(what: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("{what} are not supported on memory tables")
    );
}

/// Checks a PRIMARY KEY or UNIQUE constraint memfdw can build.
///
/// # Safety
/// `c` must be a valid constraint node.
unsafe fn check_constraint(c: *mut pg_sys::Constraint) {
    // SAFETY: forwarded contract.
    unsafe {
        if (*c).deferrable {
            unsupported("deferrable unique constraints");
        }
        if (*c).nulls_not_distinct {
            unsupported("NULLS NOT DISTINCT constraints");
        }
        // INCLUDE columns: every memory index reaches the whole row already, so they
        // add nothing (they must still exist: checked with the key columns).
        if !(*c).options.is_null() {
            unsupported("storage parameters of keys");
        }
    }
}

fn is_key(c: *mut pg_sys::Constraint) -> Option<bool> {
    // SAFETY: a constraint node.
    match unsafe { (*c).contype } {
        pg_sys::ConstrType::CONSTR_PRIMARY => Some(true),
        pg_sys::ConstrType::CONSTR_UNIQUE => Some(false),
        _ => None,
    }
}

/// Takes the PRIMARY KEY and UNIQUE constraints out of `stmt` (a copy the caller runs
/// instead of the original) and returns them; primary-key columns are made NOT NULL.
///
/// # Safety
/// `stmt` must be a valid, private copy of a CREATE FOREIGN TABLE statement.
pub unsafe fn take_keys(stmt: *mut pg_sys::CreateForeignTableStmt) -> Vec<KeySpec> {
    // SAFETY: forwarded contract; lists of parse nodes.
    unsafe {
        let base = &mut (*stmt).base;
        let table = cstr((*base.relation).relname).unwrap_or_default();
        let mut specs = Vec::new();
        let mut included: Vec<String> = Vec::new();
        let mut kept: *mut pg_sys::List = std::ptr::null_mut();
        let elts = PgList::<pg_sys::Node>::from_pg(base.tableElts);
        for elt in elts.iter_ptr() {
            match (*elt).type_ {
                pg_sys::NodeTag::T_ColumnDef => {
                    let col = elt as *mut pg_sys::ColumnDef;
                    let mut cons: *mut pg_sys::List = std::ptr::null_mut();
                    let mut after_key = false;
                    for c in PgList::<pg_sys::Constraint>::from_pg((*col).constraints).iter_ptr() {
                        // DEFERRABLE & co. follow the constraint they qualify.
                        let attr = (*c).contype;
                        if after_key
                            && (attr == pg_sys::ConstrType::CONSTR_ATTR_DEFERRABLE
                                || attr == pg_sys::ConstrType::CONSTR_ATTR_DEFERRED)
                        {
                            unsupported("deferrable unique constraints");
                        }
                        if after_key
                            && (attr == pg_sys::ConstrType::CONSTR_ATTR_NOT_DEFERRABLE
                                || attr == pg_sys::ConstrType::CONSTR_ATTR_IMMEDIATE)
                        {
                            continue;
                        }
                        after_key = is_key(c).is_some();
                        match is_key(c) {
                            Some(primary) => {
                                check_constraint(c);
                                specs.push(KeySpec {
                                    name: cstr((*c).conname),
                                    columns: vec![cstr((*col).colname).unwrap_or_default()],
                                    primary,
                                });
                            }
                            None => cons = pg_sys::lappend(cons, c as *mut std::ffi::c_void),
                        }
                    }
                    (*col).constraints = cons;
                    kept = pg_sys::lappend(kept, elt as *mut std::ffi::c_void);
                }
                pg_sys::NodeTag::T_Constraint if is_key(elt as _).is_some() => {
                    let c = elt as *mut pg_sys::Constraint;
                    check_constraint(c);
                    included.extend(
                        PgList::<pg_sys::Node>::from_pg((*c).including)
                            .iter_ptr()
                            .map(|n| cstr(str_val(n)).unwrap_or_default()),
                    );
                    let columns = PgList::<pg_sys::Node>::from_pg((*c).keys)
                        .iter_ptr()
                        .map(|n| cstr(str_val(n)).unwrap_or_default())
                        .collect();
                    specs.push(KeySpec {
                        name: cstr((*c).conname),
                        columns,
                        primary: is_key(c) == Some(true),
                    });
                }
                _ => kept = pg_sys::lappend(kept, elt as *mut std::ffi::c_void),
            }
        }
        base.tableElts = kept;
        if specs.iter().filter(|s| s.primary).count() > 1 {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
                format!("multiple primary keys for table \"{table}\" are not allowed")
            );
        }
        // INCLUDE columns must exist.
        for name in &included {
            let exists = PgList::<pg_sys::Node>::from_pg(base.tableElts)
                .iter_ptr()
                .any(|elt| {
                    (*elt).type_ == pg_sys::NodeTag::T_ColumnDef
                        && cstr((*(elt as *mut pg_sys::ColumnDef)).colname).as_deref()
                            == Some(name.as_str())
                });
            if !exists {
                column_missing(name);
            }
        }
        // Primary-key columns are NOT NULL.
        for spec in specs.iter().filter(|s| s.primary) {
            for name in &spec.columns {
                let mut found = false;
                for elt in PgList::<pg_sys::Node>::from_pg(base.tableElts).iter_ptr() {
                    if (*elt).type_ == pg_sys::NodeTag::T_ColumnDef {
                        let col = elt as *mut pg_sys::ColumnDef;
                        if cstr((*col).colname).as_deref() == Some(name) {
                            (*col).is_not_null = true;
                            found = true;
                        }
                    }
                }
                if !found {
                    column_missing(name);
                }
            }
        }
        specs
    }
}

/// The text of a String node (PostgreSQL's `strVal`).
///
/// # Safety
/// `n` must be a String node.
unsafe fn str_val(n: *mut pg_sys::Node) -> *const std::ffi::c_char {
    // SAFETY: forwarded contract.
    unsafe { (*(n as *mut pg_sys::String)).sval }
}

fn column_missing(name: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        format!("column \"{name}\" named in key does not exist")
    );
}

/// Builds the keys of a memory table that CREATE FOREIGN TABLE has just created.
pub fn create_keys(relid: pg_sys::Oid, specs: Vec<KeySpec>) {
    for spec in specs {
        build(
            relid,
            IndexSpec {
                name: spec.name,
                columns: &spec.columns,
                unique: true,
                primary: spec.primary,
                label: constraint_label(true, spec.primary),
                if_not_exists: false,
                exact: false,
            },
        );
    }
}

/// Builds the indexes an `indexes` option names (see `index_options`), in order.
pub fn create_from_option(relid: pg_sys::Oid, value: &str) {
    // (The validator checked it already.)
    crate::index_options::validate(value);
    let list = crate::index_options::parse(value).unwrap_or_default();
    for ix in list {
        build(
            relid,
            IndexSpec {
                name: Some(ix.name),
                columns: &ix.columns,
                unique: ix.unique,
                primary: ix.primary,
                label: constraint_label(ix.unique, ix.primary),
                if_not_exists: false,
                exact: true,
            },
        );
    }
}

/// Schema of relation `relid`.
fn namespace_of(relid: pg_sys::Oid) -> pg_sys::Oid {
    // SAFETY: catalog lookup.
    unsafe { pg_sys::get_rel_namespace(relid) }
}

/// The memory-table index called `name` in schema `nsp`: (table, index id).
fn find_index(nsp: pg_sys::Oid, name: &str) -> Option<(u32, u32)> {
    let e = engine();
    let here = crate::handler::current_database();
    e.table_ids().into_iter().find_map(|table| {
        let oid = table.relation;
        if table.database != here || namespace_of(pg_sys::Oid::from(oid)) != nsp {
            return None;
        }
        // As this transaction sees it (after its own TRUNCATE or ALTER), without
        // beginning an engine transaction (this runs for every CREATE of a relation).
        let t = xact::table_view(pg_sys::Oid::from(oid))?;
        t.index_defs()
            .into_iter()
            .find(|d| d.name == name && !xact::index_drop_pending(oid, d.id))
            .map(|d| (oid, d.id))
    })
}

/// Refuses to create relation `rv` under the name of a memory-table index of its schema
/// (42P07, as for any relation name taken): index names share the namespace with
/// relations, but memory indexes have no pg_class entry for PostgreSQL to find. With
/// IF NOT EXISTS, says so and returns false (the statement is skipped).
///
/// # Safety
/// `rv` must be a valid RangeVar.
pub unsafe fn refuse_index_name(rv: *mut pg_sys::RangeVar, if_not_exists: bool) -> bool {
    // SAFETY: forwarded contract; catalog lookup (raises PostgreSQL's error for a
    // missing schema, as the statement itself would).
    unsafe {
        if (*rv).relpersistence == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char {
            return true;
        }
        let nsp = pg_sys::RangeVarGetCreationNamespace(rv);
        let name = cstr((*rv).relname).unwrap_or_default();
        if find_index(nsp, &name).is_some() {
            if if_not_exists {
                ereport!(
                    NOTICE,
                    PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                    format!("relation \"{name}\" already exists, skipping")
                );
                return false;
            }
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
                "It is the name of an index of a memory table (see memfdw.indexes())."
            );
        }
        true
    }
}

fn name_taken(nsp: pg_sys::Oid, name: &str) -> bool {
    let c = CString::new(name).expect("no NUL in identifiers");
    // SAFETY: catalog lookup.
    let rel = unsafe { pg_sys::get_relname_relid(c.as_ptr(), nsp) };
    rel != pg_sys::InvalidOid || find_index(nsp, name).is_some()
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A free name like PostgreSQL's: `table_pkey`, `table_col1_col2_key`, `table_col_idx`.
fn choose_name(table: &str, columns: &[String], label: &str, nsp: pg_sys::Oid) -> String {
    let base = if label == "pkey" {
        table.to_string()
    } else {
        format!("{table}_{}", columns.join("_"))
    };
    for n in 0.. {
        let suffix = if n == 0 {
            format!("_{label}")
        } else {
            format!("_{label}{n}")
        };
        let name = format!("{}{suffix}", truncate(&base, 63 - suffix.len()));
        if !name_taken(nsp, &name) {
            return name;
        }
    }
    unreachable!()
}

/// Builds an index on memory table `relid` named `name` (or a chosen name) over
/// `columns`, inside the current transaction. Returns false if it was skipped (IF NOT
/// EXISTS and the name is taken).
/// What to build (see [`build`]).
struct IndexSpec<'a> {
    name: Option<String>,
    columns: &'a [String],
    unique: bool,
    primary: bool,
    /// The suffix of a chosen name: `pkey`, `key` (constraints) or `idx` (CREATE INDEX).
    label: &'a str,
    if_not_exists: bool,
    /// Exactly this kind of index (a restore, a rename): no promotion to primary key.
    exact: bool,
}

/// The name suffix PostgreSQL would give a constraint of this kind.
fn constraint_label(unique: bool, primary: bool) -> &'static str {
    if primary {
        "pkey"
    } else if unique {
        "key"
    } else {
        "idx"
    }
}

fn build(relid: pg_sys::Oid, spec: IndexSpec) -> bool {
    let IndexSpec {
        name,
        columns,
        unique,
        primary,
        label,
        if_not_exists,
        exact,
    } = spec;

    let e = engine();
    // The table as this transaction sees it: after its own TRUNCATE or ALTER, the
    // replacement (the index is then logged with it at commit).
    let Some(table) = xact::table(relid) else {
        crate::errors::missing_table(relid)
    };
    let nsp = namespace_of(relid);
    let table_name = types::relation_name(relid);
    let positions: Vec<u16> = columns
        .iter()
        .map(
            |c| match types::column_position(relid, c, table.def.columns.len()) {
                Some(p) => p,
                None => column_missing(c),
            },
        )
        .collect();
    for c in columns {
        check_key_collation(relid, c);
    }
    for &p in &positions {
        check_indexable(relid, p, table.def.columns[p as usize].ty);
    }
    let has_primary = table
        .index_defs()
        .iter()
        .any(|d| d.primary && !xact::index_drop_pending(relid.to_u32(), d.id));
    if primary && has_primary {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
            format!("multiple primary keys for table \"{table_name}\" are not allowed")
        );
    }
    let name = match name {
        Some(n) => {
            if name_taken(nsp, &n) {
                if if_not_exists {
                    ereport!(
                        NOTICE,
                        PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                        format!("relation \"{n}\" already exists, skipping")
                    );
                    return false;
                }
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                    format!("relation \"{n}\" already exists")
                );
            }
            n
        }
        None => choose_name(&table_name, columns, label, nsp),
    };
    // The first unique index built on an empty table without a primary key becomes
    // its primary key (DESIGN.md §3); the key columns must then be NOT NULL.
    let primary = primary
        || (!exact
            && unique
            && !has_primary
            && table.stats().rows == 0
            && positions
                .iter()
                .all(|&p| !table.def.columns[p as usize].nullable));
    let def = IndexDef {
        id: e.next_index_id(),
        name,
        columns: positions,
        unique,
        primary,
    };
    build_planned(relid, &table, def);
    true
}

/// Builds index `def` (named and checked already) over the rows of `table`, memory
/// table `relid` as this transaction sees it: CREATE INDEX, and ALTER TABLE ADD
/// PRIMARY KEY / UNIQUE when nothing else in the statement rewrites the rows.
pub fn build_planned(relid: pg_sys::Oid, table: &memfdw_engine::TableHandle, def: IndexDef) {
    let id = def.id;
    // Reported in pg_stat_progress_create_index while it builds (the build is one
    // engine call: rows to do are known, done ones are reported at the end).
    // SAFETY: this backend's progress slot; ended by the abort path on error.
    unsafe {
        let rows = table.stats().rows.max(0);
        pg_sys::pgstat_progress_start_command(
            pg_sys::ProgressCommandType::PROGRESS_COMMAND_CREATE_INDEX,
            relid,
        );
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_CREATEIDX_COMMAND as _,
            pg_sys::PROGRESS_CREATEIDX_COMMAND_CREATE as _,
        );
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_CREATEIDX_PHASE as _,
            pg_sys::PROGRESS_CREATEIDX_PHASE_BUILD as _,
        );
        pg_sys::pgstat_progress_update_param(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL as _, rows);
    }
    xact::with_txn(|t| t.create_index(table, def)).or_raise();
    // SAFETY: as above.
    unsafe {
        let rows = table.stats().rows.max(0);
        pg_sys::pgstat_progress_update_param(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE as _, rows);
        pg_sys::pgstat_progress_end_command();
    }
    xact::note_index_create(relid.to_u32(), id);
    crate::index_options::store(relid);
    // Cached plans of the table are replanned once this commits.
    // SAFETY: queues a relcache invalidation for the table.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

/// Handles CREATE INDEX on a memory table; returns false if the statement is not for
/// one (PostgreSQL runs it).
///
/// # Safety
/// `stmt` must be a valid, untransformed CREATE INDEX statement.
pub unsafe fn create_index(stmt: *mut pg_sys::IndexStmt) -> bool {
    // SAFETY: forwarded contract; catalog lookups.
    unsafe {
        if crate::handler::memory_table_of((*stmt).relation).is_none() {
            return false;
        }
        // Writers wait while the index is built; readers go on (as PostgreSQL does).
        // The lock also excludes another CREATE INDEX on the table: the `indexes`
        // option is rewritten from the table's indexes, so they must not include
        // another transaction's uncommitted one.
        // Ownership is checked before the lock is taken (PostgreSQL's callback), and
        // schema USAGE by the name lookup itself.
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::ShareRowExclusiveLock as _,
            0,
            Some(owns_relation),
            std::ptr::null_mut(),
        );
        // The index's name goes into the table's schema.
        check_schema_create(namespace_of(relid));
        let am = cstr((*stmt).accessMethod).unwrap_or_else(|| "btree".into());
        if am != "btree" {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("access method \"{am}\" is not supported on memory tables"),
                "Memory tables have ordered (btree) indexes only."
            );
        }
        if !(*stmt).whereClause.is_null() {
            unsupported("partial indexes");
        }
        // INCLUDE columns: every memory index reaches the whole row already; they
        // must exist all the same.
        if let Some(t) = crate::xact::table(relid) {
            for el in PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexIncludingParams).iter_ptr()
            {
                let name = cstr((*el).name).unwrap_or_default();
                if types::column_position(relid, &name, t.def.columns.len()).is_none() {
                    column_missing(&name);
                }
            }
        }
        if !(*stmt).options.is_null() {
            unsupported("storage parameters of indexes");
        }
        if (*stmt).deferrable {
            unsupported("deferrable unique constraints");
        }
        if (*stmt).nulls_not_distinct {
            unsupported("NULLS NOT DISTINCT indexes");
        }
        let mut columns = Vec::new();
        for el in PgList::<pg_sys::IndexElem>::from_pg((*stmt).indexParams).iter_ptr() {
            if !(*el).expr.is_null() || (*el).name.is_null() {
                unsupported("expression indexes");
            }
            if !(*el).collation.is_null() || !(*el).opclass.is_null() {
                unsupported("index collations and operator classes");
            }
            columns.push(cstr((*el).name).unwrap_or_default());
        }
        if (*stmt).concurrent {
            ereport!(
                NOTICE,
                PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                "memfdw builds indexes while holding a lock that makes writers of the table wait"
            );
        }
        build(
            relid,
            IndexSpec {
                name: cstr((*stmt).idxname),
                columns: &columns,
                unique: (*stmt).unique,
                primary: (*stmt).primary,
                label: "idx",
                if_not_exists: (*stmt).if_not_exists,
                exact: false,
            },
        );
        true
    }
}

/// Refuses a key column of a type memfdw has no key encoding for: 0A000 when
/// PostgreSQL could index it (it has a default btree operator class), else
/// PostgreSQL's own 42704.
pub fn check_indexable(relid: pg_sys::Oid, pos: u16, ty: memfdw_engine::ColumnType) {
    if memfdw_engine::keys::indexable(ty) {
        return;
    }
    // SAFETY: catalog lookups.
    let (typid, has_opclass) = unsafe {
        let t = pg_sys::get_atttype(relid, (pos + 1) as _);
        let base = pg_sys::getBaseType(t);
        (
            t,
            pg_sys::GetDefaultOpClass(base, pg_sys::BTREE_AM_OID) != pg_sys::InvalidOid,
        )
    };
    // SAFETY: returns a palloc'd C string.
    let tname = unsafe { CStr::from_ptr(pg_sys::format_type_be(typid)) }
        .to_string_lossy()
        .into_owned();
    if has_opclass {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!(
                "memory tables cannot index column \"{}\" of type {tname}",
                types::column_name(relid, pos)
            ),
            "Memory indexes support numeric, text, date/time, uuid, bool, bytea, oid, name, \"char\", money and macaddr columns (and domains over them)."
        );
    }
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("data type {tname} has no default operator class for access method \"btree\""),
        "You must specify an operator class for the index or define a default operator class for the data type."
    );
}

/// The definition of a key that ALTER TABLE ... ADD PRIMARY KEY / UNIQUE adds to memory
/// table `relid`, whose new definition is `def` and whose other indexes will be
/// `planned`: columns resolved, name checked or chosen, kind checked.
pub fn plan_key(
    relid: pg_sys::Oid,
    def: &memfdw_engine::TableDef,
    planned: &[IndexDef],
    freed: &[String],
    name: Option<String>,
    columns: &[String],
    primary: bool,
) -> IndexDef {
    let nsp = namespace_of(relid);
    let table_name = types::relation_name(relid);
    let positions: Vec<u16> = columns
        .iter()
        .map(
            |c| match types::column_position(relid, c, def.columns.len()) {
                Some(p) => p,
                None => column_missing(c),
            },
        )
        .collect();
    for c in columns {
        check_key_collation(relid, c);
    }
    for &p in &positions {
        check_indexable(relid, p, def.columns[p as usize].ty);
    }
    if primary && planned.iter().any(|d| d.primary) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
            format!("multiple primary keys for table \"{table_name}\" are not allowed")
        );
    }
    // Names of keys the same statement drops are free again.
    let taken = |n: &str| {
        (name_taken(nsp, n) && !freed.iter().any(|f| f == n)) || planned.iter().any(|d| d.name == n)
    };
    let name = match name {
        Some(n) => {
            if taken(&n) {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                    format!("relation \"{n}\" already exists")
                );
            }
            n
        }
        None => {
            let label = constraint_label(true, primary);
            let mut n = choose_name(&table_name, columns, label, nsp);
            let mut k = 1;
            while planned.iter().any(|d| d.name == n) {
                n = format!("{}{k}", choose_name(&table_name, columns, label, nsp));
                k += 1;
            }
            n
        }
    };
    IndexDef {
        id: engine().next_index_id(),
        name,
        columns: positions,
        unique: true,
        primary,
    }
}

/// Refuses (0A000) a key column whose collation is nondeterministic: keys compare by
/// their encoded bytes, so 'abc' and 'ABC' under a case-insensitive collation would be
/// two keys where PostgreSQL sees one.
pub fn check_key_collation(relid: pg_sys::Oid, column: &str) {
    let cname = CString::new(column).expect("no NUL in identifiers");
    // SAFETY: catalog lookups of an existing relation and column.
    unsafe {
        let attnum = pg_sys::get_attnum(relid, cname.as_ptr());
        let (mut typid, mut typmod, mut coll) = (pg_sys::InvalidOid, 0, pg_sys::InvalidOid);
        pg_sys::get_atttypetypmodcoll(relid, attnum, &mut typid, &mut typmod, &mut coll);
        if coll != pg_sys::InvalidOid && !pg_sys::get_collation_isdeterministic(coll) {
            let collname = cstr(pg_sys::get_collation_name(coll)).unwrap_or_default();
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "column \"{column}\" of a memory table key has the nondeterministic collation \"{collname}\""
                ),
                "Memory-table keys compare values byte by byte; use a deterministic collation for key columns."
            );
        }
    }
}

/// PostgreSQL's `RangeVarCallbackOwnsRelation` (42501 unless the current user owns
/// the relation, checked before it is locked), as a lookup callback.
///
/// # Safety
/// Called by `RangeVarGetRelidExtended` only, with its callback arguments.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn owns_relation(
    rv: *const pg_sys::RangeVar,
    relid: pg_sys::Oid,
    old_relid: pg_sys::Oid,
    arg: *mut std::ffi::c_void,
) {
    // SAFETY: forwarded contract.
    unsafe { pg_sys::RangeVarCallbackOwnsRelation(rv, relid, old_relid, arg) }
}

/// Raises PostgreSQL's 42501 unless the current user may create objects in `nsp`.
fn check_schema_create(nsp: pg_sys::Oid) {
    // SAFETY: catalog lookups; aclcheck_error raises.
    unsafe {
        let r = pg_sys::pg_namespace_aclcheck(nsp, pg_sys::GetUserId(), pg_sys::ACL_CREATE as _);
        if r != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                r,
                pg_sys::ObjectType::OBJECT_SCHEMA,
                pg_sys::get_namespace_name(nsp),
            );
        }
    }
}

/// The name of index `id` of memory table `table` (for messages).
/// Raises PostgreSQL's "must be owner of index" for index `id` of memory table `table`.
fn not_owner(table: u32, id: u32) {
    let cname = CString::new(index_name(table, id)).unwrap_or_default();
    // SAFETY: raises the error (a catalog-free report).
    unsafe {
        pg_sys::aclcheck_error(
            pg_sys::AclResult::ACLCHECK_NOT_OWNER,
            pg_sys::ObjectType::OBJECT_INDEX,
            cname.as_ptr(),
        )
    };
}

fn index_name(table: u32, id: u32) -> String {
    xact::table_view(pg_sys::Oid::from(table))
        .and_then(|t| t.index_defs().into_iter().find(|d| d.id == id))
        .map_or_else(|| format!("index {id}"), |d| d.name)
}

/// Handles ALTER INDEX [IF EXISTS] ... RENAME TO of a memory-table index; returns false
/// if the statement names none (PostgreSQL runs it). The index is built again under
/// the new name in the same transaction and the old one dropped at commit (the engine
/// logs indexes by name), so a rename costs an index build.
///
/// # Safety
/// `stmt` must be a valid RENAME statement of an index.
pub unsafe fn rename_index(stmt: *mut pg_sys::RenameStmt) -> bool {
    // SAFETY: forwarded contract; catalog lookups.
    unsafe {
        let rv = (*stmt).relation;
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        if !(*rv).schemaname.is_null() {
            names = pg_sys::lappend(names, pg_sys::makeString((*rv).schemaname).cast());
        }
        names = pg_sys::lappend(names, pg_sys::makeString((*rv).relname).cast());
        let Some((table, id)) = resolve(names) else {
            return false;
        };
        let relid = pg_sys::Oid::from(table);
        let me = pg_sys::GetUserId();
        if !pg_sys::pg_class_ownercheck(relid, me) {
            not_owner(table, id);
        }
        pg_sys::LockRelationOid(relid, pg_sys::ShareRowExclusiveLock as _);
        let Some(def) =
            xact::table(relid).and_then(|t| t.index_defs().into_iter().find(|d| d.id == id))
        else {
            return false;
        };
        let new = cstr((*stmt).newname).unwrap_or_default();
        if name_taken(namespace_of(relid), &new) {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                format!("relation \"{new}\" already exists")
            );
        }
        let columns: Vec<String> = def
            .columns
            .iter()
            .map(|&c| types::column_name(relid, c))
            .collect();
        xact::note_index_drop(table, id);
        build(
            relid,
            IndexSpec {
                name: Some(new),
                columns: &columns,
                unique: def.unique,
                primary: def.primary,
                label: constraint_label(def.unique, def.primary),
                if_not_exists: false,
                exact: true,
            },
        );
        true
    }
}

/// Resolves a (possibly qualified) index name to a memory-table index, following the
/// search path like PostgreSQL; None if it names no such index (or a relation of
/// PostgreSQL's comes first in the path).
///
/// # Safety
/// `names` must be a list of String nodes.
unsafe fn resolve(names: *mut pg_sys::List) -> Option<(u32, u32)> {
    // SAFETY: forwarded contract; catalog lookups.
    unsafe {
        let parts: Vec<String> = PgList::<pg_sys::Node>::from_pg(names)
            .iter_ptr()
            .map(|n| cstr(str_val(n)).unwrap_or_default())
            .collect();
        let (schema, name) = match parts.as_slice() {
            [n] => (None, n.clone()),
            [s, n] => (Some(s.clone()), n.clone()),
            [_, s, n] => (Some(s.clone()), n.clone()),
            _ => return None,
        };
        let cname = CString::new(name.clone()).ok()?;
        match schema {
            Some(s) => {
                let cs = CString::new(s).ok()?;
                // Checks USAGE on the schema, as PostgreSQL's name lookup does.
                let nsp = pg_sys::LookupExplicitNamespace(cs.as_ptr(), true);
                if nsp == pg_sys::InvalidOid {
                    return None;
                }
                find_index(nsp, &name)
            }
            None => {
                let path = PgList::<std::ffi::c_void>::from_pg(pg_sys::fetch_search_path(false));
                for i in 0..path.len() {
                    let nsp = pg_sys::list_nth_oid(path.as_ptr(), i as i32);
                    if pg_sys::get_relname_relid(cname.as_ptr(), nsp) != pg_sys::InvalidOid {
                        return None;
                    }
                    if let Some(found) = find_index(nsp, &name) {
                        return Some(found);
                    }
                }
                None
            }
        }
    }
}

/// Handles the memory-table indexes of a DROP INDEX: they are dropped when the
/// transaction commits. Returns the statement PostgreSQL should still run (with the
/// other names), or None if nothing is left for it.
///
/// # Safety
/// `stmt` must be a valid DROP INDEX statement.
pub unsafe fn drop_indexes(stmt: *mut pg_sys::DropStmt) -> Option<*mut pg_sys::DropStmt> {
    // SAFETY: forwarded contract.
    unsafe {
        let objects = PgList::<pg_sys::List>::from_pg((*stmt).objects);
        let mut rest: *mut pg_sys::List = std::ptr::null_mut();
        let mut ours = 0;
        for names in objects.iter_ptr() {
            match resolve(names) {
                Some((table, id)) => {
                    let relid = pg_sys::Oid::from(table);
                    // An index belongs to its table's owner; the schema's owner may drop
                    // it too (PostgreSQL's rule for DROP INDEX). Checked before the lock.
                    let me = pg_sys::GetUserId();
                    if !pg_sys::pg_class_ownercheck(relid, me)
                        && !pg_sys::pg_namespace_ownercheck(namespace_of(relid), me)
                    {
                        not_owner(table, id);
                    }
                    pg_sys::LockRelationOid(relid, pg_sys::AccessExclusiveLock as _);
                    // Not from an unloaded table: its spill file holds the index.
                    if let Some(t) = xact::table_view(relid) {
                        crate::unload::check_loaded(&t, relid);
                    }
                    xact::note_index_drop(table, id);
                    crate::index_options::store(relid);
                    pg_sys::CacheInvalidateRelcacheByRelid(relid);
                    ours += 1;
                }
                None => rest = pg_sys::lappend(rest, names as *mut std::ffi::c_void),
            }
        }
        if ours == 0 {
            return Some(stmt);
        }
        if rest.is_null() {
            return None;
        }
        let copy = pg_sys::copyObjectImpl(stmt as *const std::ffi::c_void) as *mut pg_sys::DropStmt;
        (*copy).objects = rest;
        Some(copy)
    }
}
