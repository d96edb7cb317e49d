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
//! [`optim`] (one module per algorithm, and the [`optim::registry`] with one
//! row per optimizer), [`Groups`] and [`Optim`] (param groups and the
//! stateful optimizer, written once for all algorithms), and adapters
//! (`ferroptim-candle`) that supply their own [`ParamSlot`].
//!
//! ## The traits, and why there are five
//!
//! | trait | what it is | implemented by | called by |
//! |---|---|---|---|
//! | [`Hyperparameters`] | a param group's settings: torch's argument names and defaults (serde), checks, `lr` | each algorithm's `Config` (the `hyperparameters!` macro), LBFGS's too | [`Groups`]: merging, loading, schedulers' `lr` |
//! | [`Algorithm`] | a per-parameter update and its state's type | each per-parameter `Config` | [`Optim`]'s step |
//! | [`ParamState`] | one parameter's state in torch's state_dict keys | each algorithm's `State` (the `param_state!` macro) | [`Optim`]'s `state_dict`/`load_state_dict` |
//! | [`ParamSlot`] | where a parameter lives: shape, dtype, gradient, in-place update | [`Param`], `ferroptim_candle::CandleParam` | [`Optim`], [`optim::Lbfgs`] |
//! | [`Optimizer`] | torch's `Optimizer` methods, object safe (`Box<dyn Optimizer>`) | [`Optim`], [`optim::Lbfgs`] | users, schedulers, SWA, the CLI |
//!
//! They are separate because they vary separately: LBFGS has
//! hyperparameters but no per-parameter update; one algorithm runs over
//! every kind of slot; a state's saved form is independent of how it is
//! updated; and the object-safe [`Optimizer`] hides all of their types. The
//! group methods every optimizer shares come from [`GroupStore`], the
//! object-safe face of [`Groups`], and its hooks from [`hooks`].

#![warn(missing_docs)]

mod algorithm;
pub mod checkpoint;
pub mod clip;
mod dtype;
mod error;
mod group;
pub mod hooks;
pub mod json;
pub mod kernels;
pub mod linalg;
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
mod validate;

pub use algorithm::{Algorithm, Hyperparameters};
pub use error::{Error, Result};
pub use group::{GroupSpec, GroupStore, Groups, IntoParamGroups, ParamGroup};
/// The 16-bit float types ferroptim stores (`half::bf16`, `half::f16`), re-exported.
pub use half;
pub use hooks::HookHandle;
pub use optimizer::{AddParamGroup, LossContext, Optim, Optimizer, OptimizerHooks, StepOutcome};
pub use parallel::{num_threads, set_num_threads, MAX_THREADS, MIN_CHUNK};
pub use param::{Grad, Param, SparseGrad};
pub use slot::{GradKind, GradRef, ParamMeta, ParamSlot, SlotData, SlotElement, UpdateFn, ValueFn};
#[doc(hidden)]
pub use state::field as state_field;
pub use state::{ParamState, ParamStateDict, StateDict, StateEntries, StateScalar, StateValue};
pub use tensor::{Dtype, Element, Storage, Tensor, TensorData, TensorDataMut};
pub use torch_pt::{TorchCheckpoint, TorchLoadLimits};
