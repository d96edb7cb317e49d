//! `cargo bench -p ferroptim`: one `step()` of every dense optimizer (f32)
//! on the issue's three layouts (1 x 10M, 1000 x 10k, 100k x 100), at 1 and
//! 2 threads. `ferroptim bench` (the CLI) prints the same steps against the
//! memory floor, and bench/compare_torch.py against torch.
//!
//! `FERROPTIM_BENCH_SHRINK=100` divides every size by 100 for a quick look.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferroptim::{optim, Optimizer, Param, Tensor};

const LAYOUTS: [(usize, usize); 3] = [(1, 10_000_000), (1_000, 10_000), (100_000, 100)];

/// The configuration benchmarked per optimizer (momentum for SGD, defaults otherwise).
fn config(name: &str) -> &'static str {
    if name == "sgd" {
        r#"{"lr": 0.01, "momentum": 0.9}"#
    } else {
        "{}"
    }
}

fn optimizer(name: &str, count: usize, numel: usize) -> Box<dyn Optimizer> {
    let params: Vec<Param> = (0..count).map(|_| Param::zeros::<f32>(&[numel])).collect();
    for p in &params {
        p.set_grad(Tensor::from_vec(vec![1e-3f32; numel], &[numel]).unwrap())
            .unwrap();
    }
    let mut opt = optim::build(name, config(name), params).unwrap();
    opt.train().unwrap(); // Schedule-Free steps in train mode
    opt
}

fn steps(c: &mut Criterion) {
    let shrink: usize = std::env::var("FERROPTIM_BENCH_SHRINK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let dense = optim::NAMES
        .iter()
        .filter(|&&n| !matches!(n, "lbfgs" | "sparseadam" | "muon"));
    for &name in dense {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for (count, numel) in LAYOUTS {
            let numel = (numel / shrink).max(1);
            let mut opt = optimizer(name, count, numel);
            for threads in [1, 2] {
                ferroptim::set_num_threads(threads).unwrap();
                let id = BenchmarkId::new(format!("{count}x{numel}"), format!("{threads}t"));
                group.bench_function(id, |b| b.iter(|| opt.step().unwrap()));
            }
        }
        group.finish();
    }
    ferroptim::set_num_threads(1).unwrap();
}

criterion_group!(benches, steps);
criterion_main!(benches);
