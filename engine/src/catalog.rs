//! Table definitions: column types, validation, and the table directory entry.

use crate::error::{Error, Result};

/// Most columns a memory table may have.
pub const MAX_COLUMNS: usize = 1024;
/// Longest table or column name, in bytes (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_NAME_LEN: usize = 63;
/// Largest char(n)/varchar(n) length PostgreSQL accepts.
pub const MAX_CHAR_LEN: i64 = 10 * 1024 * 1024;

/// Column types a memory table stores. Fixed-width types hold PostgreSQL's native
/// (little-endian, in-memory) representation; variable-width ones hold the payload
/// of the varlena without its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// char(n): n characters, blank-padded by PostgreSQL.
    Char(u32),
    /// varchar(n); 0 = no limit.
    Varchar(u32),
    Text,
    Bytea,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    /// oid: unsigned 32-bit.
    Oid,
    /// PostgreSQL's one-byte "char", compared unsigned.
    Char1,
    /// name: 64 bytes, NUL-padded, compared as bytes up to the first NUL.
    Name,
    /// money: a 64-bit count of cents.
    Money,
    /// macaddr (6 bytes) or macaddr8 (8 bytes), compared as bytes.
    MacAddr(u8),
    /// Any other type, stored but without a key encoding: `len` bytes (by value when
    /// `byval`, then 1, 2, 4 or 8), or a varlena when `len` is -1.
    Other {
        len: i16,
        byval: bool,
    },
    /// A dropped column: always NULL, no storage (it keeps the positions of later
    /// columns equal to PostgreSQL's attribute numbers).
    Dropped,
}

impl ColumnType {
    /// Bytes of a fixed-width value, or None for variable-width types.
    pub fn fixed_width(self) -> Option<usize> {
        use ColumnType::*;
        Some(match self {
            Bool => 1,
            Int2 => 2,
            Int4 | Float4 | Date => 4,
            Int8 | Float8 | Time | Timestamp | TimestampTz => 8,
            TimeTz => 12,
            Interval | Uuid => 16,
            Oid => 4,
            Char1 => 1,
            Name => 64,
            Money => 8,
            MacAddr(n) => n as usize,
            Other { len, .. } if len > 0 => len as usize,
            Dropped => 0,
            Numeric | Char(_) | Varchar(_) | Text | Bytea | Json | Jsonb | Other { .. } => {
                return None
            }
        })
    }

    pub fn name(self) -> String {
        use ColumnType::*;
        match self {
            Bool => "boolean".into(),
            Int2 => "smallint".into(),
            Int4 => "integer".into(),
            Int8 => "bigint".into(),
            Float4 => "real".into(),
            Float8 => "double precision".into(),
            Numeric => "numeric".into(),
            Char(n) => format!("character({n})"),
            Varchar(0) => "character varying".into(),
            Varchar(n) => format!("character varying({n})"),
            Text => "text".into(),
            Bytea => "bytea".into(),
            Date => "date".into(),
            Time => "time without time zone".into(),
            TimeTz => "time with time zone".into(),
            Timestamp => "timestamp without time zone".into(),
            TimestampTz => "timestamp with time zone".into(),
            Interval => "interval".into(),
            Uuid => "uuid".into(),
            Json => "json".into(),
            Jsonb => "jsonb".into(),
            Oid => "oid".into(),
            Char1 => "\"char\"".into(),
            Name => "name".into(),
            Money => "money".into(),
            MacAddr(8) => "macaddr8".into(),
            MacAddr(_) => "macaddr".into(),
            Other { len: -1, .. } => "variable-length type".into(),
            Other { len, .. } => format!("{len}-byte type"),
            Dropped => "dropped column".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

impl ColumnDef {
    pub fn new(name: &str, ty: ColumnType, nullable: bool) -> Self {
        ColumnDef {
            name: name.to_owned(),
            ty,
            nullable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// OID of the PostgreSQL database the table belongs to (0: unknown): a DROP
    /// DATABASE drops the engine tables of that database.
    pub database: u32,
}

impl TableDef {
    /// Checks names, column count and type parameters.
    pub fn validate(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.columns.len() > MAX_COLUMNS {
            return Err(Error::TooManyColumns {
                count: self.columns.len(),
                max: MAX_COLUMNS,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            check_name(&c.name)?;
            if !seen.insert(c.name.as_str()) {
                return Err(Error::DuplicateColumn {
                    column: c.name.clone(),
                });
            }
            let len = match c.ty {
                ColumnType::Char(n) => Some(n as i64),
                ColumnType::Varchar(n) if n != 0 => Some(n as i64),
                _ => None,
            };
            let bad_type = match c.ty {
                ColumnType::MacAddr(n) => n != 6 && n != 8,
                ColumnType::Other { len, byval: true } => !matches!(len, 1 | 2 | 4 | 8),
                ColumnType::Other { len, byval: false } => len != -1 && len <= 0,
                _ => false,
            };
            if bad_type {
                return Err(Error::UnsupportedType {
                    column: c.name.clone(),
                    type_name: c.ty.name(),
                });
            }
            if let Some(len) = len {
                if !(1..=MAX_CHAR_LEN).contains(&len) {
                    return Err(Error::InvalidLength {
                        column: c.name.clone(),
                        len,
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(cols: Vec<ColumnDef>) -> TableDef {
        TableDef {
            database: 0,
            name: "t".into(),
            columns: cols,
        }
    }

    #[test]
    fn validation_errors() {
        // Zero columns, as PostgreSQL allows (tables used only for LOCK TABLE).
        assert_eq!(def(vec![]).validate(), Ok(()));
        let many = (0..MAX_COLUMNS + 1)
            .map(|i| ColumnDef::new(&format!("c{i}"), ColumnType::Int4, true))
            .collect();
        assert!(matches!(
            def(many).validate(),
            Err(Error::TooManyColumns { .. })
        ));
        let dup = vec![
            ColumnDef::new("a", ColumnType::Int4, true),
            ColumnDef::new("a", ColumnType::Text, true),
        ];
        assert!(matches!(
            def(dup).validate(),
            Err(Error::DuplicateColumn { .. })
        ));
        let bad = vec![ColumnDef::new("a", ColumnType::Char(0), true)];
        assert!(matches!(
            def(bad).validate(),
            Err(Error::InvalidLength { .. })
        ));
        let long = vec![ColumnDef::new(&"x".repeat(64), ColumnType::Int4, true)];
        assert_eq!(def(long).validate().unwrap_err().sqlstate(), "42622");
        let ok = vec![
            ColumnDef::new("a", ColumnType::Varchar(0), true),
            ColumnDef::new("b", ColumnType::Char(10), false),
        ];
        assert!(def(ok).validate().is_ok());
    }
}
