//! Engine point operations on a 1M-row table, with the engine in a shared arena behind
//! the routing allocator (as inside PostgreSQL):
//! * point lookup: begin, read one row by row id, commit;
//! * single-row update: begin, read, update, commit;
//! * index point get: begin, look the row up by its key in a unique index, commit;
//! * index range: begin, read 100 consecutive keys through the index, commit.
//!
//! Each is measured with one and with two threads (throughput over both).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use memfdw_engine::alloc::{install_arena, RoutingAllocator};
use memfdw_engine::arena::Arena;
use memfdw_engine::*;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: RoutingAllocator = RoutingAllocator;

const ROWS: u64 = 1_000_000;
const OID: u32 = 1;
const IDX: u32 = 1;

fn engine() -> &'static Engine {
    static E: OnceLock<&'static Engine> = OnceLock::new();
    E.get_or_init(|| {
        let len = 2usize << 30;
        // SAFETY: anonymous shared mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: a fresh mapping used only as this arena.
        let arena = unsafe { Arena::init(p as *mut u8, len) };
        install_arena(arena);
        let e: &'static Engine = Box::leak(Engine::new(
            EngineConfig::for_arena(arena.stats().capacity),
            None,
        ));
        let def = TableDef {
            database: 1,
            name: "bench".into(),
            columns: vec![
                ColumnDef::new("id", ColumnType::Int8, false),
                ColumnDef::new("balance", ColumnType::Int8, false),
                ColumnDef::new("owner", ColumnType::Text, true),
            ],
        };
        e.create_table(table_id(OID), def).unwrap();
        let t = e.table(table_id(OID)).unwrap();
        for chunk in 0..ROWS / 10_000 {
            let mut txn = e.begin();
            for i in 0..10_000 {
                let id = (chunk * 10_000 + i) as i64;
                let row = t
                    .layout
                    .pack(&[
                        Some(&id.to_le_bytes()),
                        Some(&0i64.to_le_bytes()),
                        Some(b"owner name 0123456789"),
                    ])
                    .unwrap();
                txn.insert(&t, &row, Stmt { cid: 0, sub: 1 }).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut txn = e.begin();
        txn.create_index(
            &t,
            IndexDef {
                id: IDX,
                name: "bench_pkey".into(),
                columns: vec![0],
                unique: true,
                primary: true,
            },
        )
        .unwrap();
        txn.commit().unwrap();
        e
    })
}

fn key(id: i64) -> Vec<u8> {
    let mut k = Vec::new();
    keys::encode_value(ColumnType::Int8, Some(&id.to_le_bytes()), &mut k).unwrap();
    k
}

fn index_get(e: &'static Engine, t: &TableHandle, rowid: u64, _buf: &mut Vec<u8>) {
    let mut txn = e.begin();
    let mut scan = IndexScan::new(IDX, &key(rowid as i64 - 1), None, false);
    scan.unique_point = true;
    let mut batch = RowBatch::new();
    txn.index_scan(t, &mut scan, 1, &mut batch, 1).unwrap();
    assert_eq!(batch.len(), 1);
    txn.commit().unwrap();
}

fn index_range100(e: &'static Engine, t: &TableHandle, rowid: u64, _buf: &mut Vec<u8>) {
    let first = (rowid as i64 - 1).min(ROWS as i64 - 100);
    let mut txn = e.begin();
    let range = (Some((key(first), true)), Some((key(first + 100), false)));
    let mut scan = IndexScan::new(IDX, &[], Some(range), false);
    let mut batch = RowBatch::new();
    txn.index_scan(t, &mut scan, 1, &mut batch, 128).unwrap();
    assert_eq!(batch.len(), 100);
    txn.commit().unwrap();
}

fn lookup(e: &'static Engine, t: &TableHandle, rowid: u64, buf: &mut Vec<u8>) {
    let mut txn = e.begin();
    assert!(txn.get(t, RowId(rowid), 1, buf).is_some());
    txn.commit().unwrap();
}

fn update(e: &'static Engine, t: &TableHandle, rowid: u64, buf: &mut Vec<u8>) {
    loop {
        let mut txn = e.begin();
        let tid = txn.get(t, RowId(rowid), 1, buf).expect("row");
        let bal = i64::from_le_bytes(t.layout.get(buf, 1).unwrap().try_into().unwrap()) + 1;
        let row = t
            .layout
            .pack(&[
                t.layout.get(buf, 0),
                Some(&bal.to_le_bytes()),
                t.layout.get(buf, 2),
            ])
            .unwrap();
        if txn
            .update(t, RowId(rowid), tid, &row, Stmt { cid: 1, sub: 1 })
            .is_ok()
            && txn.commit().is_ok()
        {
            return;
        }
    }
}

fn run_threads(
    threads: u64,
    iters: u64,
    op: fn(&'static Engine, &TableHandle, u64, &mut Vec<u8>),
) -> Duration {
    let e = engine();
    let start = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            s.spawn(move || {
                let t = e.table(table_id(OID)).unwrap();
                let mut buf = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ th;
                for _ in 0..iters / threads {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    op(e, &t, 1 + x % ROWS, &mut buf);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    engine();
    let mut g = c.benchmark_group("point_ops_1M_rows");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for threads in [1u64, 2] {
        g.bench_function(format!("lookup_txn/{threads}_threads"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters.max(threads), lookup))
        });
        g.bench_function(format!("update_txn/{threads}_threads"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters.max(threads), update))
        });
        g.bench_function(format!("index_get_txn/{threads}_threads"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters.max(threads), index_get))
        });
        g.bench_function(format!("index_range100_txn/{threads}_threads"), |b| {
            b.iter_custom(|iters| run_threads(threads, iters.max(threads), index_range100))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// The engine table of relation `rel` in the bench's database (1).
fn table_id(rel: u32) -> TableId {
    TableId::new(1, rel)
}
