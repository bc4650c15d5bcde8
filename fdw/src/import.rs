//! Resumable bulk import into a memory table (`sql/import.sql`):
//!
//! ```sql
//! CALL memfdw.import('accounts', 'SELECT * FROM staging.accounts', on_duplicate => 'skip');
//! CALL memfdw.import_resume(7);   -- after a cancel, an error or a crash
//! SELECT * FROM memfdw.import_progress;
//! ```
//!
//! A job (a row of `memfdw.import_jobs`) loads the rows of a query in batches of
//! `batch_rows`, in the order of `order_by` (columns of the query that order its rows
//! and identify each one; by default the target's primary key columns): each batch is
//! the next rows after the last key committed, inserted, and committed together with
//! the job's new position, so after a cancel, an error or a crash the job continues
//! after the last committed batch, and no row is loaded twice. Two sessions resuming
//! one job take turns batch by batch (the job's row is locked until each batch
//! commits).
//!
//! `order_by` must identify the rows: a batch reads one row more than it loads, and a
//! key shared by two rows read (or a NULL key, checked again after the last batch)
//! fails the job rather than skip or repeat rows at a batch boundary. Keys are kept as
//! jsonb under settings that make them round-trip exactly (`extra_float_digits`,
//! `IntervalStyle`, `DateStyle`), and every batch runs under the job's search_path,
//! with the tables named by schema.
//!
//! Duplicates (`on_duplicate`): `error` stops the job at the first batch with a
//! unique violation (or any other integrity error), nothing of that batch stored,
//! the job marked failed with the error; `skip` leaves such rows out (counted);
//! `record` leaves them out and writes their key and whole row (as jsonb) to
//! `<target>_import_conflicts` beside the target.
//!
//! Progress: `memfdw.import_progress` (rows loaded and skipped, rows per second, the
//! planner's estimate of the total), and a NOTICE at most every second.
//!
//! Privileges: only the target's owner (or a member of its owning role) imports into
//! it; the query runs with the caller's privileges; each user sees and resumes only
//! their own jobs (row-level security on `memfdw.import_jobs`; a superuser, who sees
//! all, still resumes only their own: a job runs its owner's SQL). Any error but a
//! cancel marks the job failed with its message. `memfdw.import` and
//! `memfdw.import_resume` commit, so they are CALLed outside a transaction block.

use pgrx::prelude::*;

extension_sql_file!(
    "../../sql/import.sql",
    name = "import",
    requires = ["convert"],
);
