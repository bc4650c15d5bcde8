//! The contents of redo records: committed row images and DDL.
//!
//! ```text
//! commit:       1 | tid u64 | count u32 | { table | rowid u64 | kind u8 (0 row, 1 delete, 2 truncate, 3 redefine) | [len u32 | bytes] }*
//! create table: 2 | table | def
//! def:          name | ncols u16 | { name | type u8 | param u32 | nullable u8 }*
//! drop table:   3 | table
//! rows:         4 | table | count u32 | { rowid u64 | tid u64 | len u32 | bytes }*
//! create index: 5 | table | index
//! index:        id u32 | name | flags u8 (1 unique, 2 primary) | ncols u16 | { column u16 }*
//! drop index:   6 | table | id u32
//! commit part:  7 | tid u64 | count u32 | { write }*   (as commit; see below)
//! xact:         8 | tid u64 | xid u32
//! residency:    9 | table | state   (checkpoints and spill files: a table not in memory)
//! state:        kind u8 (0 loaded, 1 spilled, 2 discarded) | file name | rows u64 | bytes u64 | newest tid u64
//! table:        database u32 | relation u32   (a TableId)
//! name:         len u16 | utf-8 bytes
//! ```
//! A truncate entry (rowid 0, no bytes) empties its table; a redefine entry (rowid 0,
//! bytes: def | nindexes u16 | index*) replaces its table by an empty one with that
//! definition and those indexes (an ALTER TABLE that rewrote it); a residency entry
//! (rowid 0, bytes: state | source file name) replaces it by an empty one with that
//! residency, filled with the rows of the source spill file if one is named
//! (`memfdw.unload` / `memfdw.load`, see `crate::unload`). A commit's truncate
//! and redefine entries come before its rows, so replay empties the table, then applies
//! the rows the same transaction wrote after its TRUNCATE or ALTER.
//!
//! An xact record names the PostgreSQL transaction (xid) of the commit with its TID;
//! it comes right before that commit's parts and record, in the same append. Recovery
//! applies such a commit only if PostgreSQL's commit log says the xid committed (the
//! record is written before PostgreSQL's commit record, which a crash or a failure
//! late in PostgreSQL's commit can then leave unwritten).
//!
//! A commit whose record would exceed the largest frame is logged as commit parts
//! followed by one commit record, all with its TID, in consecutive frames (appended
//! under one hold of the log lock): recovery applies the parts only together with
//! their commit record, and drops parts not followed by it (a commit that never
//! completed, so was never acknowledged). [`LogRecord::decode`] does not decode parts;
//! [`decode_rows`] does.
//!
//! Decoding checks every length against the buffer and returns an error on any
//! inconsistency; it never panics on bad input.

use crate::catalog::{ColumnDef, ColumnType, TableDef};
use crate::ids::{RowId, TableId, Tid};
use crate::index::IndexDef;
use crate::unload::{Residency, SpillFile};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowImage {
    pub table: TableId,
    pub rowid: RowId,
    /// The row's packed bytes, or None for a delete.
    pub after: Option<Vec<u8>>,
}

/// A table that a commit replaces by an empty one with a new definition and indexes
/// (an ALTER TABLE that rewrote its rows; the rows follow in the same commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redefinition {
    pub table: TableId,
    pub def: TableDef,
    pub indexes: Vec<IndexDef>,
}

/// What a commit does to a whole table before its rows apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emptying {
    /// TRUNCATE: the table becomes empty.
    Truncate(TableId),
    /// ALTER TABLE: the table becomes empty, with a new definition and indexes.
    Redefine(Redefinition),
    /// `memfdw.unload` / `memfdw.load`: the table becomes empty with residency `to`,
    /// then gets the rows of spill file `from` if one is named.
    Reside {
        table: TableId,
        to: Residency,
        from: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Commit {
        tid: Tid,
        /// Tables this commit empties (TRUNCATE) or redefines (ALTER TABLE), before
        /// its writes apply.
        emptied: Vec<Emptying>,
        writes: Vec<RowImage>,
    },
    /// A new table; its definition's database is the table's.
    CreateTable {
        table: TableId,
        def: TableDef,
    },
    DropTable {
        table: TableId,
    },
    CreateIndex {
        table: TableId,
        def: IndexDef,
    },
    DropIndex {
        table: TableId,
        id: u32,
    },
    /// The commit with TID `tid`, next in the log, belongs to PostgreSQL transaction
    /// `xid` (see the module documentation).
    Xact {
        tid: Tid,
        xid: u32,
    },
    /// Where the rows of a table are when they are not in memory (checkpoints and
    /// spill files; right after its create-table and create-index records).
    Residency {
        table: TableId,
        residency: Residency,
    },
    /// Committed rows of one table with their TIDs (checkpoints only).
    Rows {
        table: TableId,
        rows: Vec<(RowId, Tid, Vec<u8>)>,
    },
}

/// Kind byte of a commit record.
pub const COMMIT: u8 = 1;
/// Kind byte of a create-table record.
pub const CREATE_TABLE: u8 = 2;
/// Kind byte of a drop-table record.
pub const DROP_TABLE: u8 = 3;
/// Kind byte of a checkpoint's rows record.
pub const ROWS: u8 = 4;
/// Kind byte of a create-index record.
pub const CREATE_INDEX: u8 = 5;
/// Kind byte of a drop-index record.
pub const DROP_INDEX: u8 = 6;
/// Kind byte of a commit part (see the module documentation).
pub const COMMIT_PART: u8 = 7;
/// Kind byte of an xact record (see the module documentation).
pub const XACT: u8 = 8;
/// Kind byte of a residency record.
pub const RESIDENCY: u8 = 9;

/// Bytes before the first write of a commit or commit part: kind, TID, count.
const COMMIT_HEADER_LEN: usize = 1 + 8 + 4;

/// Encodes the redo record of one commit: a commit record, or, when the after-images
/// exceed `max` bytes, commit parts followed by a final commit record (see the module
/// documentation). The one encoder of commit records, used by the commit path and by
/// [`LogRecord::encode`].
pub struct CommitRecords {
    tid: Tid,
    /// The PostgreSQL transaction, if the commit has one (an xact record first); taken
    /// when the xact record is handed out.
    xid: Option<u32>,
    max: usize,
    /// Parts not handed out yet, in order: sealed ones, then the one being filled
    /// (sealed too once [`CommitRecords::end`] ran).
    parts: Vec<Vec<u8>>,
    /// Writes in the part being filled.
    count: u32,
    /// The last part (the commit record) is sealed.
    ended: bool,
    /// A buffer handed back by [`CommitRecords::take_ready`], reused by the next part.
    spare: Vec<u8>,
    write: Vec<u8>,
}

impl CommitRecords {
    pub fn new(tid: Tid, max: usize) -> CommitRecords {
        let mut r = CommitRecords {
            tid,
            xid: None,
            max,
            parts: Vec::new(),
            count: 0,
            ended: false,
            spare: Vec::new(),
            write: Vec::new(),
        };
        r.start_part();
        r
    }

    fn start_part(&mut self) {
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        out.reserve(self.max.min(64 << 10));
        out.push(COMMIT_PART);
        out.extend_from_slice(&self.tid.get().to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        self.parts.push(out);
        self.count = 0;
    }

    fn seal_part(&mut self, kind: u8) {
        let p = self.parts.last_mut().expect("started");
        p[0] = kind;
        p[9..COMMIT_HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
    }

    pub fn xact(&mut self, xid: u32) {
        self.xid = Some(xid);
    }

    /// Adds a truncate entry for `table` (call before its rows: see the module doc).
    pub fn truncate(&mut self, table: TableId) {
        self.write.clear();
        put_table(&mut self.write, table);
        self.write.extend_from_slice(&0u64.to_le_bytes());
        self.write.push(TRUNCATE_ENTRY);
        self.append_write();
    }

    /// Adds a redefine entry (call before the table's rows: see the module doc).
    pub fn redefine(&mut self, r: &Redefinition) {
        self.write.clear();
        put_table(&mut self.write, r.table);
        self.write.extend_from_slice(&0u64.to_le_bytes());
        self.write.push(REDEFINE_ENTRY);
        let mut body = Vec::new();
        put_def(&mut body, &r.def);
        body.extend_from_slice(&(r.indexes.len() as u16).to_le_bytes());
        for i in &r.indexes {
            put_index(&mut body, i);
        }
        self.write
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.write.extend_from_slice(&body);
        self.append_write();
    }

    /// Adds a residency entry (call before the table's rows: see the module doc).
    pub fn reside(&mut self, table: TableId, to: &Residency, from: Option<&str>) {
        self.write.clear();
        put_table(&mut self.write, table);
        self.write.extend_from_slice(&0u64.to_le_bytes());
        self.write.push(RESIDENCY_ENTRY);
        let mut body = Vec::new();
        put_residency(&mut body, to);
        put_name(&mut body, from.unwrap_or(""));
        self.write
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.write.extend_from_slice(&body);
        self.append_write();
    }

    /// Adds the after-image of row `rowid` of table `table` (None: deleted). Encoded
    /// straight into the part being filled; moved to a new part if it made that one
    /// exceed the largest record.
    pub fn push(&mut self, table: TableId, rowid: RowId, after: Option<&[u8]>) {
        debug_assert!(!self.ended);
        let cur = self.parts.last_mut().expect("started");
        let start = cur.len();
        encode_write(cur, table, rowid, after);
        if self.count > 0 && cur.len() > self.max {
            self.write.clear();
            self.write.extend_from_slice(&cur[start..]);
            cur.truncate(start);
            self.next_part_with_write();
        }
        self.count += 1;
    }

    /// Appends the encoded entry in `write` to the current part, starting a new part if
    /// it would exceed the largest record.
    fn append_write(&mut self) {
        debug_assert!(!self.ended);
        let cur = self.parts.last_mut().expect("started");
        if self.count > 0 && cur.len() + self.write.len() > self.max {
            self.next_part_with_write();
        } else {
            cur.extend_from_slice(&self.write);
        }
        self.count += 1;
    }

    /// Seals the part being filled and starts the next one with the entry in `write`.
    fn next_part_with_write(&mut self) {
        self.seal_part(COMMIT_PART);
        self.start_part();
        self.parts
            .last_mut()
            .expect("started")
            .extend_from_slice(&self.write);
    }

    /// Seals the last part as the commit record: nothing more is added.
    pub fn end(&mut self) {
        if !self.ended {
            self.seal_part(COMMIT);
            self.ended = true;
        }
    }

    /// Whether [`CommitRecords::end`] ran.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Puts the next payload that is complete into `out` (its earlier contents are
    /// kept for reuse by a later part) and returns true; false if none is complete
    /// yet (or none is left). In order: the xact record, the parts, and after
    /// [`CommitRecords::end`] the commit record. A commit's writer can so append each
    /// part as soon as it is full, and reuse its buffer, instead of keeping the whole
    /// commit's record in memory (a million-row insert's took 130 MB of fresh pages).
    pub fn take_ready(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some(xid) = self.xid.take() {
            out.clear();
            LogRecord::Xact { tid: self.tid, xid }.encode(out);
            return true;
        }
        let complete = if self.ended { 1 } else { 2 };
        if self.parts.len() < complete {
            return false;
        }
        let part = self.parts.remove(0);
        let old = std::mem::replace(out, part);
        if old.capacity() > self.spare.capacity() {
            self.spare = old;
        }
        true
    }

    /// The payloads to append, in order: the last one is the commit record.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.end();
        let mut out = Vec::new();
        loop {
            let mut p = Vec::new();
            if !self.take_ready(&mut p) {
                return out;
            }
            out.push(p);
        }
    }
}

/// The write count in the header of a commit record or part (not checked against
/// the writes that follow; [`decode_rows`] does that).
pub fn commit_writes(b: &[u8]) -> Option<u32> {
    match b.first() {
        Some(&COMMIT) | Some(&COMMIT_PART) if b.len() >= COMMIT_HEADER_LEN => Some(
            u32::from_le_bytes(b[9..COMMIT_HEADER_LEN].try_into().expect("4 bytes")),
        ),
        _ => None,
    }
}

/// Length of an xact record.
const XACT_LEN: usize = 1 + 8 + 4;

/// The TID and xid of an xact payload.
pub fn xact_of(b: &[u8]) -> Option<(Tid, u32)> {
    match b.first() {
        Some(&XACT) if b.len() == XACT_LEN => Some((
            Tid(u64::from_le_bytes(b[1..9].try_into().unwrap())),
            u32::from_le_bytes(b[9..13].try_into().unwrap()),
        )),
        _ => None,
    }
}

/// The TID of a commit or commit-part payload.
pub fn commit_tid(b: &[u8]) -> Option<Tid> {
    match b.first() {
        Some(&COMMIT) | Some(&COMMIT_PART) if b.len() >= 9 => {
            Some(Tid(u64::from_le_bytes(b[1..9].try_into().unwrap())))
        }
        _ => None,
    }
}

/// One row change borrowed from a commit or rows payload (see [`decode_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    pub table: TableId,
    pub rowid: RowId,
    pub tid: Tid,
    /// The row's packed bytes, or None for a delete.
    pub after: Option<&'a [u8]>,
}

/// Decodes the rows of a commit (1) or rows (4) payload without copying them (recovery
/// applies them straight from the mapped file). `Ok(None)` for every other kind. The
/// same checks as [`LogRecord::decode`].
pub fn decode_rows(b: &[u8]) -> Result<Option<Vec<RowRef<'_>>>, DecodeError> {
    let mut r = Reader { b, pos: 0 };
    let rows = match r.u8()? {
        COMMIT | COMMIT_PART => {
            let tid = Tid(r.u64()?);
            let n = r.u32()? as usize;
            if n > b.len() / 17 {
                return Err(DecodeError("write count exceeds record"));
            }
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                let table = r.table()?;
                let rowid = RowId(r.u64()?);
                let after = match r.u8()? {
                    0 => {
                        let len = r.u32()? as usize;
                        Some(r.bytes(len)?)
                    }
                    1 => None,
                    TRUNCATE_ENTRY if rowid == RowId(0) => continue,
                    REDEFINE_ENTRY | RESIDENCY_ENTRY if rowid == RowId(0) => {
                        let len = r.u32()? as usize;
                        r.bytes(len)?;
                        continue;
                    }
                    _ => return Err(DecodeError("bad write kind")),
                };
                rows.push(RowRef {
                    table,
                    rowid,
                    tid,
                    after,
                });
            }
            rows
        }
        ROWS => {
            let table = r.table()?;
            let n = r.u32()? as usize;
            if n > b.len() / 20 {
                return Err(DecodeError("row count exceeds record"));
            }
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                let rowid = RowId(r.u64()?);
                let tid = Tid(r.u64()?);
                let len = r.u32()? as usize;
                rows.push(RowRef {
                    table,
                    rowid,
                    tid,
                    after: Some(r.bytes(len)?),
                });
            }
            rows
        }
        _ => return Ok(None),
    };
    if r.pos != b.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Some(rows))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed redo record: {0}")]
pub struct DecodeError(pub &'static str);

fn type_tag(t: ColumnType) -> (u8, u32) {
    use ColumnType::*;
    match t {
        Bool => (1, 0),
        Int2 => (2, 0),
        Int4 => (3, 0),
        Int8 => (4, 0),
        Float4 => (5, 0),
        Float8 => (6, 0),
        Numeric => (7, 0),
        Char(n) => (8, n),
        Varchar(n) => (9, n),
        Text => (10, 0),
        Bytea => (11, 0),
        Date => (12, 0),
        Time => (13, 0),
        TimeTz => (14, 0),
        Timestamp => (15, 0),
        TimestampTz => (16, 0),
        Interval => (17, 0),
        Uuid => (18, 0),
        Json => (19, 0),
        Jsonb => (20, 0),
        Oid => (21, 0),
        Char1 => (22, 0),
        Name => (23, 0),
        Money => (24, 0),
        MacAddr(n) => (25, n as u32),
        Other { len, byval } => (26, len as u16 as u32 | (byval as u32) << 16),
        Dropped => (27, 0),
    }
}

fn type_from_tag(tag: u8, p: u32) -> Option<ColumnType> {
    use ColumnType::*;
    Some(match tag {
        1 => Bool,
        2 => Int2,
        3 => Int4,
        4 => Int8,
        5 => Float4,
        6 => Float8,
        7 => Numeric,
        8 => Char(p),
        9 => Varchar(p),
        10 => Text,
        11 => Bytea,
        12 => Date,
        13 => Time,
        14 => TimeTz,
        15 => Timestamp,
        16 => TimestampTz,
        17 => Interval,
        18 => Uuid,
        19 => Json,
        20 => Jsonb,
        21 => Oid,
        22 => Char1,
        23 => Name,
        24 => Money,
        25 if p == 6 || p == 8 => MacAddr(p as u8),
        26 if p >> 17 == 0 => Other {
            len: p as u16 as i16,
            byval: p >> 16 == 1,
        },
        27 => Dropped,
        _ => return None,
    })
}

/// A rows record written row by row from borrowed bytes (a checkpoint's scan batch),
/// byte for byte what [`LogRecord::Rows`] encodes: the one place of that format's
/// writing.
///
/// ```text
/// ROWS | table | count u32 | (rowid u64 | tid u64 | len u32 | bytes)*
/// ```
pub struct RowsEncoder {
    /// Offset of the count in the payload.
    count_at: usize,
    /// Rows pushed so far.
    pub rows: u32,
}

impl RowsEncoder {
    /// Appends the record's header (with a count of 0) to `out`.
    pub fn start(out: &mut Vec<u8>, table: TableId) -> RowsEncoder {
        out.push(ROWS);
        put_table(out, table);
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        RowsEncoder { count_at, rows: 0 }
    }

    /// Appends one row to `out`, the payload `start` began.
    pub fn push(&mut self, out: &mut Vec<u8>, rowid: RowId, tid: Tid, bytes: &[u8]) {
        out.extend_from_slice(&rowid.get().to_le_bytes());
        out.extend_from_slice(&tid.get().to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        self.rows += 1;
    }

    /// Writes the row count into the header.
    pub fn finish(self, out: &mut [u8]) {
        out[self.count_at..self.count_at + 4].copy_from_slice(&self.rows.to_le_bytes());
    }
}

fn put_table(out: &mut Vec<u8>, t: TableId) {
    out.extend_from_slice(&t.database.to_le_bytes());
    out.extend_from_slice(&t.relation.to_le_bytes());
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_def(out: &mut Vec<u8>, def: &TableDef) {
    put_name(out, &def.name);
    out.extend_from_slice(&(def.columns.len() as u16).to_le_bytes());
    for c in &def.columns {
        put_name(out, &c.name);
        let (tag, p) = type_tag(c.ty);
        out.push(tag);
        out.extend_from_slice(&p.to_le_bytes());
        out.push(c.nullable as u8);
    }
}

fn put_residency(out: &mut Vec<u8>, r: &Residency) {
    let (kind, file) = match r {
        Residency::Loaded => (0u8, None),
        Residency::Spilled(f) => (1, Some(f)),
        Residency::Discarded => (2, None),
    };
    out.push(kind);
    put_name(out, file.map_or("", |f| &f.name));
    out.extend_from_slice(&file.map_or(0, |f| f.rows).to_le_bytes());
    out.extend_from_slice(&file.map_or(0, |f| f.bytes).to_le_bytes());
    out.extend_from_slice(&file.map_or(0, |f| f.max_tid.get()).to_le_bytes());
}

fn put_index(out: &mut Vec<u8>, def: &IndexDef) {
    out.extend_from_slice(&def.id.to_le_bytes());
    put_name(out, &def.name);
    out.push(def.unique as u8 | (def.primary as u8) << 1);
    out.extend_from_slice(&(def.columns.len() as u16).to_le_bytes());
    for c in &def.columns {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

impl LogRecord {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LogRecord::Commit {
                tid,
                emptied,
                writes,
            } => {
                // One record whatever its size: this form is for records that fit.
                let mut r = CommitRecords::new(*tid, usize::MAX);
                for e in emptied {
                    match e {
                        Emptying::Truncate(t) => r.truncate(*t),
                        Emptying::Redefine(d) => r.redefine(d),
                        Emptying::Reside { table, to, from } => {
                            r.reside(*table, to, from.as_deref())
                        }
                    }
                }
                for w in writes {
                    r.push(w.table, w.rowid, w.after.as_deref());
                }
                out.extend_from_slice(&r.finish().pop().expect("one record"));
            }
            LogRecord::CreateTable { table, def } => {
                out.push(CREATE_TABLE);
                put_table(out, *table);
                put_def(out, def);
            }
            LogRecord::DropTable { table } => {
                out.push(DROP_TABLE);
                put_table(out, *table);
            }
            LogRecord::CreateIndex { table, def } => {
                out.push(CREATE_INDEX);
                put_table(out, *table);
                put_index(out, def);
            }
            LogRecord::DropIndex { table, id } => {
                out.push(DROP_INDEX);
                put_table(out, *table);
                out.extend_from_slice(&id.to_le_bytes());
            }
            LogRecord::Residency { table, residency } => {
                out.push(RESIDENCY);
                put_table(out, *table);
                put_residency(out, residency);
            }
            LogRecord::Xact { tid, xid } => {
                out.push(XACT);
                out.extend_from_slice(&tid.get().to_le_bytes());
                out.extend_from_slice(&xid.to_le_bytes());
            }
            LogRecord::Rows { table, rows } => {
                let mut enc = RowsEncoder::start(out, *table);
                for (rowid, tid, bytes) in rows {
                    enc.push(out, *rowid, *tid, bytes);
                }
                enc.finish(out);
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<LogRecord, DecodeError> {
        // Row-carrying records: parsed once, by `decode_rows`, then owned.
        match b.first() {
            Some(&COMMIT) => {
                let rows = decode_rows(b)?.expect("a commit");
                let tid = commit_tid(b).expect("decoded above");
                let writes = rows
                    .into_iter()
                    .map(|w| RowImage {
                        table: w.table,
                        rowid: w.rowid,
                        after: w.after.map(<[u8]>::to_vec),
                    })
                    .collect();
                let emptied = commit_emptied(b)?;
                return Ok(LogRecord::Commit {
                    tid,
                    emptied,
                    writes,
                });
            }
            Some(&ROWS) => {
                let rows = decode_rows(b)?.expect("rows");
                let table = Reader { b, pos: 1 }.table()?;
                let rows = rows
                    .into_iter()
                    .map(|r| (r.rowid, r.tid, r.after.expect("rows have data").to_vec()))
                    .collect();
                return Ok(LogRecord::Rows { table, rows });
            }
            _ => {}
        }
        let mut r = Reader { b, pos: 0 };
        let rec = match r.u8()? {
            CREATE_TABLE => {
                let table = r.table()?;
                let def = r.def(table)?;
                LogRecord::CreateTable { table, def }
            }
            DROP_TABLE => LogRecord::DropTable { table: r.table()? },
            CREATE_INDEX => LogRecord::CreateIndex {
                table: r.table()?,
                def: r.index()?,
            },
            DROP_INDEX => LogRecord::DropIndex {
                table: r.table()?,
                id: r.u32()?,
            },
            XACT => LogRecord::Xact {
                tid: Tid(r.u64()?),
                xid: r.u32()?,
            },
            RESIDENCY => LogRecord::Residency {
                table: r.table()?,
                residency: r.residency()?,
            },
            _ => return Err(DecodeError("unknown record type")),
        };
        if r.pos != b.len() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(rec)
    }
}

/// Kind of a commit entry that empties its table.
const TRUNCATE_ENTRY: u8 = 2;
/// Kind of a commit entry that empties its table and gives it a new definition.
const REDEFINE_ENTRY: u8 = 3;
/// Kind of a commit entry that empties its table and gives it a new residency.
const RESIDENCY_ENTRY: u8 = 4;

/// What a commit or commit-part payload does to whole tables (its truncate and
/// redefine entries), in order; empty for other kinds.
pub fn commit_emptied(b: &[u8]) -> Result<Vec<Emptying>, DecodeError> {
    let mut out = Vec::new();
    if !matches!(b.first(), Some(&COMMIT) | Some(&COMMIT_PART)) {
        return Ok(out);
    }
    let mut r = Reader { b, pos: 9 };
    let n = r.u32()? as usize;
    for _ in 0..n {
        let table = r.table()?;
        r.u64()?;
        match r.u8()? {
            0 => {
                let len = r.u32()? as usize;
                r.bytes(len)?;
            }
            1 => {}
            TRUNCATE_ENTRY => out.push(Emptying::Truncate(table)),
            REDEFINE_ENTRY => {
                let len = r.u32()? as usize;
                let mut body = Reader {
                    b: r.bytes(len)?,
                    pos: 0,
                };
                let def = body.def(table)?;
                let n = body.u16()? as usize;
                let mut indexes = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    indexes.push(body.index()?);
                }
                if body.pos != body.b.len() {
                    return Err(DecodeError("trailing bytes in a redefine entry"));
                }
                out.push(Emptying::Redefine(Redefinition {
                    table,
                    def,
                    indexes,
                }));
            }
            RESIDENCY_ENTRY => {
                let len = r.u32()? as usize;
                let mut body = Reader {
                    b: r.bytes(len)?,
                    pos: 0,
                };
                let to = body.residency()?;
                let from = body.name()?;
                if !from.is_empty() && !crate::unload::valid_spill_name(&from) {
                    return Err(DecodeError("bad spill file name in a residency entry"));
                }
                if body.pos != body.b.len() {
                    return Err(DecodeError("trailing bytes in a residency entry"));
                }
                out.push(Emptying::Reside {
                    table,
                    to,
                    from: (!from.is_empty()).then_some(from),
                });
            }
            _ => return Err(DecodeError("bad write kind")),
        }
    }
    Ok(out)
}

/// Appends one row image of a commit record.
fn encode_write(out: &mut Vec<u8>, table: TableId, rowid: RowId, after: Option<&[u8]>) {
    put_table(out, table);
    out.extend_from_slice(&rowid.get().to_le_bytes());
    match after {
        Some(bytes) => {
            out.push(0);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.push(1),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(DecodeError("truncated record"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn table(&mut self) -> Result<TableId, DecodeError> {
        Ok(TableId::new(self.u32()?, self.u32()?))
    }
    fn name(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| DecodeError("name is not UTF-8"))
    }
    /// A table definition (its database is `table`'s).
    fn def(&mut self, table: TableId) -> Result<TableDef, DecodeError> {
        let name = self.name()?;
        let n = self.u16()? as usize;
        let mut columns = Vec::with_capacity(n.min(crate::catalog::MAX_COLUMNS));
        for _ in 0..n {
            let name = self.name()?;
            let tag = self.u8()?;
            let p = self.u32()?;
            let ty = type_from_tag(tag, p).ok_or(DecodeError("bad column type"))?;
            let nullable = self.u8()? != 0;
            columns.push(ColumnDef { name, ty, nullable });
        }
        Ok(TableDef {
            name,
            columns,
            database: table.database,
        })
    }
    fn residency(&mut self) -> Result<Residency, DecodeError> {
        let kind = self.u8()?;
        let name = self.name()?;
        let rows = self.u64()?;
        let bytes = self.u64()?;
        let max_tid = Tid(self.u64()?);
        match (kind, name.is_empty()) {
            (0, true) => Ok(Residency::Loaded),
            (1, false) if crate::unload::valid_spill_name(&name) => {
                Ok(Residency::Spilled(SpillFile {
                    name,
                    rows,
                    bytes,
                    max_tid,
                }))
            }
            (2, true) => Ok(Residency::Discarded),
            _ => Err(DecodeError("bad residency")),
        }
    }
    fn index(&mut self) -> Result<IndexDef, DecodeError> {
        let id = self.u32()?;
        let name = self.name()?;
        let flags = self.u8()?;
        if flags > 3 {
            return Err(DecodeError("bad index flags"));
        }
        let n = self.u16()? as usize;
        if n > crate::index::MAX_INDEX_COLUMNS {
            return Err(DecodeError("too many index columns"));
        }
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            columns.push(self.u16()?);
        }
        Ok(IndexDef {
            id,
            name,
            columns,
            unique: flags & 1 != 0,
            primary: flags & 2 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Taking each payload as soon as it is complete, with one reused buffer, gives
    /// the payloads `finish` gives: the xact record, the parts, the commit record.
    #[test]
    fn streamed_payloads_are_the_finished_ones() {
        let fill = |r: &mut CommitRecords, i: u64| {
            let row = vec![i as u8; (i % 50) as usize];
            r.push(
                TableId::new(1, 2),
                RowId(i),
                (!i.is_multiple_of(7)).then_some(&row[..]),
            );
        };
        for (rows, xid) in [(0u64, None), (3, Some(9)), (400, None), (400, Some(7))] {
            let mut whole = CommitRecords::new(Tid(5), 300);
            let mut streamed = CommitRecords::new(Tid(5), 300);
            if let Some(x) = xid {
                whole.xact(x);
                streamed.xact(x);
            }
            whole.truncate(TableId::new(1, 3));
            streamed.truncate(TableId::new(1, 3));
            let mut got = Vec::new();
            let mut buf = Vec::new();
            for i in 0..rows {
                fill(&mut whole, i);
                fill(&mut streamed, i);
                while streamed.take_ready(&mut buf) {
                    got.push(buf.clone());
                }
            }
            assert!(!streamed.ended());
            streamed.end();
            while streamed.take_ready(&mut buf) {
                got.push(buf.clone());
            }
            let want = whole.finish();
            assert_eq!(got, want, "{rows} rows");
            assert_eq!(want.len() > 3, rows > 10, "{rows} rows");
            assert!(want[..want.len() - 1]
                .iter()
                .skip(xid.is_some() as usize)
                .all(|p| p[0] == COMMIT_PART));
            assert_eq!(want.last().unwrap()[0], COMMIT);
        }
    }

    fn samples() -> Vec<LogRecord> {
        vec![
            LogRecord::Commit {
                tid: Tid(42),
                emptied: vec![
                    Emptying::Truncate(TableId::new(5, 8)),
                    Emptying::Redefine(Redefinition {
                        table: TableId::new(5, 7),
                        def: TableDef {
                            database: 5,
                            name: "t".into(),
                            columns: vec![
                                ColumnDef::new("a", ColumnType::Int8, false),
                                ColumnDef::new("x", ColumnType::Dropped, true),
                                ColumnDef::new(
                                    "p",
                                    ColumnType::Other {
                                        len: 16,
                                        byval: false,
                                    },
                                    true,
                                ),
                                ColumnDef::new("m", ColumnType::MacAddr(8), true),
                                ColumnDef::new("n", ColumnType::Name, true),
                            ],
                        },
                        indexes: vec![IndexDef {
                            id: 9,
                            name: "t_pkey".into(),
                            columns: vec![0],
                            unique: true,
                            primary: true,
                        }],
                    }),
                    Emptying::Reside {
                        table: TableId::new(5, 9),
                        to: Residency::Loaded,
                        from: Some("5_9_1a.spill".into()),
                    },
                    Emptying::Reside {
                        table: TableId::new(5, 10),
                        to: Residency::Spilled(SpillFile {
                            name: "5_10_2b.spill".into(),
                            rows: 7,
                            bytes: 900,
                            max_tid: Tid(77),
                        }),
                        from: None,
                    },
                    Emptying::Reside {
                        table: TableId::new(5, 11),
                        to: Residency::Discarded,
                        from: None,
                    },
                ],
                writes: vec![
                    RowImage {
                        table: TableId::new(5, 7),
                        rowid: RowId(1),
                        after: Some(vec![1, 2, 3]),
                    },
                    RowImage {
                        table: TableId::new(5, 7),
                        rowid: RowId(2),
                        after: None,
                    },
                    RowImage {
                        table: TableId::new(6, 9),
                        rowid: RowId(u64::MAX),
                        after: Some(vec![]),
                    },
                ],
            },
            LogRecord::CreateTable {
                table: TableId::new(16384, 16390),
                def: TableDef {
                    database: 16384,
                    name: "accounts".into(),
                    columns: vec![
                        ColumnDef::new("id", ColumnType::Int4, false),
                        ColumnDef::new("owner", ColumnType::Varchar(40), true),
                        ColumnDef::new("c", ColumnType::Char(3), true),
                        ColumnDef::new("j", ColumnType::Jsonb, true),
                    ],
                },
            },
            LogRecord::DropTable {
                table: TableId::new(16384, 16390),
            },
            LogRecord::CreateIndex {
                table: TableId::new(16384, 16390),
                def: IndexDef {
                    id: 3,
                    name: "accounts_pkey".into(),
                    columns: vec![0, 2],
                    unique: true,
                    primary: true,
                },
            },
            LogRecord::DropIndex {
                table: TableId::new(16384, 16390),
                id: 3,
            },
            LogRecord::Residency {
                table: TableId::new(16384, 16390),
                residency: Residency::Spilled(SpillFile {
                    name: "16384_16390_ff.spill".into(),
                    rows: 1,
                    bytes: 2,
                    max_tid: Tid(3),
                }),
            },
            LogRecord::Residency {
                table: TableId::new(16384, 16390),
                residency: Residency::Discarded,
            },
            LogRecord::Rows {
                table: TableId::new(1, 3),
                rows: vec![(RowId(1), Tid(10), vec![1, 2]), (RowId(5), Tid(11), vec![])],
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        for rec in samples() {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            assert_eq!(LogRecord::decode(&buf).unwrap(), rec);
        }
    }

    #[test]
    fn borrowed_rows_match_the_decoded_records() {
        for rec in samples() {
            let mut b = Vec::new();
            rec.encode(&mut b);
            let rows = decode_rows(&b).unwrap();
            match &rec {
                LogRecord::Commit { tid, writes, .. } => {
                    let want: Vec<_> = writes
                        .iter()
                        .map(|w| RowRef {
                            table: w.table,
                            rowid: w.rowid,
                            tid: *tid,
                            after: w.after.as_deref(),
                        })
                        .collect();
                    assert_eq!(rows, Some(want));
                }
                LogRecord::Rows { table, rows: r } => {
                    let want: Vec<_> = r
                        .iter()
                        .map(|(rowid, tid, bytes)| RowRef {
                            table: *table,
                            rowid: *rowid,
                            tid: *tid,
                            after: Some(bytes),
                        })
                        .collect();
                    assert_eq!(rows, Some(want));
                }
                _ => assert_eq!(rows, None),
            }
            // Every truncation of a row payload is an error, never a panic.
            if rows.is_some() {
                for n in 0..b.len() {
                    assert!(decode_rows(&b[..n]).is_err(), "prefix {n} of {rec:?}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_valid_record_never_a_panic() {
        for rec in samples() {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            for cut in 0..buf.len() {
                assert!(
                    LogRecord::decode(&buf[..cut]).is_err(),
                    "cut at {cut} accepted"
                );
            }
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut b = buf.clone();
                    b[i] ^= 1 << bit;
                    let _ = LogRecord::decode(&b);
                }
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert_eq!(
                LogRecord::decode(&longer),
                Err(DecodeError("trailing bytes"))
            );
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let junk: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            let _ = LogRecord::decode(&junk);
        }
    }
}
