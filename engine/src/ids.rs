//! Identifiers that are all 64-bit integers underneath and must not be mixed up: a
//! row's id, a commit's TID, a position in the redo log. Each is its own type, so
//! passing one where another is expected does not compile.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The integer underneath (for encodings, messages and SQL).
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::UpperHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::UpperHex::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A row's id within its table: handed out once, never reused (recovery continues
    /// above the largest one it saw). Rows are stored and logged by row id.
    RowId
);

id_type!(
    /// A commit's transaction id: the version of every row it wrote. TIDs grow with
    /// commit order; `Tid(0)` means "no committed version" (a row this transaction
    /// inserted).
    Tid
);

impl Tid {
    /// Above every commit TID: reading at it sees the newest committed versions.
    pub const NEWEST: Tid = Tid((1 << 62) - 1);
}

id_type!(
    /// A position in the redo log: the offset of a byte in the log as a whole (segment
    /// start LSN plus offset after the segment header). Frames carry their LSN.
    Lsn
);

impl Tid {
    /// The TID reported for versions that are not committed yet.
    pub const NONE: Tid = Tid(0);
}

impl Lsn {
    /// The LSN `bytes` further on.
    #[inline]
    pub const fn plus(self, bytes: u64) -> Lsn {
        Lsn(self.0 + bytes)
    }
    /// Bytes from `earlier` to `self` (0 if `earlier` is not earlier).
    #[inline]
    pub const fn since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Names an engine table: the PostgreSQL database and the relation (foreign table) in
/// it. A database copied from a template has the template's relation OIDs, so the
/// relation alone does not name a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TableId {
    pub database: u32,
    pub relation: u32,
}

impl TableId {
    pub const fn new(database: u32, relation: u32) -> TableId {
        TableId { database, relation }
    }
}

impl fmt::Display for TableId {
    /// `relation` (database `database`): how messages name a memory table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (database {})", self.relation, self.database)
    }
}
