//! The accounts table of the isolation and snapshot tests: acct(id int4, bal int8)
//! with a unique index on id (index id = table oid).

use super::table_id;
use memfdw_engine::*;

/// acct(id int4, bal int8) with a unique index on id.
pub fn setup(e: &'static Engine, oid: u32, n: i32, bal: i64) -> TableHandle {
    e.create_table(
        table_id(oid),
        TableDef {
            database: 1,
            name: "acct".into(),
            columns: vec![
                ColumnDef::new("id", ColumnType::Int4, false),
                ColumnDef::new("bal", ColumnType::Int8, false),
            ],
        },
    )
    .unwrap();
    let t = e.table(table_id(oid)).unwrap();
    let mut txn = e.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: oid,
            name: format!("acct_{oid}_pkey"),
            columns: vec![0],
            unique: true,
            primary: true,
        },
    )
    .unwrap();
    for i in 0..n {
        txn.insert(&t, &row(&t, i, bal), Stmt { cid: 1, sub: 1 })
            .unwrap();
    }
    txn.commit().unwrap();
    t
}

pub fn row(t: &TableHandle, id: i32, bal: i64) -> Vec<u8> {
    t.layout
        .pack(&[Some(&id.to_le_bytes()), Some(&bal.to_le_bytes())])
        .unwrap()
}

pub fn bal(t: &TableHandle, r: &[u8]) -> i64 {
    i64::from_le_bytes(t.layout.get(r, 1).unwrap().try_into().unwrap())
}

pub fn key(id: i32) -> Vec<u8> {
    let mut k = Vec::new();
    keys::encode_value(ColumnType::Int4, Some(&id.to_le_bytes()), &mut k).unwrap();
    k
}
