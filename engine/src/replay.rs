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
use crate::index::{IndexDef, KeyIndex, KEY_ENTRY_BYTES};
use crate::record::{self, Record, RecordPtr, TID_MASK};
use crate::redo::payload::LogRecord;
use crate::scope;
use std::sync::Arc;

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
            LogRecord::CreateIndex { table_oid, def } => {
                self.observe_index_id(def.id);
                if let Some(t) = self.table(*table_oid) {
                    if t.index_entries(def.id).is_none() {
                        self.rebuild_index(&t, def.clone())?;
                    }
                }
            }
            LogRecord::DropIndex { table_oid, id } => {
                self.drop_index_logged(*table_oid, *id, false)?;
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

    /// Builds index `def` over the committed rows of `t` and publishes it, unlogged.
    /// Uniqueness is not checked: during replay it may hold only at the end (a fuzzy
    /// checkpoint can hold two rows with one key, one of them changed later in the log).
    fn rebuild_index(&'static self, t: &TableHandle, def: IndexDef) -> Result<()> {
        let _s = scope::enter();
        let shared = def.clone();
        scope::outside(|| drop(def));
        let index = Arc::new(KeyIndex::new(shared, &t.def, &self.collector));
        let res = epoch::with_guard(&self.collector, |g| {
            let mut key = Vec::new();
            let mut res = Ok(());
            t.rows.scan_after(None, g, |rowid, rec| {
                // SAFETY: reached through the row index under guard `g`.
                let s = unsafe { rec.get() }.read(g);
                if let (false, Some(d)) = (s.absent(), s.data) {
                    if let Err(e) = index.key_of(&t.layout, d, &mut key) {
                        res = Err(e);
                        return false;
                    }
                    self.account((KEY_ENTRY_BYTES + key.len()) as isize);
                    index.insert(&key, rowid, rec, g);
                }
                true
            });
            res
        });
        res?;
        self.publish_index(t, index, false)
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
        let idx = t.indexes();
        epoch::with_guard(&self.collector, |g| {
            let (mut ko, mut kn) = (Vec::new(), Vec::new());
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
                        let old_data = rec.data_ptr();
                        let mut stale = Vec::new();
                        for (n, index) in idx.iter().enumerate() {
                            // SAFETY: the committed buffer is stable while we hold the lock.
                            let old_row = (!old_data.is_null())
                                .then(|| unsafe { record::rowbuf_slice(old_data) });
                            if let Some(o) = old_row {
                                index.key_of(&t.layout, o, &mut ko)?;
                            }
                            if let Some(a) = after {
                                index.key_of(&t.layout, a, &mut kn)?;
                                if old_row.is_none() || kn != ko {
                                    index.insert(&kn, rowid, r, g);
                                    self.account((KEY_ENTRY_BYTES + kn.len()) as isize);
                                }
                            }
                            if old_row.is_some() && (after.is_none() || kn != ko) {
                                stale.push((n, std::mem::take(&mut ko)));
                            }
                        }
                        let old = rec.install_and_unlock(new, tid);
                        for (n, key) in stale {
                            idx[n].remove(&key, rowid, g);
                            self.account(-((KEY_ENTRY_BYTES + key.len()) as isize));
                        }
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
                    for index in idx.iter() {
                        index.key_of(&t.layout, bytes, &mut kn)?;
                        index.insert(&kn, rowid, r, g);
                        self.account((KEY_ENTRY_BYTES + kn.len()) as isize);
                    }
                    t.account(1, size as i64);
                    self.account((size + RECORD_BYTES) as isize);
                }
                (None, None) => {}
            }
            garbage.retire(self, g);
            Ok(())
        })
    }
}
