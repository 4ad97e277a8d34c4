//! The fuzz targets as plain tests: every committed corpus file (the seeds
//! and any crash reproducer kept there) replayed through the same entry
//! points the cargo-fuzz targets call (`ringress::fuzzing`), then a few
//! thousand deterministic mutations of them. Runs in the normal suite
//! without libFuzzer or its instrumented build; the coverage-guided runs
//! are `fuzz/run.sh` (docs/reliability.md, "Fuzzing").

use std::path::{Path, PathBuf};

use ringress::fuzzing::TARGETS;

/// Mutated inputs per target, per test run.
const MUTATIONS: usize = 3000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("dir entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read seed"))
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: deterministic, so a failure names a reproducible index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, inserts, deletes, duplicates and splices bytes, like a fuzzer's
/// cheapest mutators.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                let n = rng.below(v.len() - at) + 1;
                v.drain(at..at + n.min(8));
            }
            3 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(32)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let interesting = [0u8, b'\r', b'\n', b' ', b':', b'0', b'f', 0x7f, 0x80, 0xff];
                v.insert(at, interesting[rng.below(interesting.len())]);
            }
        }
    }
    v
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in TARGETS {
        assert!(!seeds(name).is_empty(), "fuzz/corpus/{name} is empty");
    }
}

#[test]
fn corpora_replay_and_mutations_hold_the_invariants() {
    ringress::fuzzing::allow_contained_cel_panics();
    for (name, run) in TARGETS {
        let seeds = seeds(name);
        for (file, data) in &seeds {
            let r = std::panic::catch_unwind(|| run(data));
            assert!(r.is_ok(), "{name}: corpus file {file} fails");
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for i in 0..MUTATIONS {
            let seed = &seeds[rng.below(seeds.len())].1;
            let other = &seeds[rng.below(seeds.len())].1;
            let input = mutate(&mut rng, seed, other);
            let r = std::panic::catch_unwind(|| run(&input));
            assert!(r.is_ok(), "{name}: mutation {i} fails on input {input:?}");
        }
    }
}
