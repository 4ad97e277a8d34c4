//! A tiny timing harness for the micro benchmarks: runs a closure for a
//! fixed wall time after a warm-up and reports ns per iteration (median of
//! several samples). No dependency; `cargo bench` runs it.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// `cargo bench` passes `--bench`; under `cargo test` each case runs once,
/// as a smoke test, so the suite stays fast.
pub fn bench<T>(name: &str, mut f: impl FnMut() -> T) {
    if !std::env::args().any(|a| a == "--bench") {
        black_box(f());
        println!("{name}: ok (run `cargo bench` to time it)");
        return;
    }
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        black_box(f());
    }
    let mut samples = Vec::with_capacity(7);
    for _ in 0..7 {
        let mut iters: u64 = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            for _ in 0..64 {
                black_box(f());
            }
            iters += 64;
        }
        samples.push(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!("{name:<48} {:>10.1} ns/iter", samples[samples.len() / 2]);
}
