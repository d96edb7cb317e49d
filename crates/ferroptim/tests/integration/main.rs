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
mod hooks_and_names;
mod kernels_simd;
mod lbfgs;
mod lr_scheduler;
mod optimizer;
mod parity;
mod reliability;
mod state_dict;
mod swa;
mod threads;
mod torch_pt_limits;
mod training_checkpoint;
