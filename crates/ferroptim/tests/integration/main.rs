//! ferroptim's integration tests, one binary for all of them (each binary
//! links the crate and instantiates its generic code again; one keeps the
//! build of the test suite short). The allocation counter, which replaces
//! the global allocator, is its own binary (`tests/allocations.rs`).
//!
//! Run one family by its module path: `cargo test -p ferroptim --test
//! integration parity::` (the portable run in `.ci/run` does so).

#[path = "../common/mod.rs"]
mod common;

mod clip;
mod concurrency;
mod errors;
mod fuzz_loaders;
mod half;
mod hooks_and_names;
mod kahan_summation;
mod kernels_simd;
mod lbfgs;
mod lookahead;
mod lr_scheduler;
mod master_weights;
mod optimizer;
mod parity;
mod reliability;
mod soap;
mod state_dict;
mod stochastic_rounding;
mod swa;
mod threads;
mod torch_pt_limits;
mod training_checkpoint;

/// The thread count is global and the tests of this binary run at once: a
/// test that sets the count holds this lock, so that one which reads the
/// count back, or relies on it, sees its own.
static THREAD_COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn thread_count_lock() -> std::sync::MutexGuard<'static, ()> {
    THREAD_COUNT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
