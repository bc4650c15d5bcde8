//! Converting a table between heap and memory: `memfdw.convert_to_memory(rel,
//! keep_as)` and `memfdw.convert_to_heap(rel, keep_as)`, in PL/pgSQL
//! (`sql/convert.sql`): the work is catalog reading and DDL that PostgreSQL and
//! memfdw's own DDL hooks already check.
//!
//! In the caller's transaction, under an ACCESS EXCLUSIVE lock on the table:
//! 1. refuse what cannot follow the table (objects that refer to it by identity:
//!    views, rules, foreign keys, triggers, inheritance, policies, publications;
//!    identity columns; to memory, indexes other than plain ascending btree indexes
//!    over columns), listing them (2BP01);
//! 2. rename the old table aside and create the new one under its name with the same
//!    columns (types, collations, NOT NULL, defaults, generated expressions) and CHECK
//!    constraints;
//! 3. create the primary key, unique constraints and indexes under their names (the
//!    old table's step aside), then copy the rows (memfdw maintains an index row by
//!    row faster than it builds one over loaded rows; a sorted bulk build is not
//!    there yet);
//! 4. move owned sequences, comments, owner, table and column grants;
//! 5. drop the old table, or keep it renamed to `keep_as`.
//!
//! Other sessions see the old table or the new one. A crash before the commit leaves
//! the old table as it was (the heap side is in the WAL, the memory side in memfdw's
//! log, both committed by the same commit).

// (Named by `requires` below, which the compiler does not count as a use.)
#[allow(unused_imports)]
use crate::introspect::indexes;
use pgrx::prelude::*;

extension_sql_file!(
    "../../sql/convert.sql",
    name = "convert",
    requires = ["create_wrapper_and_server", indexes],
);
