//! PostgreSQL types and datums <-> engine column types and packed rows
//! ("Pack" and "Unpack" in MOT's words).

use memfdw_engine::keys::trim_blanks;
use memfdw_engine::RowId;
use memfdw_engine::{ColumnDef, ColumnType, Error, RowLayout, TableDef};
use pgrx::pg_sys;
use std::ffi::CStr;

/// How one column's datum is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Bool,
    /// A one-byte by-value type ("char"): the raw byte.
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
    /// Pass-by-reference fixed-width value of this many bytes (timetz, interval, uuid).
    ByRef(usize),
    /// A varlena; its payload is stored without the header.
    Varlena,
    /// A `character(n)` value: its payload without the header and without its
    /// trailing blanks, which `datum` puts back (see [`blank_padded`]).
    Blank(u32),
}

impl Codec {
    pub fn of(ty: ColumnType) -> Codec {
        use ColumnType::*;
        match ty {
            Bool => Codec::Bool,
            Char1
            | Other {
                len: 1,
                byval: true,
            } => Codec::I8,
            Int2
            | Other {
                len: 2,
                byval: true,
            } => Codec::I16,
            Int4
            | Date
            | Oid
            | Other {
                len: 4,
                byval: true,
            } => Codec::I32,
            Int8
            | Time
            | Timestamp
            | TimestampTz
            | Money
            | Other {
                len: 8,
                byval: true,
            } => Codec::I64,
            Float4 => Codec::F32,
            Float8 => Codec::F64,
            TimeTz => Codec::ByRef(12),
            Interval | Uuid => Codec::ByRef(16),
            Name => Codec::ByRef(64),
            MacAddr(n) => Codec::ByRef(n as usize),
            Other { len, .. } if len > 0 => Codec::ByRef(len as usize),
            // Always NULL: never read or written.
            Dropped => Codec::ByRef(0),
            Char(n) => Codec::Blank(n),
            Numeric | Varchar(_) | Text | Bytea | Json | Jsonb | Other { .. } => Codec::Varlena,
        }
    }
}

/// The engine column type for a PostgreSQL type, or None if memory tables do not
/// support it. Domains map to their base type.
pub fn column_type(typid: pg_sys::Oid, typmod: i32) -> Option<ColumnType> {
    let mut typmod = typmod;
    // SAFETY: catalog lookup; errors surface as PostgreSQL errors.
    let base = unsafe { pg_sys::getBaseTypeAndTypmod(typid, &mut typmod) };
    let len = |m: i32| if m >= 4 { (m - 4) as u32 } else { 0 };
    Some(match base {
        pg_sys::BOOLOID => ColumnType::Bool,
        pg_sys::INT2OID => ColumnType::Int2,
        pg_sys::INT4OID => ColumnType::Int4,
        pg_sys::INT8OID => ColumnType::Int8,
        pg_sys::FLOAT4OID => ColumnType::Float4,
        pg_sys::FLOAT8OID => ColumnType::Float8,
        pg_sys::NUMERICOID => ColumnType::Numeric,
        pg_sys::BPCHAROID if typmod >= 5 => ColumnType::Char(len(typmod)),
        pg_sys::BPCHAROID => ColumnType::Varchar(0),
        pg_sys::VARCHAROID => ColumnType::Varchar(len(typmod)),
        pg_sys::TEXTOID => ColumnType::Text,
        pg_sys::BYTEAOID => ColumnType::Bytea,
        pg_sys::DATEOID => ColumnType::Date,
        pg_sys::TIMEOID => ColumnType::Time,
        pg_sys::TIMETZOID => ColumnType::TimeTz,
        pg_sys::TIMESTAMPOID => ColumnType::Timestamp,
        pg_sys::TIMESTAMPTZOID => ColumnType::TimestampTz,
        pg_sys::INTERVALOID => ColumnType::Interval,
        pg_sys::UUIDOID => ColumnType::Uuid,
        pg_sys::JSONOID => ColumnType::Json,
        pg_sys::JSONBOID => ColumnType::Jsonb,
        pg_sys::OIDOID => ColumnType::Oid,
        pg_sys::CHAROID => ColumnType::Char1,
        pg_sys::NAMEOID => ColumnType::Name,
        pg_sys::MONEYOID => ColumnType::Money,
        pg_sys::MACADDROID => ColumnType::MacAddr(6),
        pg_sys::MACADDR8OID => ColumnType::MacAddr(8),
        _ => {
            // Any other type is stored by its length: fixed (by value or not) or a
            // varlena (detoasted). C strings (length -2) are not column types.
            let (mut len, mut byval) = (0i16, false);
            // SAFETY: syscache lookup; raises an error for an unknown type.
            unsafe { pg_sys::get_typlenbyval(base, &mut len, &mut byval) };
            match (len, byval) {
                (-1, false) => ColumnType::Other { len, byval },
                (1 | 2 | 4 | 8, true) => ColumnType::Other { len, byval },
                (l, false) if l > 0 => ColumnType::Other { len, byval },
                _ => return None,
            }
        }
    })
}

fn type_name(typid: pg_sys::Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd C string.
    unsafe { CStr::from_ptr(pg_sys::format_type_be(typid)) }
        .to_string_lossy()
        .into_owned()
}

pub fn relation_name(relid: pg_sys::Oid) -> String {
    // SAFETY: syscache lookup; null if the relation is gone.
    let p = unsafe { pg_sys::get_rel_name(relid) };
    if p.is_null() {
        format!("{}", relid.to_u32())
    } else {
        // SAFETY: non-null palloc'd C string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Attributes of a tuple descriptor.
///
/// # Safety
/// `td` must be a valid tuple descriptor.
pub unsafe fn attributes<'a>(td: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: forwarded contract: `attrs` holds `natts` entries.
    unsafe { (*td).attrs.as_slice((*td).natts as usize) }
}

/// The engine definition of relation `rel`, refusing unsupported types.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn table_def(rel: pg_sys::Relation) -> Result<TableDef, Error> {
    // SAFETY: forwarded contract.
    let (relid, td) = unsafe { ((*rel).rd_id, (*rel).rd_att) };
    let mut columns = Vec::new();
    // SAFETY: the relation's own descriptor.
    for att in unsafe { attributes(td) } {
        let name = pgrx::name_data_to_str(&att.attname).to_owned();
        if att.attisdropped {
            // Kept as an always-NULL column without storage: engine column p stays
            // attribute p + 1.
            columns.push(ColumnDef {
                name,
                ty: ColumnType::Dropped,
                nullable: true,
            });
            continue;
        }
        let Some(ty) = column_type(att.atttypid, att.atttypmod) else {
            return Err(Error::UnsupportedType {
                column: name,
                type_name: type_name(att.atttypid),
            });
        };
        columns.push(ColumnDef {
            name,
            ty,
            nullable: !att.attnotnull,
        });
    }
    Ok(TableDef {
        name: relation_name(relid),
        columns,
        // SAFETY: this backend's database, set at connection.
        database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
    })
}

/// Packs tuple slots into engine rows, reusing its buffers.
pub struct Packer {
    pub codecs: Vec<Codec>,
    scratch: Vec<[u8; 16]>,
    /// Per-row value list, reused; empty between calls (it never holds a reference
    /// past `pack`).
    vals: Vec<Option<&'static [u8]>>,
    pub out: Vec<u8>,
}

impl Packer {
    pub fn new(def: &TableDef) -> Packer {
        Packer {
            codecs: def.columns.iter().map(|c| Codec::of(c.ty)).collect(),
            scratch: vec![[0u8; 16]; def.columns.len()],
            vals: Vec::with_capacity(def.columns.len()),
            out: Vec::new(),
        }
    }

    /// Packs the values of `slot` into `self.out`.
    ///
    /// # Safety
    /// `slot` must be a valid slot of the table's row type.
    pub unsafe fn pack(
        &mut self,
        layout: &RowLayout,
        slot: *mut pg_sys::TupleTableSlot,
    ) -> Result<(), Error> {
        // SAFETY: forwarded contract; slot_getallattrs fills tts_values/tts_isnull.
        let (values, nulls) = unsafe {
            pg_sys::slot_getallattrs(slot);
            let n = (*(*slot).tts_tupleDescriptor).natts as usize;
            (
                std::slice::from_raw_parts((*slot).tts_values, n),
                std::slice::from_raw_parts((*slot).tts_isnull, n),
            )
        };
        let mut vals = std::mem::take(&mut self.vals);
        vals.clear();
        for (i, codec) in self.codecs.iter().enumerate() {
            if nulls[i] {
                vals.push(None);
                continue;
            }
            // SAFETY: a datum of this column's type.
            let v = unsafe { datum_bytes(*codec, values[i], &mut self.scratch[i]) };
            // SAFETY: the bytes (a scratch entry, the slot's datum or its detoasted copy)
            // stay valid and unwritten until `vals` is cleared below, before returning.
            vals.push(Some(unsafe {
                std::slice::from_raw_parts(v.as_ptr(), v.len())
            }));
        }
        let r = layout.pack_into(&vals, &mut self.out);
        vals.clear();
        self.vals = vals;
        r
    }
}

/// The packed-row bytes of datum `d` (not NULL): in `scratch` for by-value types, in
/// the datum itself (or its detoasted copy, in the current memory context) otherwise.
///
/// # Safety
/// `d` must be a datum of a type `codec` describes.
pub unsafe fn datum_bytes(codec: Codec, d: pg_sys::Datum, s: &mut [u8; 16]) -> &[u8] {
    match codec {
        Codec::Bool => {
            s[0] = (d.value() != 0) as u8;
            &s[..1]
        }
        Codec::I8 => {
            s[0] = d.value() as u8;
            &s[..1]
        }
        Codec::I16 => {
            s[..2].copy_from_slice(&(d.value() as i16).to_le_bytes());
            &s[..2]
        }
        Codec::I32 | Codec::F32 => {
            s[..4].copy_from_slice(&(d.value() as u32).to_le_bytes());
            &s[..4]
        }
        Codec::I64 | Codec::F64 => {
            s[..8].copy_from_slice(&(d.value() as u64).to_le_bytes());
            &s[..8]
        }
        Codec::ByRef(n) => {
            // SAFETY: a by-reference datum of this type points at n bytes.
            unsafe { std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), n) }
        }
        Codec::Varlena | Codec::Blank(_) => {
            // SAFETY: a varlena datum; detoasting copies into the current memory
            // context if needed. A plain value (a 1- or 4-byte header, neither
            // compressed nor a TOAST pointer) is read in place, as
            // `pg_detoast_datum_packed` would return it, without a guarded call into
            // PostgreSQL per value.
            let b = unsafe {
                let mut p: *mut pg_sys::varlena = d.cast_mut_ptr();
                if pgrx::varatt_is_1b_e(p) || pgrx::varatt_is_4b_c(p) {
                    p = pg_sys::pg_detoast_datum_packed(p);
                }
                std::slice::from_raw_parts(
                    pgrx::vardata_any(p) as *const u8,
                    pgrx::varsize_any_exhdr(p),
                )
            };
            if matches!(codec, Codec::Blank(_)) {
                trim_blanks(b)
            } else {
                b
            }
        }
    }
}

/// Blank-padded storage of `character(n)` columns. PostgreSQL pads every value of a
/// `character(n)` column to n characters on input (a typmod coercion, also in COPY,
/// UPDATE, defaults and ALTER ... TYPE), and bpchar's operators, hashing, `length()`
/// and casts to text ignore trailing blanks; heap stores the padding, so a
/// `character(84)` filler holding `''` takes 85 bytes per row. Memory tables store the
/// value without its trailing blanks and pad it back to n characters when they hand
/// it out, so every value reads back byte for byte as heap returns it (`octet_length`
/// included). Rows written before this stored the padding; they read back the same
/// (nothing is added to a value of n characters), index keys drop trailing blanks in
/// both cases (`keys`), and in-memory GROUP BY trims them before grouping.
///
/// The number of blanks to add is n minus the stored bytes' length in characters:
/// their byte count when they are ASCII, else `pg_mbstrlen_with_len`.
fn blank_padded(n: u32, b: &[u8]) -> usize {
    let chars = if b.is_ascii() {
        b.len()
    } else {
        // SAFETY: reads b.len() bytes of a value stored from a datum of the server's
        // encoding.
        unsafe { pg_sys::pg_mbstrlen_with_len(b.as_ptr() as *const _, b.len() as i32) as usize }
    };
    (n as usize).saturating_sub(chars)
}

/// Unpacks `row` into the virtual tuple `slot` (values allocated in the current
/// memory context). Columns not `needed` are returned as NULL without being read.
///
/// # Safety
/// `slot` must be a valid slot of the table's row type; `row` packed by `layout`.
pub unsafe fn unpack(
    codecs: &[Codec],
    needed: Option<&[bool]>,
    layout: &RowLayout,
    row: &[u8],
    slot: *mut pg_sys::TupleTableSlot,
) {
    // SAFETY: forwarded contract.
    unsafe {
        clear_slot(slot);
        let n = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
        for (i, codec) in codecs.iter().enumerate().take(n) {
            let value = if needed.is_none_or(|nd| nd[i]) {
                layout.get(row, i)
            } else {
                None
            };
            match value {
                None => {
                    nulls[i] = true;
                    values[i] = pg_sys::Datum::from(0usize);
                }
                Some(b) => {
                    nulls[i] = false;
                    values[i] = datum(*codec, b);
                }
            }
        }
    }
}

/// # Safety
/// Allocates in the current memory context.
pub unsafe fn datum(codec: Codec, b: &[u8]) -> pg_sys::Datum {
    match codec {
        Codec::Bool => pg_sys::Datum::from(b[0] != 0),
        Codec::I8 => pg_sys::Datum::from(b[0] as i8),
        Codec::I16 => pg_sys::Datum::from(i16::from_le_bytes([b[0], b[1]])),
        Codec::I32 => pg_sys::Datum::from(i32::from_le_bytes(b[..4].try_into().unwrap())),
        Codec::F32 => pg_sys::Datum::from(u32::from_le_bytes(b[..4].try_into().unwrap())),
        Codec::I64 | Codec::F64 => {
            pg_sys::Datum::from(u64::from_le_bytes(b[..8].try_into().unwrap()))
        }
        Codec::ByRef(n) => {
            // SAFETY: palloc returns n writable bytes (or raises an error).
            unsafe {
                let p = pg_sys::palloc(n) as *mut u8;
                std::ptr::copy_nonoverlapping(b.as_ptr(), p, n);
                pg_sys::Datum::from(p)
            }
        }
        Codec::Varlena | Codec::Blank(_) => {
            let pad = match codec {
                Codec::Blank(n) => blank_padded(n, b),
                _ => 0,
            };
            // SAFETY: as above; a 4-byte header followed by the payload and its padding.
            unsafe {
                let total = b.len() + pad + pg_sys::VARHDRSZ;
                let p = pg_sys::palloc(total) as *mut pg_sys::varlena;
                pgrx::set_varsize_4b(p, total as i32);
                let data = (p as *mut u8).add(pg_sys::VARHDRSZ);
                std::ptr::copy_nonoverlapping(b.as_ptr(), data, b.len());
                std::ptr::write_bytes(data.add(b.len()), b' ', pad);
                pg_sys::Datum::from(p)
            }
        }
    }
}

/// Row ids travel through the executor as `ctid`: 47 bits of row id in the block
/// number and a 1-based offset (offset 0 is invalid in an item pointer).
pub fn rowid_to_ctid(rowid: RowId, tid: &mut pg_sys::ItemPointerData) {
    let rowid = rowid.get();
    let block = (rowid >> 15) as u32;
    tid.ip_blkid.bi_hi = (block >> 16) as u16;
    tid.ip_blkid.bi_lo = (block & 0xffff) as u16;
    tid.ip_posid = ((rowid & 0x7fff) + 1) as u16;
}

pub fn ctid_to_rowid(tid: &pg_sys::ItemPointerData) -> RowId {
    let block = ((tid.ip_blkid.bi_hi as u64) << 16) | tid.ip_blkid.bi_lo as u64;
    RowId((block << 15) | (tid.ip_posid as u64 - 1))
}

/// Empties `slot` like `ExecClearTuple`, without a guarded call into PostgreSQL per
/// row when the slot holds nothing to free (the common case on our scan slots, which
/// only ever receive virtual tuples).
///
/// # Safety
/// `slot` must be a valid slot.
pub unsafe fn clear_slot(slot: *mut pg_sys::TupleTableSlot) {
    // SAFETY: forwarded contract; mirrors tts_virtual_clear / tts_heap_clear for a slot
    // whose memory is not ours to free (TTS_FLAG_SHOULDFREE unset).
    unsafe {
        let ops = (*slot).tts_ops;
        let heap = std::ptr::eq(ops, &raw const pg_sys::TTSOpsHeapTuple);
        let virt = std::ptr::eq(ops, &raw const pg_sys::TTSOpsVirtual);
        if (*slot).tts_flags & pg_sys::TTS_FLAG_SHOULDFREE as u16 != 0 || !(heap || virt) {
            pg_sys::ExecClearTuple(slot);
            return;
        }
        (*slot).tts_nvalid = 0;
        (*slot).tts_flags |= pg_sys::TTS_FLAG_EMPTY as u16;
        (*slot).tts_tid.ip_blkid.bi_hi = 0xffff;
        (*slot).tts_tid.ip_blkid.bi_lo = 0xffff;
        (*slot).tts_tid.ip_posid = 0;
        if heap {
            let h = slot as *mut pg_sys::HeapTupleTableSlot;
            (*h).tuple = std::ptr::null_mut();
            (*h).off = 0;
        }
    }
}

/// Marks the values of an emptied slot valid, like `ExecStoreVirtualTuple`.
///
/// # Safety
/// `slot` must be empty (see [`clear_slot`]) with all its values and nulls set.
pub unsafe fn store_virtual(slot: *mut pg_sys::TupleTableSlot) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: forwarded contract; mirrors ExecStoreVirtualTuple.
    unsafe {
        (*slot).tts_flags &= !(pg_sys::TTS_FLAG_EMPTY as u16);
        (*slot).tts_nvalid = (*(*slot).tts_tupleDescriptor).natts as pg_sys::AttrNumber;
        slot
    }
}

/// The catalog name of engine column `pos` of memory table `relid` (engine column p is
/// attribute p + 1; names follow RENAME COLUMN only in the catalog).
pub fn column_name(relid: pg_sys::Oid, pos: u16) -> String {
    // SAFETY: catalog lookup; a palloc'd NUL-terminated name or null.
    unsafe {
        let n = pg_sys::get_attname(relid, (pos + 1) as pg_sys::AttrNumber, true);
        if n.is_null() {
            return format!("column {}", pos + 1);
        }
        std::ffi::CStr::from_ptr(n).to_string_lossy().into_owned()
    }
}

/// The engine column of memory table `relid` that the catalog calls `name`.
pub fn column_position(relid: pg_sys::Oid, name: &str, ncols: usize) -> Option<u16> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: catalog lookup.
    let attno = unsafe { pg_sys::get_attnum(relid, c.as_ptr()) };
    (attno > 0 && (attno as usize) <= ncols).then(|| (attno - 1) as u16)
}

/// `id` quoted as an SQL identifier where needed (PostgreSQL's quote_identifier).
pub fn quote_ident(id: &str) -> String {
    let c = std::ffi::CString::new(id).expect("no NUL in identifiers");
    // SAFETY: returns its argument or a palloc'd quoted copy, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}
