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
    /// Bytes allocated and not yet freed (may wrap below zero: compare differences).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The most `LIVE` has been since [`reset_peak`].
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add_live(delta: isize) {
    let live = LIVE.with(|c| {
        c.set(c.get() + delta);
        c.get()
    });
    PEAK.with(|p| p.set(p.get().max(live)));
}

fn reset_peak() {
    PEAK.with(|p| p.set(live_bytes()));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.with(|c| c.set(c.get() + layout.size()));
        add_live(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.with(|c| c.set(c.get() + new_size));
        add_live(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
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
        ferroptim::Optimizer::train(&mut opt).unwrap(); // Schedule-Free steps in train mode
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
    counts.extend(steady_state_allocations(optim::LionConfig::default()));
    counts.extend(steady_state_allocations(optim::LarsConfig {
        momentum: 0.9,
        weight_decay: 0.01,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::LambConfig {
        pre_norm: true,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::AdanConfig {
        max_grad_norm: 1.0,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::AdoptConfig::default()));
    counts.extend(steady_state_allocations(
        optim::SgdScheduleFreeConfig::default(),
    ));
    counts.extend(steady_state_allocations(
        optim::AdamWScheduleFreeConfig::default(),
    ));
    counts.extend(steady_state_allocations(optim::AdEMAMixConfig {
        cautious: true,
        stable_adamw: true,
        ..Default::default()
    }));
    counts.extend(steady_state_allocations(optim::ProdigyConfig {
        slice_p: 11,
        ..Default::default()
    }));
    // SOAP's third step is no refresh of its bases (one in 10 is: faer's QR
    // allocates its factors then).
    counts.extend(steady_state_allocations(optim::SoapConfig::default()));
    let smallest_tensor = 1024 * 4;
    let allocating: Vec<_> = counts
        .iter()
        .filter(|(_, n)| *n > smallest_tensor / 4)
        .collect();
    assert!(
        allocating.is_empty(),
        "bytes allocated per step: {allocating:?}"
    );
    assert_eq!(counts.len(), 44);
}

/// LBFGS over candle Vars keeps no copy of the parameters: building it
/// holds (almost) nothing, and after a step it holds its state (the flat
/// direction, the last gradient and the history pairs), as torch's does.
#[test]
fn candle_lbfgs_keeps_no_copy_of_the_parameters() {
    use ferroptim::optim::LbfgsConfig;
    use ferroptim_candle::CandleLbfgs;
    let numel = 1 << 18; // 1 MiB of f32
    let w = Var::from_tensor(&Tensor::ones(numel, candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let start = live_bytes();
    let config = LbfgsConfig {
        max_iter: 3,
        history_size: 2,
        ..Default::default()
    };
    let mut opt = CandleLbfgs::new(vec![w.clone()], config).unwrap();
    let built = live_bytes() - start;
    let x = w.clone();
    reset_peak();
    opt.step(|| x.as_tensor().sqr()?.sum_all()).unwrap();
    let stepped = live_bytes() - start;
    let peak = PEAK.with(Cell::get) - start;
    let bytes = (numel * 4) as isize;
    eprintln!(
        "CandleLbfgs over {bytes} bytes of parameters: {built} bytes held after new, \
         {stepped} after one step ({:.2} parameter copies), at most {peak} during it ({:.2})",
        stepped as f64 / bytes as f64,
        peak as f64 / bytes as f64
    );
    assert!(built < 4096, "new() holds {built} bytes");
    // At most: the start of the step (its rollback copy), the flat gradient,
    // the state, and candle's forward and backward tensors.
    assert!(peak < 16 * bytes, "a step peaks at {peak} bytes");
    // State after 3 iterations: d, prev_flat_grad, 2 history pairs = 6 vectors.
    assert!(
        stepped < 6 * bytes + bytes / 8,
        "a step leaves {stepped} bytes held"
    );
}

/// Clipping candle gradients (by hand or as a step option) scales the
/// GradStore's tensors where they are: no tensor is allocated.
#[test]
fn clipping_candle_gradients_allocates_no_tensor() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::ones((256, 256), candle_core::DType::F32, &dev).unwrap())
        .unwrap();
    let mut opt = CandleOptim::from_vars(vec![w.clone()], optim::AdamWConfig::default()).unwrap();
    opt.set_clip_grad_norm(Some(ferroptim_candle::ClipGradNorm::new(0.1)));
    let grads = w
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    opt.step_with(&grads).unwrap();
    opt.step_with(&grads).unwrap();
    let before = allocated_bytes();
    opt.step_with(&grads).unwrap();
    let clip = ferroptim_candle::ClipGradNorm {
        norm_type: 3.0,
        ..ferroptim_candle::ClipGradNorm::new(0.01)
    };
    let total = opt.clip_grad_norm(&grads, clip).unwrap();
    let allocated = allocated_bytes() - before;
    assert!(total > 0.0);
    assert!(
        allocated < 256 * 256 * 4 / 16,
        "clipped steps allocated {allocated} bytes"
    );
}
