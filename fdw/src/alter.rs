//! ALTER FOREIGN TABLE on memory tables, and ALTER TABLE on a parent whose inheritors
//! or partitions include memory tables.
//!
//! PostgreSQL runs the statement on the catalog only (a foreign table has no storage
//! to rewrite); memfdw then brings each memory table the statement reached into step
//! with its new catalog definition ([`reconcile`]):
//!
//! * If the row shape changed (ADD/DROP COLUMN, ALTER COLUMN TYPE, SET/DROP NOT NULL)
//!   or keys were added, the transaction *redefines* the engine table (an empty
//!   replacement with the new definition and indexes) and copies every row into it,
//!   rewritten: kept columns copied, changed types converted with the assignment cast
//!   (or the `USING` expression), new columns filled from their default (volatile
//!   defaults once per row) and stored generated columns computed. The replacement is
//!   installed and logged with the commit, so a crash leaves the old table or the new
//!   one, and an abort or ROLLBACK TO SAVEPOINT leaves the old one.
//! * Indexes on a dropped column are dropped with it (as PostgreSQL does).
//! * ADD PRIMARY KEY / ADD UNIQUE, which PostgreSQL refuses on foreign tables, are taken
//!   out of the statement and built by memfdw (primary-key columns are made NOT NULL
//!   first); DROP CONSTRAINT of such a key drops the memory index.
//! * CHECK constraints added or validated are checked against the existing rows, and
//!   SET NOT NULL against NULLs, with PostgreSQL's errors.
//!
//! Between PostgreSQL's catalog change and the rewrite nothing reads the table: the
//! statement holds its lock, and the rewrite reads the engine rows with the old
//! definition captured before the statement ran.

use crate::errors::OrRaise;
use crate::handler::is_memory_table;
use crate::index_ddl::cstr;
use crate::types::{self, Codec, Packer};
use crate::xact;
use memfdw_engine::{ColumnType, IndexDef, RowBatch, ScanCursor, TableDef};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::ffi::CStr;

/// A key an ALTER statement adds.
struct KeyAdd {
    name: Option<String>,
    columns: Vec<String>,
    primary: bool,
}

/// One memory table the statement may change, as it was before the statement.
struct Before {
    relid: pg_sys::Oid,
    /// Attribute types (type, typmod, collation) by position; InvalidOid for dropped.
    types: Vec<(pg_sys::Oid, i32, pg_sys::Oid)>,
    /// OIDs of its validated CHECK constraints.
    checks: Vec<u32>,
}

/// What [`before`] learnt, for [`after`].
pub struct Pending {
    target: pg_sys::Oid,
    tables: Vec<Before>,
    add_keys: Vec<KeyAdd>,
    /// Memory indexes of the target dropped by DROP CONSTRAINT.
    drop_keys: Vec<u32>,
    /// ALTER COLUMN TYPE ... USING: attribute number and the transformed expression
    /// (over the table's columns before the statement).
    usings: Vec<(i16, *mut pg_sys::Node)>,
}

fn unsupported(what: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported on memory tables")
    );
}

/// The memory tables among `relid` and (if `inh`) its inheritors, which are locked
/// with `lock`.
fn memory_tables_of(relid: pg_sys::Oid, inh: bool, lock: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    let all = if inh {
        crate::ddl::inheritors(relid, lock)
    } else {
        vec![relid]
    };
    all.into_iter()
        .filter(|&oid| is_memory_table(oid))
        .collect()
}

/// Attribute types of `relid` from the catalog.
fn attribute_types(relid: pg_sys::Oid) -> Vec<(pg_sys::Oid, i32, pg_sys::Oid)> {
    // SAFETY: syscache lookups.
    unsafe {
        let natts = {
            let tup = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::RELOID as _,
                pg_sys::Datum::from(relid),
            );
            if tup.is_null() {
                return Vec::new();
            }
            let n = (*(pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_class)).relnatts;
            pg_sys::ReleaseSysCache(tup);
            n
        };
        (1..=natts)
            .map(|attno| {
                let (mut t, mut m, mut c) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
                let tup = pg_sys::SearchSysCache2(
                    pg_sys::SysCacheIdentifier::ATTNUM as _,
                    pg_sys::Datum::from(relid),
                    pg_sys::Datum::from(attno),
                );
                if !tup.is_null() {
                    let a = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_attribute;
                    if !(*a).attisdropped {
                        (t, m, c) = ((*a).atttypid, (*a).atttypmod, (*a).attcollation);
                    }
                    pg_sys::ReleaseSysCache(tup);
                }
                (t, m, c)
            })
            .collect()
    }
}

fn validated_checks(relid: pg_sys::Oid) -> Vec<u32> {
    let list = Spi::get_one::<String>(&format!(
        "SELECT string_agg(oid::text, ',') FROM pg_catalog.pg_constraint \
         WHERE conrelid = {} AND contype = 'c' AND convalidated",
        relid.to_u32()
    ))
    .ok()
    .flatten()
    .unwrap_or_default();
    list.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// Prepares an ALTER TABLE statement that reaches memory tables: refuses what memfdw
/// cannot do, takes the key constraints out (returned with a copy of the statement to
/// run instead, None if nothing else is left to run), and records the tables' shape.
///
/// # Safety
/// `stmt` must be a valid ALTER TABLE statement; `query` its source text.
pub unsafe fn before(
    stmt: *mut pg_sys::AlterTableStmt,
    query: *const std::ffi::c_char,
) -> Option<(Pending, Option<*mut pg_sys::AlterTableStmt>)> {
    // SAFETY: forwarded contract; parse nodes and catalog lookups.
    unsafe {
        if !matches!(
            (*stmt).objtype,
            pg_sys::ObjectType::OBJECT_TABLE | pg_sys::ObjectType::OBJECT_FOREIGN_TABLE
        ) || (*stmt).relation.is_null()
        {
            return None;
        }
        let missing_ok = if (*stmt).missing_ok {
            pg_sys::RVROption::RVR_MISSING_OK as _
        } else {
            0
        };
        // A first look without a lock: most ALTERs reach no memory table, and those
        // are left to PostgreSQL entirely.
        let peek = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK as _,
            None,
            std::ptr::null_mut(),
        );
        let inh = (*(*stmt).relation).inh;
        if peek == pg_sys::InvalidOid || memory_tables_of(peek, inh, pg_sys::NoLock as _).is_empty()
        {
            return None;
        }
        // Then as PostgreSQL does: ownership checked before the lock, the name resolved
        // again under it, and the inheritors locked too, before their definitions are
        // read (a concurrent ALTER must not change a type after it is captured). A
        // memory target is locked for a rewrite (ACCESS EXCLUSIVE) from the start.
        let lock = if is_memory_table(peek) {
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE
        } else {
            pg_sys::AlterTableGetLockLevel((*stmt).cmds)
        };
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            lock,
            missing_ok,
            Some(crate::index_ddl::owns_relation),
            std::ptr::null_mut(),
        );
        if relid == pg_sys::InvalidOid {
            return None;
        }
        let tables = memory_tables_of(relid, inh, lock);
        if tables.is_empty() {
            return None;
        }
        let direct = is_memory_table(relid);
        if direct {
            pg_sys::LockRelationOid(relid, pg_sys::AccessExclusiveLock as _);
        }
        let copy =
            pg_sys::copyObjectImpl(stmt as *const std::ffi::c_void) as *mut pg_sys::AlterTableStmt;
        let mut pending = Pending {
            target: relid,
            tables: Vec::new(),
            add_keys: Vec::new(),
            drop_keys: Vec::new(),
            usings: Vec::new(),
        };
        let mut kept: *mut pg_sys::List = std::ptr::null_mut();
        let mut changed = false;
        let mut not_null: Vec<String> = Vec::new();
        for cmd in PgList::<pg_sys::AlterTableCmd>::from_pg((*copy).cmds).iter_ptr() {
            let sub = (*cmd).subtype;
            if direct
                && sub == pg_sys::AlterTableType::AT_GenericOptions
                && crate::index_options::named_in((*cmd).def as *mut pg_sys::List)
            {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!(
                        "option \"{}\" of memory table \"{}\" is maintained by memfdw",
                        crate::index_options::OPTION,
                        types::relation_name(relid)
                    ),
                    "Use CREATE INDEX and DROP INDEX."
                );
            }
            if direct && sub == pg_sys::AlterTableType::AT_AddConstraint {
                let c = (*cmd).def as *mut pg_sys::Constraint;
                if let Some(k) = key_of(c, None) {
                    if k.primary {
                        not_null.extend(k.columns.iter().cloned());
                    }
                    pending.add_keys.push(k);
                    changed = true;
                    continue;
                }
            }
            if direct && sub == pg_sys::AlterTableType::AT_AddColumn {
                let col = (*cmd).def as *mut pg_sys::ColumnDef;
                let colname = cstr((*col).colname).unwrap_or_default();
                let mut cons: *mut pg_sys::List = std::ptr::null_mut();
                for c in PgList::<pg_sys::Constraint>::from_pg((*col).constraints).iter_ptr() {
                    match key_of(c, Some(&colname)) {
                        Some(k) => {
                            if k.primary {
                                (*col).is_not_null = true;
                            }
                            pending.add_keys.push(k);
                            changed = true;
                        }
                        None => cons = pg_sys::lappend(cons, c as *mut std::ffi::c_void),
                    }
                }
                (*col).constraints = cons;
            }
            if direct && sub == pg_sys::AlterTableType::AT_DropConstraint {
                let name = cstr((*cmd).name).unwrap_or_default();
                let t = xact::table(relid);
                let found = t.and_then(|t| {
                    t.index_defs().into_iter().find(|d| {
                        // Keys are constraints; a plain index is not.
                        d.unique
                            && d.name == name
                            && !xact::index_drop_pending(relid.to_u32(), d.id)
                    })
                });
                if let Some(d) = found {
                    pending.drop_keys.push(d.id);
                    changed = true;
                    continue;
                }
            }
            if direct && sub == pg_sys::AlterTableType::AT_AlterColumnType {
                let def = (*cmd).def as *mut pg_sys::ColumnDef;
                if !(*def).raw_default.is_null() {
                    // PostgreSQL recurses to the inheritors with the plain cast; memfdw
                    // would apply USING to the target only.
                    if inh && has_inheritors(relid) {
                        unsupported(
                            "ALTER COLUMN TYPE ... USING on a memory table with inheritors",
                        );
                    }
                    let e = transform_using(relid, cmd, def, query);
                    (*def).raw_default = std::ptr::null_mut();
                    changed = true;
                    let name = cstr((*cmd).name).unwrap_or_default();
                    let attno = attnum(relid, &name);
                    pending.usings.push((attno, e));
                }
            }
            kept = pg_sys::lappend(kept, cmd as *mut std::ffi::c_void);
        }
        // Primary-key columns become NOT NULL, as PostgreSQL's ADD PRIMARY KEY makes
        // them (checked against the rows by the rewrite).
        for name in not_null {
            let cmd = pg_sys::palloc0(std::mem::size_of::<pg_sys::AlterTableCmd>())
                as *mut pg_sys::AlterTableCmd;
            (*cmd).type_ = pg_sys::NodeTag::T_AlterTableCmd;
            (*cmd).subtype = pg_sys::AlterTableType::AT_SetNotNull;
            let c = std::ffi::CString::new(name).expect("no NUL in identifiers");
            (*cmd).name = pg_sys::pstrdup(c.as_ptr());
            kept = pg_sys::lappend(kept, cmd as *mut std::ffi::c_void);
            changed = true;
        }
        for oid in tables {
            pending.tables.push(Before {
                relid: oid,
                types: attribute_types(oid),
                checks: validated_checks(oid),
            });
        }
        (*copy).cmds = kept;
        let run = if kept.is_null() {
            None
        } else if changed {
            Some(copy)
        } else {
            Some(stmt)
        };
        Some((pending, run))
    }
}

/// The PRIMARY KEY or UNIQUE constraint `c` (of column `column` when given), None for
/// other constraints.
///
/// # Safety
/// `c` must be a valid constraint node.
unsafe fn key_of(c: *mut pg_sys::Constraint, column: Option<&str>) -> Option<KeyAdd> {
    // SAFETY: forwarded contract.
    unsafe {
        let primary = match (*c).contype {
            pg_sys::ConstrType::CONSTR_PRIMARY => true,
            pg_sys::ConstrType::CONSTR_UNIQUE => false,
            _ => return None,
        };
        if !(*c).indexname.is_null() {
            unsupported("ADD CONSTRAINT ... USING INDEX");
        }
        if (*c).deferrable {
            unsupported("a deferrable unique constraint");
        }
        if (*c).nulls_not_distinct {
            unsupported("a NULLS NOT DISTINCT constraint");
        }
        if !(*c).options.is_null() {
            unsupported("a storage parameter of a key");
        }
        let columns = match column {
            Some(col) => vec![col.to_owned()],
            None => PgList::<pg_sys::Node>::from_pg((*c).keys)
                .iter_ptr()
                .map(|n| cstr((*(n as *mut pg_sys::String)).sval).unwrap_or_default())
                .collect(),
        };
        Some(KeyAdd {
            name: cstr((*c).conname),
            columns,
            primary,
        })
    }
}

/// Does any relation inherit from `relid` (or is a partition of it)?
fn has_inheritors(relid: pg_sys::Oid) -> bool {
    crate::ddl::inheritors(relid, pg_sys::NoLock as _).len() > 1
}

fn attnum(relid: pg_sys::Oid, name: &str) -> i16 {
    let c = std::ffi::CString::new(name).expect("no NUL in identifiers");
    // SAFETY: catalog lookup.
    let n = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    if n <= 0 {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                types::relation_name(relid)
            )
        );
    }
    n
}

/// Transforms the USING expression of ALTER COLUMN TYPE over the table as it is before
/// the statement, coerced to the new type (PostgreSQL's ATPrepAlterColumnType).
///
/// # Safety
/// Valid parse nodes of an ALTER TABLE statement on `relid`.
unsafe fn transform_using(
    relid: pg_sys::Oid,
    cmd: *mut pg_sys::AlterTableCmd,
    def: *mut pg_sys::ColumnDef,
    query: *const std::ffi::c_char,
) -> *mut pg_sys::Node {
    // SAFETY: forwarded contract; the parser's own entry points.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as _);
        let (mut typid, mut typmod) = (pg_sys::InvalidOid, -1);
        pg_sys::typenameTypeIdAndMod(
            std::ptr::null_mut(),
            (*def).typeName,
            &mut typid,
            &mut typmod,
        );
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        (*pstate).p_sourcetext = query;
        let ns = pg_sys::addRangeTableEntryForRelation(
            pstate,
            rel,
            pg_sys::AccessShareLock as _,
            std::ptr::null_mut(),
            false,
            true,
        );
        pg_sys::addNSItemToQuery(pstate, ns, false, true, true);
        let e = pg_sys::transformExpr(
            pstate,
            (*def).raw_default,
            pg_sys::ParseExprKind::EXPR_KIND_ALTER_COL_TRANSFORM,
        );
        let from = pg_sys::exprType(e);
        let out = pg_sys::coerce_to_target_type(
            pstate,
            e,
            from,
            typid,
            typmod,
            pg_sys::CoercionContext::COERCION_ASSIGNMENT,
            pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
            -1,
        );
        let name = cstr((*cmd).name).unwrap_or_default();
        if out.is_null() {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "result of USING clause for column \"{name}\" cannot be cast automatically to type {}",
                    type_name(typid, typmod)
                ),
                "You might need to add an explicit cast."
            );
        }
        pg_sys::assign_expr_collations(pstate, out);
        pg_sys::relation_close(rel, pg_sys::NoLock as _);
        out
    }
}

fn type_name(typid: pg_sys::Oid, typmod: i32) -> String {
    // SAFETY: returns a palloc'd C string.
    unsafe { CStr::from_ptr(pg_sys::format_type_with_typemod(typid, typmod)) }
        .to_string_lossy()
        .into_owned()
}

/// After PostgreSQL ran the statement (or instead of it, when only keys changed):
/// brings every memory table it reached into step with the catalog.
///
/// # Safety
/// Called once per statement prepared by [`before`], inside its transaction.
pub unsafe fn after(p: Pending) {
    // SAFETY: catalog changes of the statement become visible to the lookups below.
    unsafe { pg_sys::CommandCounterIncrement() };
    for b in &p.tables {
        let target = b.relid == p.target;
        reconcile(b, target.then_some(&p));
        check_new_constraints(b);
    }
}

thread_local! {
    /// Memory tables whose columns the running utility statement dropped.
    static DROPPED_COLUMNS: std::cell::RefCell<Vec<pg_sys::Oid>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Forgets noted column drops (their statement failed: the transaction or
/// subtransaction aborts).
pub fn forget_column_drops() {
    DROPPED_COLUMNS.with(|d| {
        if let Ok(mut d) = d.try_borrow_mut() {
            d.clear();
        }
    });
}

/// A column of memory table `relid` is being dropped (object_access_hook).
pub fn note_column_drop(relid: pg_sys::Oid) {
    DROPPED_COLUMNS.with(|d| {
        let mut d = d.borrow_mut();
        if !d.contains(&relid) {
            d.push(relid);
        }
    });
}

/// After a utility statement: rewrites the memory tables whose columns it dropped
/// without an ALTER TABLE (DROP TYPE ... CASCADE and the like; an ALTER TABLE's own
/// rewrite has run already, so this finds nothing to do for it).
pub fn after_column_drops() {
    let tables = DROPPED_COLUMNS.with(|d| std::mem::take(&mut *d.borrow_mut()));
    // SAFETY: reading transaction state.
    if tables.is_empty() || !unsafe { pg_sys::IsTransactionState() } {
        return;
    }
    // SAFETY: the statement's catalog changes become visible.
    unsafe { pg_sys::CommandCounterIncrement() };
    for relid in tables {
        // SAFETY: syscache lookup.
        if unsafe { pg_sys::get_rel_name(relid) }.is_null() || !is_memory_table(relid) {
            continue; // dropped with its table
        }
        // Only columns went: the others keep their types.
        let b = Before {
            relid,
            types: attribute_types(relid),
            checks: validated_checks(relid),
        };
        reconcile(&b, None);
    }
}

/// How the rewrite fills one column of the new row.
enum Fill {
    /// Kept: the old value.
    Copy(usize),
    /// Changed type: the expression over the old row.
    Convert(*mut pg_sys::ExprState),
    /// Added: its default (None: NULL), computed over the new row.
    Default(Option<*mut pg_sys::ExprState>),
    /// Added stored generated column, computed over the new row after the defaults.
    Generated(*mut pg_sys::ExprState),
    Null,
}

/// Does `a` store rows the same way as `b` (names aside)?
fn same_shape(a: &TableDef, b: &TableDef) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.ty == y.ty && x.nullable == y.nullable)
}

fn reconcile(b: &Before, keys: Option<&Pending>) {
    let relid = b.relid;
    let Some(old) = xact::table(relid) else {
        return;
    };
    // SAFETY: the statement locked the table (or it did not change it: then nothing
    // below writes); the relation stays open until the end of the function.
    let rel = unsafe { pg_sys::relation_open(relid, pg_sys::AccessShareLock as _) };
    // SAFETY: an open relation.
    let new_def = unsafe { types::table_def(rel) }.or_raise();
    let old_indexes: Vec<IndexDef> = old
        .index_defs()
        .into_iter()
        .filter(|d| !xact::index_drop_pending(relid.to_u32(), d.id))
        .collect();
    let (add, drop, usings): (&[KeyAdd], &[u32], &[(i16, *mut pg_sys::Node)]) = match keys {
        Some(p) => (&p.add_keys, &p.drop_keys, &p.usings),
        None => (&[], &[], &[]),
    };
    let mut indexes: Vec<IndexDef> = old_indexes
        .iter()
        .filter(|d| !drop.contains(&d.id))
        .filter(|d| {
            d.columns.iter().all(|&c| {
                new_def
                    .columns
                    .get(c as usize)
                    .is_some_and(|col| col.ty != ColumnType::Dropped)
            })
        })
        .cloned()
        .collect();
    let freed: Vec<String> = old_indexes
        .iter()
        .filter(|d| drop.contains(&d.id))
        .map(|d| d.name.clone())
        .collect();
    for k in add {
        indexes.push(crate::index_ddl::plan_key(
            relid,
            &new_def,
            &indexes,
            &freed,
            k.name.clone(),
            &k.columns,
            k.primary,
        ));
    }
    // A type change the engine stores the same way (numeric(p,s), a domain, varchar
    // length, timestamp precision, ...) still converts and checks every value.
    // SAFETY: an open relation.
    let atts = unsafe { types::attributes((*rel).rd_att) };
    let retyped = b.types.iter().zip(atts).any(|(&(t, m, c), a)| {
        t != pg_sys::InvalidOid
            && !a.attisdropped
            && (t != a.atttypid || m != a.atttypmod || c != a.attcollation)
    });
    let reshaped = !same_shape(&old.def, &new_def) || !usings.is_empty() || retyped;
    // In place only when no key goes away in this transaction (a dropped key leaves
    // at commit: its name and its checks would still be there) and the table was not
    // loaded or unloaded in it (index DDL must wait for the next transaction then).
    let keys_dropped = indexes.len() != old_indexes.len() + add.len()
        || old
            .index_defs()
            .iter()
            .any(|d| xact::index_drop_pending(relid.to_u32(), d.id));
    if !reshaped && !add.is_empty() && !keys_dropped && !xact::resided(relid) {
        // Only keys added: no row changes, so the new keys are built over the rows in
        // place (sorted, in parallel) instead of rewriting every row into a
        // replacement.
        // SAFETY: an open relation (errors then name the table and constraint).
        unsafe { crate::error_fields::writing(rel) };
        for d in indexes
            .iter()
            .filter(|i| !old_indexes.iter().any(|o| o.id == i.id))
        {
            crate::index_ddl::build_planned(relid, &old, d.clone());
        }
        // SAFETY: opened above.
        unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as _) };
        return;
    }
    let rewrite = reshaped || !add.is_empty();
    if !rewrite {
        if indexes.len() != old_indexes.len() {
            // Only keys dropped: no rows to rewrite.
            for d in &old_indexes {
                if !indexes.iter().any(|i| i.id == d.id) {
                    xact::note_index_drop(relid.to_u32(), d.id);
                }
            }
            crate::index_options::store(relid);
            // SAFETY: queues a relcache invalidation.
            unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
        }
        // SAFETY: opened above.
        unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as _) };
        return;
    }
    for d in &indexes {
        for &c in &d.columns {
            crate::index_ddl::check_indexable(relid, c, new_def.columns[c as usize].ty);
            crate::index_ddl::check_key_collation(relid, &types::column_name(relid, c));
        }
    }
    // The types captured before the statement must be the ones the engine stores (the
    // statement's lock keeps other DDL out; this guards the rewrite's decoding).
    let captured_stale = b.types.len() != old.def.columns.len()
        || b.types.iter().zip(&old.def.columns).any(|(&(t, m, _), c)| {
            t != pg_sys::InvalidOid && types::column_type(t, m) != Some(c.ty)
        });
    if captured_stale {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!(
                "memory table \"{}\" changed while ALTER was starting",
                types::relation_name(relid)
            ),
            "Retry the statement."
        );
    }
    // SAFETY: a relation the statement holds AccessExclusiveLock on (taking it again
    // is a no-op).
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessExclusiveLock as _) };
    // SAFETY: an open relation.
    unsafe { crate::error_fields::writing(rel) };
    // SAFETY: executor and expression machinery over an open relation.
    unsafe { rewrite_rows(rel, b, &old, new_def, &indexes, usings) };
    // SAFETY: opened above.
    unsafe { pg_sys::relation_close(rel, pg_sys::NoLock as _) };
}

/// Redefines memory table `rel` and copies its rows into the replacement, rewritten.
///
/// # Safety
/// `rel` must be open and locked AccessExclusive by this transaction.
unsafe fn rewrite_rows(
    rel: pg_sys::Relation,
    b: &Before,
    old: &memfdw_engine::TableHandle,
    new_def: TableDef,
    indexes: &[IndexDef],
    usings: &[(i16, *mut pg_sys::Node)],
) {
    // SAFETY: forwarded contract; all allocations in the statement's memory contexts.
    unsafe {
        let relid = (*rel).rd_id;
        let new_td = (*rel).rd_att;
        let new_atts = types::attributes(new_td);
        // The old row descriptor, from the types captured before the statement.
        let n_old = b.types.len();
        let old_td = pg_sys::CreateTemplateTupleDesc(n_old as _);
        for (i, &(t, m, c)) in b.types.iter().enumerate() {
            let (t, m) = if t == pg_sys::InvalidOid {
                (pg_sys::INT4OID, -1)
            } else {
                (t, m)
            };
            pg_sys::TupleDescInitEntry(old_td, (i + 1) as _, std::ptr::null(), t, m, 0);
            pg_sys::TupleDescInitEntryCollation(old_td, (i + 1) as _, c);
        }
        let old_codecs: Vec<Codec> = old.def.columns.iter().map(|c| Codec::of(c.ty)).collect();
        let estate = pg_sys::CreateExecutorState();
        let econtext = pg_sys::MakePerTupleExprContext(estate);
        let prepare =
            |e: *mut pg_sys::Node| pg_sys::ExecPrepareExpr(e as *mut pg_sys::Expr, estate);
        let mut fills = Vec::with_capacity(new_def.columns.len());
        for (i, col) in new_def.columns.iter().enumerate() {
            let att = &new_atts[i];
            let attno = (i + 1) as i16;
            let fill = if col.ty == ColumnType::Dropped {
                Fill::Null
            } else if let Some(&(_, e)) = usings.iter().find(|(a, _)| *a == attno) {
                Fill::Convert(prepare(e))
            } else if i < n_old && b.types[i].0 != pg_sys::InvalidOid {
                let (t, m, c) = b.types[i];
                if t == att.atttypid && m == att.atttypmod && old.def.columns[i].ty == col.ty {
                    Fill::Copy(i)
                } else {
                    let var = pg_sys::makeVar(1, attno, t, m, c, 0) as *mut pg_sys::Node;
                    let e = pg_sys::coerce_to_target_type(
                        std::ptr::null_mut(),
                        var,
                        t,
                        att.atttypid,
                        att.atttypmod,
                        pg_sys::CoercionContext::COERCION_ASSIGNMENT,
                        pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
                        -1,
                    );
                    if e.is_null() {
                        ereport!(
                            ERROR,
                            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                            format!(
                                "column \"{}\" cannot be cast automatically to type {}",
                                types::column_name(relid, i as u16),
                                type_name(att.atttypid, att.atttypmod)
                            ),
                            format!(
                                "You might need to specify \"USING {}::{}\".",
                                types::quote_ident(&types::column_name(relid, i as u16)),
                                type_name(att.atttypid, att.atttypmod)
                            )
                        );
                    }
                    Fill::Convert(prepare(e))
                }
            } else {
                let mut d = pg_sys::build_column_default(rel, attno as _);
                if d.is_null() && pg_sys::DomainHasConstraints(att.atttypid) {
                    // A domain's constraints apply to the NULL a new column gets.
                    let null = pg_sys::makeNullConst(att.atttypid, att.atttypmod, att.attcollation);
                    d = pg_sys::coerce_to_target_type(
                        std::ptr::null_mut(),
                        null as *mut pg_sys::Node,
                        att.atttypid,
                        att.atttypid,
                        att.atttypmod,
                        pg_sys::CoercionContext::COERCION_ASSIGNMENT,
                        pg_sys::CoercionForm::COERCE_IMPLICIT_CAST,
                        -1,
                    );
                }
                if att.attgenerated != 0 && !d.is_null() {
                    Fill::Generated(prepare(d))
                } else {
                    Fill::Default((!d.is_null()).then(|| prepare(d)))
                }
            };
            fills.push(fill);
        }
        // Every row the table has (committed, or written by this transaction), read
        // before the replacement takes its place.
        let stmt = xact::current_stmt(true);
        // The replacement first; then every row the table has (committed, or written
        // by this transaction), read from the old table in batches and copied over,
        // rewritten (only one batch of old rows in private memory at a time).
        xact::with_txn(|t| t.redefine(old, new_def.clone(), indexes, stmt.sub)).or_raise();
        let Some(new) = xact::table(relid) else {
            crate::errors::missing_table(relid)
        };
        let mut packer = Packer::new(&new_def);
        let old_slot = pg_sys::MakeSingleTupleTableSlot(old_td, &pg_sys::TTSOpsVirtual);
        let new_slot = pg_sys::MakeSingleTupleTableSlot(new_td, &pg_sys::TTSOpsVirtual);
        let n_new = new_def.columns.len();
        let eval = |st: *mut pg_sys::ExprState, scan: *mut pg_sys::TupleTableSlot| {
            let mut isnull = false;
            (*econtext).ecxt_scantuple = scan;
            let f = (*st).evalfunc.expect("an initialised expression");
            let d = f(st, econtext, &mut isnull);
            (d, isnull)
        };
        xact::ensure_holder_lock();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        loop {
            let row: Vec<u8> = match batch.next() {
                Some(r) => r.data.to_vec(),
                None if cursor.done() => break,
                None => {
                    xact::with_txn(|t| t.scan_newest(old, &mut cursor, stmt.cid, &mut batch, 1024))
                        .or_raise();
                    continue;
                }
            };
            let row = &row;
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            let saved = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
            types::unpack(&old_codecs, None, &old.layout, row, old_slot);
            types::store_virtual(old_slot);
            types::clear_slot(new_slot);
            let values = std::slice::from_raw_parts_mut((*new_slot).tts_values, n_new);
            let nulls = std::slice::from_raw_parts_mut((*new_slot).tts_isnull, n_new);
            for (i, f) in fills.iter().enumerate() {
                (values[i], nulls[i]) = match f {
                    Fill::Copy(j) => (
                        *(*old_slot).tts_values.add(*j),
                        *(*old_slot).tts_isnull.add(*j),
                    ),
                    Fill::Convert(e) => eval(*e, old_slot),
                    _ => (pg_sys::Datum::from(0usize), true),
                };
            }
            types::store_virtual(new_slot);
            for (i, f) in fills.iter().enumerate() {
                if let Fill::Default(Some(e)) = f {
                    (values[i], nulls[i]) = eval(*e, new_slot);
                }
            }
            for (i, f) in fills.iter().enumerate() {
                if let Fill::Generated(e) = f {
                    (values[i], nulls[i]) = eval(*e, new_slot);
                }
            }
            for (i, col) in new_def.columns.iter().enumerate() {
                if nulls[i] && !col.nullable {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
                        format!(
                            "column \"{}\" of relation \"{}\" contains null values",
                            types::column_name(relid, i as u16),
                            types::relation_name(relid)
                        )
                    );
                }
            }
            packer.pack(&new.layout, new_slot).or_raise();
            xact::with_txn(|t| t.insert(&new, &packer.out, stmt)).or_raise();
            pg_sys::MemoryContextSwitchTo(saved);
        }
        pg_sys::ExecDropSingleTupleTableSlot(old_slot);
        pg_sys::ExecDropSingleTupleTableSlot(new_slot);
        pg_sys::FreeExecutorState(estate);
        crate::index_options::store_defs(relid, indexes);
        // Cached plans of the table are replanned once this commits.
        pg_sys::CacheInvalidateRelcacheByRelid(relid);
    }
}

/// Checks the rows against CHECK constraints the statement added or validated
/// (PostgreSQL assumes a foreign table's constraints; memfdw owns the rows).
fn check_new_constraints(b: &Before) {
    let relid = b.relid;
    let now = validated_checks(relid);
    let fresh: Vec<u32> = now.into_iter().filter(|c| !b.checks.contains(c)).collect();
    if fresh.is_empty() {
        return;
    }
    // SAFETY: catalog lookups.
    let (nsp, rel) = unsafe {
        let n = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        (cstr(n).unwrap_or_default(), types::relation_name(relid))
    };
    let qualified = format!("{}.{}", types::quote_ident(&nsp), types::quote_ident(&rel));
    for c in fresh {
        let name = Spi::get_one::<String>(&format!(
            "SELECT conname::text FROM pg_catalog.pg_constraint WHERE oid = {c}"
        ))
        .ok()
        .flatten()
        .unwrap_or_default();
        let expr = Spi::get_one::<String>(&format!(
            "SELECT pg_catalog.pg_get_expr(conbin, conrelid) FROM pg_catalog.pg_constraint WHERE oid = {c}"
        ))
        .ok()
        .flatten();
        let Some(expr) = expr else { continue };
        let violated = Spi::get_one::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM ONLY {qualified} WHERE NOT ({expr}))"
        ))
        .ok()
        .flatten()
        .unwrap_or(false);
        if violated {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
                format!(
                    "check constraint \"{name}\" of relation \"{rel}\" is violated by some row"
                )
            );
        }
    }
}
