//! Applying redo records to an engine during recovery.
//!
//! Replay is last-writer-wins by commit TID per row, so applying a record twice, or a
//! record older than what a row already holds (a fuzzy checkpoint taken while writers
//! ran), changes nothing. Records of one row must still arrive in TID order when one
//! of them is a delete (a delete leaves no version behind to compare with).

use crate::engine::{Engine, Need, TableHandle};
use crate::epoch;
use crate::error::{Error, Result};
use crate::garbage::{Garbage, Retired, RECORD_BYTES};
use crate::record::{self, Record, RecordPtr, TID_MASK};
use crate::redo::payload::LogRecord;
use crate::scope;

impl Engine {
    /// Applies one redo record. Rows of tables the engine does not have (dropped
    /// later in the log) are skipped.
    pub fn replay(&'static self, rec: &LogRecord) -> Result<()> {
        match rec {
            LogRecord::CreateTable { oid, def } => {
                if self.table(*oid).is_none() {
                    self.create_table_inner(*oid, def.clone(), false)?;
                }
            }
            LogRecord::DropTable { oid } => {
                self.drop_table_inner(*oid);
            }
            LogRecord::Commit { tid, writes } => {
                self.observe_tid(*tid);
                for w in writes {
                    if let Some(t) = self.table(w.table_oid) {
                        self.apply_row(&t, w.rowid, *tid, w.after.as_deref())?;
                    }
                }
            }
            LogRecord::Rows { table_oid, rows } => {
                if let Some(t) = self.table(*table_oid) {
                    for (rowid, tid, bytes) in rows {
                        self.observe_tid(*tid);
                        self.apply_row(&t, *rowid, *tid, Some(bytes))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Installs version `tid` of row `rowid` (None = deleted) unless the row already
    /// holds a version at least as new.
    fn apply_row(
        &'static self,
        t: &TableHandle,
        rowid: u64,
        tid: u64,
        after: Option<&[u8]>,
    ) -> Result<()> {
        if let Some(bytes) = after {
            if !t.layout.check(bytes) {
                return Err(Error::Corrupt(format!(
                    "row {rowid} of table {} does not match the table's columns",
                    t.oid
                )));
            }
            self.check_memory(Need::of(record::rowbuf_size(bytes.len())) + Need::of(RECORD_BYTES))?;
        }
        t.observe_rowid(rowid);
        let _s = scope::enter();
        epoch::with_guard(&self.collector, |g| {
            let mut garbage = Garbage::default();
            match (t.rows.get(rowid, g), after) {
                (Some(r), after) => {
                    // SAFETY: reached through the index under guard `g`.
                    let rec = unsafe { r.get() };
                    let old_v = rec.lock();
                    if old_v & TID_MASK >= tid {
                        rec.unlock();
                    } else {
                        let new = after
                            .map(record::rowbuf_new)
                            .unwrap_or(std::ptr::null_mut());
                        let old = rec.install_and_unlock(new, tid);
                        let size = |p: *mut u8| {
                            if p.is_null() {
                                0
                            } else {
                                // SAFETY: live buffer (new, or old not yet retired).
                                record::rowbuf_size(unsafe { record::rowbuf_slice(p) }.len()) as i64
                            }
                        };
                        t.account(if new.is_null() { -1 } else { 0 }, size(new) - size(old));
                        self.account(size(new) as isize);
                        garbage.push(Retired::Buffer(old));
                        if new.is_null() {
                            t.rows.remove(rowid, g);
                            garbage.push(Retired::Record(r.0));
                        }
                    }
                }
                (None, Some(bytes)) => {
                    let data = record::rowbuf_new(bytes);
                    let size = record::rowbuf_size(bytes.len());
                    let r = RecordPtr(Box::into_raw(Record::new_present(rowid, tid, data)));
                    t.rows.insert(rowid, r, g);
                    t.account(1, size as i64);
                    self.account((size + RECORD_BYTES) as isize);
                }
                (None, None) => {}
            }
            garbage.retire(self, g);
        });
        Ok(())
    }
}
