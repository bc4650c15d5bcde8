//! Point lookup (scan of one row id) and single-row update transactions on a
//! 1M-row table, one and two threads.

use criterion::{criterion_group, criterion_main, Criterion};
fn placeholder(_c: &mut Criterion) {}
criterion_group!(benches, placeholder);
criterion_main!(benches);
