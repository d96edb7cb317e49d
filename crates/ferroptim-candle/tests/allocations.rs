//! A step through candle allocates no tensor once the state exists: the
//! update runs in place on the Vars' storage, for every algorithm the
//! adapter runs on dense gradients.
//!
//! What does get allocated is candle's: `Tensor::inplace_op2` checks the
//! destination's layout for self-overlap, collecting its axes into a small
//! `Vec`, once per parameter (136 to 155 bytes per step here, in all). So
//! the test bounds the bytes per step at 1 KiB, a quarter of the smallest
//! tensor in it: any tensor allocated per step would break the bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer as _;
use ferroptim::optim;
use ferroptim::Algorithm;
use ferroptim_candle::CandleOptim;

/// Counts the allocations of the current thread (tests run on several).
struct Counting;

thread_local! {
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.with(|c| c.set(c.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.with(|c| c.set(c.get() + new_size));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_bytes() -> usize {
    BYTES.with(Cell::get)
}

/// The bytes allocated by the third `step(&grads)` of `config` on a 256x256
/// matrix and a 1024-vector, f32 and f64 (the first creates the state).
fn steady_state_allocations<A: Algorithm>(config: A) -> Vec<(String, usize)> {
    let dev = Device::Cpu;
    let mut out = Vec::new();
    for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
        let w = Var::from_tensor(&Tensor::ones((256, 256), dtype, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::ones(1024, dtype, &dev).unwrap()).unwrap();
        let vars = vec![w.clone(), b.clone()];
        let mut opt = CandleOptim::from_vars(vars, config.clone()).unwrap();
        // Squares, so that both gradients are contiguous tensors (a
        // broadcast gradient would be copied before the update).
        let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap()
            + b.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        opt.step(&grads).unwrap();
        let before = allocated_bytes();
        opt.step(&grads).unwrap();
        out.push((format!("{} {dtype:?}", A::NAME), allocated_bytes() - before));
    }
    out
}

#[test]
fn a_step_through_candle_allocates_no_tensor_after_the_first() {
    let mut counts = Vec::new();
    counts.extend(steady_state_allocations(optim::SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::AdamConfig {
        amsgrad: true,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::AdamWConfig::default()));
    counts.extend(steady_state_allocations(optim::AdamaxConfig::default()));
    counts.extend(steady_state_allocations(optim::AdadeltaConfig::default()));
    counts.extend(steady_state_allocations(optim::AdagradConfig::default()));
    counts.extend(steady_state_allocations(optim::RmspropConfig {
        centered: true,
        momentum: 0.9,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::AsgdConfig::default()));
    counts.extend(steady_state_allocations(optim::RpropConfig::default()));
    counts.extend(steady_state_allocations(optim::NAdamConfig::default()));
    counts.extend(steady_state_allocations(optim::RAdamConfig::default()));
    counts.extend(steady_state_allocations(optim::AdafactorConfig::default()));
    let smallest_tensor = 1024 * 4;
    let allocating: Vec<_> = counts
        .iter()
        .filter(|(_, n)| *n > smallest_tensor / 4)
        .collect();
    assert!(
        allocating.is_empty(),
        "bytes allocated per step: {allocating:?}"
    );
    assert_eq!(counts.len(), 24);
}
