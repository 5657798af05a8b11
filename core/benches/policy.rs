//! Selection over 100,000 mixed tags: semver, alphabetical (with a filter) and
//! numerical (with a filter and extract). `make bench` runs it.

// A benchmark with a broken fixture should stop at once.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use imageauto_core::policy::testdata::mixed_tags;
use imageauto_core::policy::{CompiledFilter, Order, Ordering, Policy};
use std::hint::black_box;

fn selection(c: &mut Criterion) {
    let tags = mixed_tags(100_000, 42);
    let semver = Policy::new(Policy::semver(">=1.0.0 <2.0.0").unwrap(), None);
    let alphabetical = Policy::new(
        Ordering::Alphabetical(Order::Asc),
        Some(CompiledFilter::new(r"^main-[a-f0-9]+-(?P<ts>\d+)$", "$ts").unwrap()),
    );
    let numerical = Policy::new(
        Ordering::Numerical(Order::Asc),
        Some(CompiledFilter::new(r"^branch-dev-(?P<ts>\d+)-[a-f0-9]+$", "$ts").unwrap()),
    );
    let mut g = c.benchmark_group("select_100k_tags");
    g.sample_size(20);
    g.bench_function("semver", |b| {
        b.iter(|| black_box(semver.select(black_box(&tags)).unwrap()))
    });
    g.bench_function("alphabetical_filtered", |b| {
        b.iter(|| black_box(alphabetical.select(black_box(&tags)).unwrap()))
    });
    g.bench_function("numerical_extracted", |b| {
        b.iter(|| black_box(numerical.select(black_box(&tags)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
