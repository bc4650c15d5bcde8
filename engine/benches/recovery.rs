//! Recovery of a 1M-row table with a primary key (about 100 bytes of row data per row)
//! from checkpoint frames, into a fresh engine in a shared arena behind the routing
//! allocator (as inside PostgreSQL), with one and with two threads (each twice: the
//! machine is noisy). `ROWS` overrides the row count.

use memfdw_engine::alloc::{install_arena, RoutingAllocator};
use memfdw_engine::arena::Arena;
use memfdw_engine::redo::payload::{decode_rows, LogRecord};
use memfdw_engine::*;
use std::time::Instant;

#[global_allocator]
static ALLOC: RoutingAllocator = RoutingAllocator;

fn def() -> TableDef {
    TableDef {
        database: 1,
        name: "rec".into(),
        columns: vec![
            ColumnDef::new("id", ColumnType::Int4, false),
            ColumnDef::new("v", ColumnType::Int8, true),
            ColumnDef::new("pad", ColumnType::Text, true),
        ],
    }
}

fn main() {
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let len = 16usize << 30;
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

    // The frames a checkpoint of the table holds: DDL, then rows 1024 per frame.
    let layout = RowLayout::new(&def());
    let pad = "x".repeat(80);
    let row = |id: u64| {
        layout
            .pack(&[
                Some(&(id as i32).to_le_bytes()),
                Some(&(id as i64 * 7).to_le_bytes()),
                Some(pad.as_bytes()),
            ])
            .unwrap()
    };
    let mut frames = Vec::new();
    let mut enc = |r: LogRecord| {
        let mut b = Vec::new();
        r.encode(&mut b);
        frames.push(b);
    };
    enc(LogRecord::CreateTable {
        table: table_id(1),
        def: def(),
    });
    enc(LogRecord::CreateIndex {
        table: table_id(1),
        def: IndexDef {
            id: 1,
            name: "rec_pkey".into(),
            columns: vec![0],
            unique: true,
            primary: true,
        },
    });
    for start in (1..=rows).step_by(1024) {
        let batch = (start..(start + 1024).min(rows + 1))
            .map(|id| (RowId(id), Tid(10 + id), row(id)))
            .collect();
        enc(LogRecord::Rows {
            table: table_id(1),
            rows: batch,
        });
    }
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    println!(
        "recovery of {rows} rows ({:.0} MB of frames) with a primary key",
        bytes as f64 / 1e6
    );
    // The same rows as a log of single-row commits (an OLTP log without checkpoint).
    let small: Vec<Vec<u8>> = frames[..2]
        .iter()
        .cloned()
        .chain((1..=rows).map(|id| {
            let mut b = Vec::new();
            LogRecord::Commit {
                tid: Tid(10 + id),
                emptied: vec![],
                writes: vec![redo::payload::RowImage {
                    table: table_id(1),
                    rowid: RowId(id),
                    after: Some(row(id)),
                }],
            }
            .encode(&mut b);
            b
        }))
        .collect();
    for threads in [1, 2] {
        let e: &'static Engine = Box::leak(Engine::new(
            EngineConfig::for_arena(arena.stats().capacity),
            None,
        ));
        let t0 = Instant::now();
        let mut r = Replayer::new(e, threads);
        for f in &small {
            r.apply(f).unwrap();
        }
        r.finish().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(e.table_stats(table_id(1)).unwrap().rows as u64, rows);
        println!("log of {rows} single-row commits, threads {threads}: {secs:.3} s");
    }
    for threads in [1, 2, 1, 2] {
        let e: &'static Engine = Box::leak(Engine::new(
            EngineConfig::for_arena(arena.stats().capacity),
            None,
        ));
        let t0 = Instant::now();
        let mut r = Replayer::new(e, threads);
        let mut batch = Vec::new();
        for f in &frames {
            match decode_rows(f).unwrap() {
                Some(rows) => {
                    batch.extend(rows);
                    if batch.len() >= 64 * 1024 {
                        r.apply_distinct_rows(&batch).unwrap();
                        batch.clear();
                    }
                }
                None => r.apply(f).unwrap(),
            }
        }
        r.apply_distinct_rows(&batch).unwrap();
        r.finish().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(e.table_stats(table_id(1)).unwrap().rows as u64, rows);
        assert_eq!(
            e.table(table_id(1)).unwrap().index_entries(1),
            Some(rows as usize)
        );
        println!(
            "threads {threads}: {secs:.3} s ({:.0} MB/s of frames)",
            bytes as f64 / 1e6 / secs
        );
    }
}

/// The engine table of relation `rel` in the bench's database (1).
fn table_id(rel: u32) -> TableId {
    TableId::new(1, rel)
}
