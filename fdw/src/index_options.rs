//! A memory table's keys and indexes, kept as its `indexes` table option so that they
//! travel with its definition: `pg_dump` writes `CREATE FOREIGN TABLE ... OPTIONS
//! (indexes '...')` (also with `-t`, `--section pre-data`, `-Fc` and `pg_restore
//! --jobs`), a restore builds them again when the table is created (before its rows
//! are loaded), and psql's `\d` shows them as "FDW options".
//!
//! The value lists the indexes in creation order, separated by `;`, each as
//! `primary|unique|index NAME (COLUMN, ...)`, identifiers quoted as in SQL where
//! needed: `primary acc_pkey (id); unique owner_branch (owner, branch)`.
//!
//! Invariant: memfdw rewrites the option in the same transaction as every CREATE
//! INDEX, DROP INDEX, key of a CREATE FOREIGN TABLE and RENAME COLUMN of the table, so
//! it commits or rolls back with them; users cannot set it (`ALTER FOREIGN TABLE ...
//! OPTIONS` on it is refused) except in CREATE FOREIGN TABLE, where the indexes it
//! names are built.

use memfdw_engine::IndexDef;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// The option's name.
pub const OPTION: &str = "indexes";

/// One index named by the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptIndex {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
    pub primary: bool,
}

/// The option's value for `defs` on relation `relid` (column names from the catalog).
pub fn format(relid: pg_sys::Oid, defs: &[IndexDef]) -> String {
    defs.iter()
        .map(|d| {
            let kind = if d.primary {
                "primary"
            } else if d.unique {
                "unique"
            } else {
                "index"
            };
            let cols: Vec<String> = d
                .columns
                .iter()
                .map(|&c| {
                    // SAFETY: catalog lookup; engine column c is attribute c + 1.
                    let name =
                        unsafe { pg_sys::get_attname(relid, (c + 1) as pg_sys::AttrNumber, false) };
                    // SAFETY: a palloc'd NUL-terminated name.
                    crate::types::quote_ident(&unsafe { CStr::from_ptr(name) }.to_string_lossy())
                })
                .collect();
            format!(
                "{kind} {} ({})",
                crate::types::quote_ident(&d.name),
                cols.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Punct(char),
}

fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if matches!(c, '(' | ')' | ',' | ';') {
            out.push(Token::Punct(c));
            it.next();
        } else if c == '"' {
            it.next();
            let mut w = String::new();
            loop {
                match it.next() {
                    Some('"') if it.peek() == Some(&'"') => {
                        it.next();
                        w.push('"');
                    }
                    Some('"') => break,
                    Some(ch) => w.push(ch),
                    None => return Err("unterminated quoted identifier".into()),
                }
            }
            out.push(Token::Word(w));
        } else {
            let mut w = String::new();
            while let Some(&ch) = it.peek() {
                if ch.is_whitespace() || matches!(ch, '(' | ')' | ',' | ';' | '"') {
                    break;
                }
                w.push(ch.to_ascii_lowercase());
                it.next();
            }
            out.push(Token::Word(w));
        }
    }
    Ok(out)
}

/// Parses the option's value.
pub fn parse(s: &str) -> Result<Vec<OptIndex>, String> {
    let toks = tokens(s)?;
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: usize| match toks.get(i) {
        Some(Token::Word(w)) => Ok(w.clone()),
        other => Err(format!("expected a name, found {other:?}")),
    };
    let punct = |i: usize, c: char| match toks.get(i) {
        Some(Token::Punct(p)) if *p == c => Ok(()),
        other => Err(format!("expected \"{c}\", found {other:?}")),
    };
    while i < toks.len() {
        if toks[i] == Token::Punct(';') {
            i += 1;
            continue;
        }
        let kind = word(i)?;
        let (unique, primary) = match kind.as_str() {
            "primary" => (true, true),
            "unique" => (true, false),
            "index" => (false, false),
            k => {
                return Err(format!(
                    "unknown index kind \"{k}\" (primary, unique or index)"
                ))
            }
        };
        let name = word(i + 1)?;
        punct(i + 2, '(')?;
        i += 3;
        let mut columns = vec![word(i)?];
        i += 1;
        while toks.get(i) == Some(&Token::Punct(',')) {
            columns.push(word(i + 1)?);
            i += 2;
        }
        punct(i, ')')?;
        i += 1;
        if i < toks.len() {
            punct(i, ';')?;
        }
        out.push(OptIndex {
            name,
            columns,
            unique,
            primary,
        });
    }
    Ok(out)
}

/// Does a list of options (DefElems, with or without values) name the `indexes`
/// option?
///
/// # Safety
/// `options` must be NIL or a list of DefElem nodes.
pub unsafe fn named_in(options: *mut pg_sys::List) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        pgrx::PgList::<pg_sys::DefElem>::from_pg(options)
            .iter_ptr()
            .any(|d| CStr::from_ptr((*d).defname).to_bytes() == OPTION.as_bytes())
    }
}

/// The `indexes` option among a statement's or catalog entry's options (DefElems).
///
/// # Safety
/// `options` must be NIL or a list of DefElem nodes with string values.
pub unsafe fn from_options(options: *mut pg_sys::List) -> Option<String> {
    // SAFETY: forwarded contract.
    unsafe {
        pgrx::PgList::<pg_sys::DefElem>::from_pg(options)
            .iter_ptr()
            .find(|&d| CStr::from_ptr((*d).defname).to_bytes() == OPTION.as_bytes())
            .map(|d| {
                CStr::from_ptr(pg_sys::defGetString(d))
                    .to_string_lossy()
                    .into_owned()
            })
    }
}

/// Rewrites the `indexes` option of memory table `relid` from the engine's indexes as
/// this transaction sees them (its own TRUNCATE or ALTER replacement included,
/// pending drops left out).
pub fn store(relid: pg_sys::Oid) {
    let Some(table) = crate::xact::table_view(relid) else {
        return;
    };
    let defs: Vec<IndexDef> = table
        .index_defs()
        .into_iter()
        .filter(|d| !crate::xact::index_drop_pending(relid.to_u32(), d.id))
        .collect();
    store_defs(relid, &defs);
}

/// Rewrites the `indexes` option of memory table `relid` to name `defs`.
pub fn store_defs(relid: pg_sys::Oid, defs: &[IndexDef]) {
    let value = format(relid, defs);
    // SAFETY: a catalog update of the table's own pg_foreign_table row, under the
    // lock the DDL statement holds on the table; made visible to the rest of the
    // command by CommandCounterIncrement (and the row it updates made visible to it by
    // the one before: CREATE FOREIGN TABLE inserts it without one).
    unsafe {
        pg_sys::CommandCounterIncrement();
        let rel = pg_sys::table_open(
            pg_sys::ForeignTableRelationId,
            pg_sys::RowExclusiveLock as _,
        );
        let zero = pg_sys::Datum::from(0usize);
        let tup = pg_sys::SearchSysCacheCopy(
            pg_sys::SysCacheIdentifier::FOREIGNTABLEREL as _,
            pg_sys::Datum::from(relid),
            zero,
            zero,
            zero,
        );
        if tup.is_null() {
            pg_sys::table_close(rel, pg_sys::RowExclusiveLock as _);
            return;
        }
        let natts = pg_sys::Natts_pg_foreign_table as usize;
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![false; natts];
        let mut replace = vec![false; natts];
        let col = pg_sys::Anum_pg_foreign_table_ftoptions as usize - 1;
        replace[col] = true;
        if defs.is_empty() {
            nulls[col] = true;
        } else {
            let entry = CString::new(format!("{OPTION}={value}")).expect("no NUL in names");
            let text = pg_sys::cstring_to_text(entry.as_ptr());
            let mut elems = [pg_sys::Datum::from(text)];
            let arr = pg_sys::construct_array(
                elems.as_mut_ptr(),
                1,
                pg_sys::TEXTOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT as std::ffi::c_char,
            );
            values[col] = pg_sys::Datum::from(arr);
        }
        let new = pg_sys::heap_modify_tuple(
            tup,
            (*rel).rd_att,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            replace.as_mut_ptr(),
        );
        pg_sys::CatalogTupleUpdate(rel, &mut (*new).t_self, new);
        pg_sys::table_close(rel, pg_sys::RowExclusiveLock as _);
        pg_sys::CommandCounterIncrement();
    }
}

/// Checks a value given in CREATE FOREIGN TABLE ... OPTIONS (indexes '...').
pub fn validate(value: &str) {
    if let Err(e) = parse(value) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_FDW_INVALID_STRING_FORMAT,
            format!("invalid value for option \"{OPTION}\": {e}"),
            "The option lists a memory table's indexes, as in 'primary t_pkey (id); index t_a_idx (a)'."
        );
    }
}
