//! # ferroptim
//!
//! PyTorch's `torch.optim` in Rust: the same optimizers, with the same
//! arguments, the same numbers and the same `state_dict`.
//!
//! An optimizer manages learnable parameters ([`Param`]) organised in param
//! groups, and updates them from their gradients to lower the loss. As in
//! torch it has `defaults`, `param_groups` and a per-parameter `state`, and
//! the methods of the [`Optimizer`] trait: `zero_grad`, `step`,
//! `add_param_group`, `state_dict` and `load_state_dict` (to resume training
//! after a stop).
//!
//! ```
//! use ferroptim::{optim::{Adam, AdamConfig}, Optimizer, Param, Tensor};
//!
//! // Minimise (w - 3)² from w = 0.
//! let w = Param::from_vec(vec![0.0f64], &[1])?;
//! let mut opt = Adam::new([w.clone()], AdamConfig { lr: 0.1, ..Default::default() })?;
//! for _ in 0..200 {
//!     opt.zero_grad();
//!     let x = w.to_vec::<f64>()?[0];
//!     w.set_grad(Tensor::from_vec(vec![2.0 * (x - 3.0)], &[1])?)?;
//!     opt.step()?;
//! }
//! assert!((w.to_vec::<f64>()?[0] - 3.0).abs() < 1e-2);
//! # Ok::<(), ferroptim::Error>(())
//! ```
//!
//! Layers, from the bottom: [`kernels`] (fused update loops on slices),
//! [`optim`] (one module per algorithm), [`Optim`] (the stateful optimizer,
//! written once for all algorithms).

#![warn(missing_docs)]

pub mod checkpoint;
pub mod clip;
mod error;
mod group;
pub mod json;
pub mod kernels;
pub mod lr_scheduler;
pub mod optim;
mod optimizer;
mod parallel;
mod param;
mod slot;
mod state;
pub mod swa_utils;
mod tensor;
mod torch_pt;

pub use error::{Error, Result};
pub use group::{GroupSpec, IntoParamGroups, ParamGroup};
pub use optimizer::{Algorithm, Hyperparameters, Optim, Optimizer, ParamState, StepOutcome};
pub use parallel::{num_threads, set_num_threads, MAX_THREADS, MIN_CHUNK};
pub use param::{Grad, Param, SparseGrad};
pub use slot::{GradKind, GradRef, ParamMeta, ParamSlot, SlotData, UpdateFn};
pub use state::{ParamStateDict, StateDict, StateEntries, StateValue};
pub use tensor::{Dtype, Element, Tensor, TensorData, TensorDataMut};
pub use torch_pt::TorchLoadLimits;
