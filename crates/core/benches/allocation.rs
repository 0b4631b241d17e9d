//! Allocation speed: 10,000 addresses over 1,000 nodes, standbys included.
//! Target: under 100 ms on the project's 2-core machine. Run with
//! `cargo bench -p fechter-core --bench allocation`; criterion prints the figures.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use fechter_core::{AddrSpec, Allocation, NodeId, allocate};

fn addresses(n: u32) -> Vec<(u32, AddrSpec)> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i);
            let spec = AddrSpec {
                iface: "eth0".into(),
                ip: IpAddr::V4(ip),
                prefix: 15,
            };
            (i, spec)
        })
        .collect()
}

fn nodes(k: usize) -> Vec<NodeId> {
    (0..k)
        .map(|i| NodeId::new(format!("node-{i:04}")))
        .collect()
}

fn bench(c: &mut Criterion) {
    let addrs = addresses(10_000);
    let all = nodes(1_000);
    let fresh = allocate(&addrs, &all, &Allocation::default());
    let survivors: Vec<NodeId> = all[1..].to_vec();

    let mut g = c.benchmark_group("allocate 10k addresses / 1k nodes");
    g.sample_size(20);
    g.bench_function("from scratch", |b| {
        b.iter(|| allocate(black_box(&addrs), black_box(&all), &Allocation::default()))
    });
    g.bench_function("after one node failed (sticky)", |b| {
        b.iter(|| allocate(black_box(&addrs), black_box(&survivors), black_box(&fresh)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
