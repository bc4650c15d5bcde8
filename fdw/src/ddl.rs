//! DDL on memory tables through PostgreSQL's hooks.
//!
//! * `CREATE FOREIGN TABLE ... SERVER <memfdw server>` creates the engine table after
//!   the standard command has run (the relation's server is recorded only at its end);
//!   unsupported column types are refused with 0A000, leaving no table.
//! * `ALTER FOREIGN TABLE` (and ALTER TABLE on a parent reaching memory tables) runs on
//!   the catalog, then `alter` rewrites the memory tables it changed.
//! * Drops are seen through `object_access_hook` (OAT_DROP), which also covers drops
//!   by CASCADE; the engine table goes away when the transaction commits.

use crate::errors::OrRaise;
use crate::handler::{is_memory_table, is_ours};
use crate::shmem::{engine, preloaded};
use crate::{index_ddl, types, xact};
use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;

/// # Safety
/// Called once per process from `_PG_init`.
pub unsafe fn install_hooks() {
    // SAFETY: chaining hooks at load time.
    unsafe {
        PREV_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_OBJECT_ACCESS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
    }
}

#[allow(clippy::too_many_arguments)]
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL's statement structures; hooks chained as required.
    unsafe {
        let mut pstmt = pstmt;
        let stmt = (*pstmt).utilityStmt;
        let mut keys = Vec::new();
        let mut dropped_db = pg_sys::InvalidOid;
        let mut created_db: Option<(String, String)> = None;
        // A relation whose column is renamed: the `indexes` options of it and of its
        // inheritors (which the rename reaches) name columns.
        let mut renamed_in: Option<pg_sys::Oid> = None;
        // ALTER TABLE reaching memory tables: finished after the standard command.
        let mut altered: Option<crate::alter::Pending> = None;
        let mut skip_standard = false;
        if preloaded() {
            if let Some((rv, if_not_exists)) = created_relation(stmt) {
                if !index_ddl::refuse_index_name(rv, if_not_exists) {
                    // IF NOT EXISTS: skipped, with PostgreSQL's notice.
                    return;
                }
            }
            match (*stmt).type_ {
                pg_sys::NodeTag::T_AlterTableStmt => {
                    if let Some((p, run)) =
                        crate::alter::before(stmt as *mut pg_sys::AlterTableStmt, query)
                    {
                        match run {
                            None => skip_standard = true,
                            Some(s) if s != stmt as *mut pg_sys::AlterTableStmt => {
                                pstmt = with_statement(pstmt, s as *mut pg_sys::Node);
                            }
                            Some(_) => {}
                        }
                        altered = Some(p);
                    }
                }
                pg_sys::NodeTag::T_IndexStmt
                    if index_ddl::create_index(stmt as *mut pg_sys::IndexStmt) =>
                {
                    return;
                }
                pg_sys::NodeTag::T_DropStmt
                    if (*(stmt as *mut pg_sys::DropStmt)).removeType
                        == pg_sys::ObjectType::OBJECT_INDEX =>
                {
                    match index_ddl::drop_indexes(stmt as *mut pg_sys::DropStmt) {
                        None => return,
                        Some(s) if s != stmt as *mut pg_sys::DropStmt => {
                            pstmt = with_statement(pstmt, s as *mut pg_sys::Node);
                        }
                        Some(_) => {}
                    }
                }
                pg_sys::NodeTag::T_LockStmt => {
                    match crate::lock_table::lock_tables(stmt as *mut pg_sys::LockStmt, context) {
                        None => return,
                        Some(s) if s != stmt as *mut pg_sys::LockStmt => {
                            pstmt = with_statement(pstmt, s as *mut pg_sys::Node);
                        }
                        Some(_) => {}
                    }
                }
                pg_sys::NodeTag::T_DropdbStmt => {
                    let name = (*(stmt as *mut pg_sys::DropdbStmt)).dbname;
                    dropped_db = pg_sys::get_database_oid(name, true);
                    if dropped_db != pg_sys::InvalidOid && preloaded() {
                        // Wait for recovery (or fail) before the database is gone, not
                        // after: its memory tables must be dropped with it.
                        engine();
                    }
                }
                pg_sys::NodeTag::T_RenameStmt
                    if (*(stmt as *mut pg_sys::RenameStmt)).renameType
                        == pg_sys::ObjectType::OBJECT_INDEX
                        && index_ddl::rename_index(stmt as *mut pg_sys::RenameStmt) =>
                {
                    return;
                }
                pg_sys::NodeTag::T_RenameStmt
                    if (*(stmt as *mut pg_sys::RenameStmt)).renameType
                        == pg_sys::ObjectType::OBJECT_COLUMN
                        && !(*(stmt as *mut pg_sys::RenameStmt)).relation.is_null() =>
                {
                    let relid = pg_sys::RangeVarGetRelidExtended(
                        (*(stmt as *mut pg_sys::RenameStmt)).relation,
                        pg_sys::NoLock as _,
                        pg_sys::RVROption::RVR_MISSING_OK as _,
                        None,
                        std::ptr::null_mut(),
                    );
                    renamed_in = (relid != pg_sys::InvalidOid).then_some(relid);
                }
                pg_sys::NodeTag::T_CreatedbStmt => {
                    created_db = Some(created_database(stmt as *mut pg_sys::CreatedbStmt));
                }
                pg_sys::NodeTag::T_CreateForeignTableStmt => {
                    let cs = stmt as *mut pg_sys::CreateForeignTableStmt;
                    let server = pg_sys::GetForeignServerByName((*cs).servername, true);
                    if !server.is_null()
                        && is_ours(pg_sys::GetFdwRoutineByServerId((*server).serverid))
                    {
                        // PostgreSQL refuses keys on foreign tables: run a copy without them.
                        let copy = pg_sys::copyObjectImpl(cs as *const std::ffi::c_void)
                            as *mut pg_sys::CreateForeignTableStmt;
                        keys = index_ddl::take_keys(copy);
                        if !keys.is_empty() {
                            pstmt = with_statement(pstmt, copy as *mut pg_sys::Node);
                        }
                    }
                }
                _ => {}
            }
        }
        let created = (*stmt).type_ == pg_sys::NodeTag::T_CreateForeignTableStmt;
        // Did the relation exist already (CREATE ... IF NOT EXISTS then does nothing)?
        // Looked up in the namespace it would be created in.
        let existed = created && {
            let rv = (*(stmt as *mut pg_sys::CreateForeignTableStmt))
                .base
                .relation;
            let nsp = pg_sys::RangeVarGetCreationNamespace(rv);
            pg_sys::get_relname_relid((*rv).relname, nsp) != pg_sys::InvalidOid
        };
        match PREV_UTILITY {
            _ if skip_standard => {}
            Some(prev) => pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                prev(pstmt, query, read_only_tree, context, params, env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query,
                read_only_tree,
                context,
                params,
                env,
                dest,
                qc,
            ),
        }
        if let Some(p) = altered {
            crate::alter::after(p);
        }
        if preloaded() {
            crate::alter::after_column_drops();
        }
        if dropped_db != pg_sys::InvalidOid && preloaded() {
            // DROP DATABASE removed the database without dropping its objects one by
            // one (no OAT_DROP for them): its memory tables go now. It cannot run in a
            // transaction block, so it has committed.
            drop_database_tables(dropped_db);
        }
        if let Some((name, template)) = created_db {
            // The new database has the template's foreign tables, with the same
            // relation OIDs: it gets its own copies of their engine tables.
            copy_template_tables(&name, &template);
        }
        if let Some(relid) = renamed_in.filter(|_| preloaded()) {
            for oid in inheritors(relid, pg_sys::NoLock as _) {
                if is_memory_table(oid) {
                    crate::index_options::store(oid);
                }
            }
        }
        if created && !existed {
            let cs = stmt as *mut pg_sys::CreateForeignTableStmt;
            if let Some(relid) = after_create_foreign_table(cs) {
                index_ddl::create_keys(relid, keys);
                // A restored table (pg_dump writes its indexes as an option): build them.
                if let Some(v) = crate::index_options::from_options((*cs).options) {
                    index_ddl::create_from_option(relid, &v);
                }
                crate::index_options::store(relid);
            }
        }
    }
}

/// The relation a CREATE statement makes (table, foreign table, view, sequence, table
/// AS / materialized view), with its IF NOT EXISTS, if `stmt` is one.
///
/// # Safety
/// `stmt` must be a valid statement node.
unsafe fn created_relation(stmt: *mut pg_sys::Node) -> Option<(*mut pg_sys::RangeVar, bool)> {
    // SAFETY: forwarded contract.
    unsafe {
        let (rv, ine) = match (*stmt).type_ {
            pg_sys::NodeTag::T_CreateStmt | pg_sys::NodeTag::T_CreateForeignTableStmt => {
                let c = stmt as *mut pg_sys::CreateStmt;
                ((*c).relation, (*c).if_not_exists)
            }
            pg_sys::NodeTag::T_ViewStmt => ((*(stmt as *mut pg_sys::ViewStmt)).view, false),
            pg_sys::NodeTag::T_CreateSeqStmt => {
                let c = stmt as *mut pg_sys::CreateSeqStmt;
                ((*c).sequence, (*c).if_not_exists)
            }
            pg_sys::NodeTag::T_CreateTableAsStmt => {
                let c = stmt as *mut pg_sys::CreateTableAsStmt;
                if (*c).into.is_null() {
                    return None;
                }
                ((*(*c).into).rel, (*c).if_not_exists)
            }
            _ => return None,
        };
        (!rv.is_null()).then_some((rv, ine))
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's pg_inherits.h (not in pgrx's bindings): `relid` and every relation
    /// that inherits from it, recursively, as an OID list. Call it through
    /// `pg_guard_ffi_boundary`.
    fn find_all_inheritors(
        relid: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        numparents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// `relid` and every relation that inherits from it (or is a partition of it),
/// recursively, each locked with `lock` (NoLock: none).
pub(crate) fn inheritors(relid: pg_sys::Oid, lock: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    // SAFETY: a catalog scan through PostgreSQL's own function, errors raised as
    // PostgreSQL errors; the list is read at once.
    unsafe {
        let all = pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
            find_all_inheritors(relid, lock, std::ptr::null_mut())
        });
        (0..crate::pglist::len(all))
            .map(|i| pg_sys::list_nth_oid(all, i))
            .collect()
    }
}

/// The name of the database a CREATE DATABASE makes, and of its template.
///
/// # Safety
/// `stmt` must be a valid CREATE DATABASE statement.
unsafe fn created_database(stmt: *mut pg_sys::CreatedbStmt) -> (String, String) {
    // SAFETY: forwarded contract; option lists of String nodes.
    unsafe {
        let name = std::ffi::CStr::from_ptr((*stmt).dbname)
            .to_string_lossy()
            .into_owned();
        let mut template = "template1".to_owned();
        for d in pgrx::PgList::<pg_sys::DefElem>::from_pg((*stmt).options).iter_ptr() {
            if std::ffi::CStr::from_ptr((*d).defname).to_bytes() == b"template"
                && !(*d).arg.is_null()
            {
                template = std::ffi::CStr::from_ptr(pg_sys::defGetString(d))
                    .to_string_lossy()
                    .into_owned();
            }
        }
        (name, template)
    }
}

/// Copies the engine tables of database `template` for the database `name` just
/// created from it (rows, keys and indexes; logged). Tables of the new database's OID
/// that exist already are leftovers of a CREATE DATABASE that never committed: they go
/// first. The copies are undone if the transaction aborts.
fn copy_template_tables(name: &str, template: &str) {
    let oid_of = |n: &str| {
        let c = std::ffi::CString::new(n).expect("no NUL in database names");
        // SAFETY: catalog lookup.
        unsafe { pg_sys::get_database_oid(c.as_ptr(), false) }.to_u32()
    };
    let (new_db, template_db) = (oid_of(name), oid_of(template));
    if crate::startup::failed() {
        // Nothing can be copied; the template's memory tables (if any) are as
        // unavailable in the copy as in the template. Other databases are unaffected.
        pgrx::warning!(
            "memfdw: memory tables of template \"{template}\" were not copied to \"{name}\": memory tables are unavailable (recovery failed)"
        );
        return;
    }
    let e = engine();
    let tables = e.table_ids();
    for t in tables.iter().filter(|t| t.database == new_db) {
        e.drop_table(*t).or_raise();
    }
    // Not from a template with unloaded tables: their rows are not in memory, and
    // the copy would be silently empty.
    for t in tables.iter().filter(|t| t.database == template_db) {
        let unloaded = e
            .table(*t)
            .map(|h| h.residency().state())
            .filter(|&s| s != "loaded");
        if let Some(state) = unloaded {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "memory table with OID {} of the template database is unloaded ({state})",
                    t.relation
                ),
                "memfdw",
            )
            .set_hint("Load it with memfdw.load() in the template database first.")
            .report(PgLogLevel::ERROR);
        }
    }
    for t in tables.iter().filter(|t| t.database == template_db) {
        let to = memfdw_engine::TableId::new(new_db, t.relation);
        xact::note_create(to);
        e.copy_table(*t, to).or_raise();
    }
}

/// Drops the engine tables of database `db`.
fn drop_database_tables(db: pg_sys::Oid) {
    let e = engine();
    for table in e.table_ids() {
        if table.database == db.to_u32() {
            e.drop_table(table).or_raise();
        }
    }
}

/// A copy of `pstmt` that runs utility statement `stmt` instead.
///
/// # Safety
/// Valid statement nodes.
unsafe fn with_statement(
    pstmt: *mut pg_sys::PlannedStmt,
    stmt: *mut pg_sys::Node,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: forwarded contract; the copy lives in the current memory context.
    unsafe {
        let copy =
            pg_sys::copyObjectImpl(pstmt as *const std::ffi::c_void) as *mut pg_sys::PlannedStmt;
        (*copy).utilityStmt = stmt;
        copy
    }
}

/// Creates the engine table of a memory table; returns its relation (None if the
/// statement was not for memfdw).
///
/// # Safety
/// `stmt` must be a CREATE FOREIGN TABLE statement that has just been executed.
unsafe fn after_create_foreign_table(
    stmt: *mut pg_sys::CreateForeignTableStmt,
) -> Option<pg_sys::Oid> {
    // SAFETY: forwarded contract; catalog lookups.
    unsafe {
        let server = pg_sys::GetForeignServerByName((*stmt).servername, false);
        if !is_ours(pg_sys::GetFdwRoutineByServerId((*server).serverid)) {
            return None;
        }
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).base.relation,
            pg_sys::NoLock as _,
            0,
            None,
            std::ptr::null_mut(),
        );
        let e = engine();
        if e.table(crate::handler::table_id(relid)).is_some() {
            // A table of a transaction that never committed (its CREATE was logged, then
            // the server crashed) whose OID PostgreSQL has now reused: not ours.
            e.drop_table(crate::handler::table_id(relid)).or_raise();
        }
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as _);
        let def = types::table_def(rel);
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as _);
        e.create_table(crate::handler::table_id(relid), def.or_raise())
            .or_raise();
        xact::note_create(crate::handler::table_id(relid));
        Some(relid)
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    // SAFETY: chaining the previous hook.
    unsafe {
        if let Some(prev) = PREV_OBJECT_ACCESS {
            pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
                prev(access, class_id, object_id, sub_id, arg)
            });
        }
    }
    if access == pg_sys::ObjectAccessType::OAT_DROP
        && class_id == pg_sys::RelationRelationId
        && sub_id == 0
        && preloaded()
        && is_memory_table(object_id)
        && engine()
            .table(crate::handler::table_id(object_id))
            .is_some()
    {
        xact::note_drop(object_id.to_u32());
    }
    // A column dropped by a statement other than ALTER TABLE (DROP TYPE ... CASCADE,
    // DROP DOMAIN ... CASCADE): the table is rewritten after the statement.
    if access == pg_sys::ObjectAccessType::OAT_DROP
        && class_id == pg_sys::RelationRelationId
        && sub_id > 0
        && preloaded()
        && is_memory_table(object_id)
    {
        crate::alter::note_column_drop(object_id);
    }
}
