//! Step time of ferroptim's AdamW through candle against candle_nn's AdamW,
//! on the same Vars and gradients: `cargo bench -p ferroptim-candle`.
//!
//! Models: the demo's MLP (64-64-10, 4.8k parameters in 4 tensors) and a
//! wider one (1024-1024-1024-10, 2.1M parameters in 6 tensors).

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferroptim::optim::AdamWConfig;

/// Vars of an MLP with these layer widths, and gradients for all of them.
fn model(widths: &[usize]) -> (Vec<Var>, GradStore) {
    let dev = Device::Cpu;
    let mut vars = Vec::new();
    for pair in widths.windows(2) {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        vars.push(Var::randn(0f32, 0.02, (fan_out, fan_in), &dev).unwrap());
        vars.push(Var::zeros(fan_out, DType::F32, &dev).unwrap());
    }
    let mut loss = Tensor::zeros((), DType::F32, &dev).unwrap();
    for v in &vars {
        loss = (loss + v.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    (vars, grads)
}

fn adamw(c: &mut Criterion) {
    let mut group = c.benchmark_group("adamw_step");
    for (name, widths) in [
        ("mlp_64_64_10", vec![64, 64, 10]),
        ("mlp_1024x3_10", vec![1024, 1024, 1024, 10]),
    ] {
        let (vars, grads) = model(&widths);
        let config = AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut ours = ferroptim_candle::AdamW::new(vars.clone(), config).unwrap();
        group.bench_function(BenchmarkId::new("ferroptim", name), |b| {
            b.iter(|| ours.step(&grads).unwrap())
        });
        let params = candle_nn::ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut theirs = candle_nn::AdamW::new(vars, params).unwrap();
        group.bench_function(BenchmarkId::new("candle_nn", name), |b| {
            b.iter(|| theirs.step(&grads).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, adamw);
criterion_main!(benches);
