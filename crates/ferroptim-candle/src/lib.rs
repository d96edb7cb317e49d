//! # ferroptim-candle
//!
//! ferroptim's optimizers in a [candle](https://github.com/huggingface/candle)
//! training loop. [`CandleOptim<A>`] is a drop-in for `candle_nn::Optimizer`
//! (`new(vars, config)`, `step(&grads)`, `backward_step(&loss)`,
//! `learning_rate`/`set_learning_rate`) for every per-parameter algorithm
//! `A` of ferroptim, and [`CandleLbfgs`] runs LBFGS with a closure.
//!
//! The update runs **in place** on the `Var`s' CPU storage, through a candle
//! in-place op that hands ferroptim's fused kernels the parameter and
//! gradient slices: no tensor is allocated per step, and ferroptim keeps no
//! copy of the parameters, only the optimizer state. Everything else of
//! ferroptim works through it: param groups, `state_dict` and
//! `load_state_dict` (JSON, safetensors, torch's files), and the learning
//! rate schedulers, which take the optimizer as `&mut dyn ferroptim::Optimizer`
//! ([`CandleOptim`] dereferences to ferroptim's [`Optim`]).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer as _;
//! use ferroptim::optim::AdamWConfig;
//! use ferroptim_candle::AdamW;
//!
//! // Minimise (w - 3)² from w = 0.
//! let w = Var::new(&[0.0f32], &Device::Cpu)?;
//! let mut opt = AdamW::new(vec![w.clone()], AdamWConfig { lr: 0.1, ..Default::default() })?;
//! for _ in 0..300 {
//!     let loss = (w.as_tensor() - 3.0)?.sqr()?.sum_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! assert!((w.to_vec1::<f32>()?[0] - 3.0).abs() < 0.05);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Parameters must be `f32` or `f64` and live on the CPU; anything else is a
//! typed [`Error`] when the optimizer is built.

#![warn(missing_docs)]

mod lbfgs;
mod slot;

use std::ops::{Deref, DerefMut};

use candle_core::backprop::GradStore;
use candle_core::Var;
use ferroptim::optim;
use ferroptim::{Algorithm, GroupSpec, IntoParamGroups, Optim, Optimizer as _, StepOutcome};

pub use lbfgs::CandleLbfgs;
pub use slot::CandleParam;

/// What can go wrong between candle and ferroptim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter's dtype is not one ferroptim updates.
    #[error("parameter {param} is {dtype:?}; ferroptim updates f32 and f64 parameters (convert the Var with to_dtype before building the optimizer)")]
    UnsupportedDtype {
        /// Its position among the Vars handed in.
        param: usize,
        /// Its dtype.
        dtype: candle_core::DType,
    },
    /// A parameter is not in CPU memory.
    #[error("parameter {param} is on {device}; ferroptim-candle updates parameters in CPU memory")]
    UnsupportedDevice {
        /// Its position among the Vars handed in.
        param: usize,
        /// Where it is.
        device: String,
    },
    /// ferroptim refused (a hyperparameter, a state_dict, a gradient).
    #[error(transparent)]
    Ferroptim(#[from] ferroptim::Error),
    /// candle failed (a closure's forward or backward pass).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A ferroptim optimizer over candle `Var`s: ferroptim's [`Optim<A>`] whose
/// parameters are [`CandleParam`]s. It implements `candle_nn::Optimizer`,
/// and dereferences to the [`Optim`] for everything ferroptim offers.
#[derive(Clone, Debug)]
pub struct CandleOptim<A: Algorithm> {
    inner: Optim<A, CandleParam>,
}

impl<A: Algorithm> CandleOptim<A> {
    /// An optimizer over `vars` (one group) with hyperparameters `config`.
    pub fn from_vars(vars: Vec<Var>, config: A) -> Result<Self> {
        let params = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| CandleParam::new(v, i))
            .collect::<Result<Vec<_>>>()?;
        Self::with_groups(params, config)
    }

    /// An optimizer over param groups of [`CandleParam`]s, each group
    /// overriding whichever of `defaults` it sets:
    /// `[GroupSpec::new(weights), GroupSpec::new(biases).set("weight_decay", 0.0)]`.
    pub fn with_groups(groups: impl IntoParamGroups<CandleParam>, defaults: A) -> Result<Self> {
        Ok(CandleOptim {
            inner: Optim::new(groups, defaults)?,
        })
    }

    /// Adds a param group; hyperparameters it leaves out come from the defaults.
    pub fn add_param_group(&mut self, group: GroupSpec<CandleParam>) -> Result<()> {
        Ok(self.inner.add_param_group(group)?)
    }

    /// One update of every parameter that `grads` has a gradient for, in
    /// place. If a gradient is unusable nothing changes.
    pub fn step_with(&mut self, grads: &GradStore) -> Result<()> {
        Ok(self.with_grads(grads, |opt| opt.step())?)
    }

    /// As [`step_with`](Self::step_with), but only if every gradient is
    /// finite; otherwise nothing changes and the outcome names the first
    /// parameter with a NaN or infinite gradient (ferroptim's
    /// `step_if_finite`, for mixed-precision loss scaling).
    pub fn step_if_finite_with(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        Ok(self.with_grads(grads, |opt| opt.step_if_finite())?)
    }

    /// Runs `f` while every parameter holds its gradient from `grads`.
    fn with_grads<R>(
        &mut self,
        grads: &GradStore,
        f: impl FnOnce(&mut Optim<A, CandleParam>) -> R,
    ) -> R {
        for p in self.inner.param_groups().iter().flat_map(|g| g.params()) {
            p.attach_grad(grads);
        }
        let result = f(&mut self.inner);
        // Let go of the gradients, so the GradStore's memory can be freed.
        for p in self.inner.param_groups().iter().flat_map(|g| g.params()) {
            p.detach_grad();
        }
        result
    }

    /// The ferroptim optimizer inside.
    pub fn into_inner(self) -> Optim<A, CandleParam> {
        self.inner
    }
}

impl<A: Algorithm> Deref for CandleOptim<A> {
    type Target = Optim<A, CandleParam>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<A: Algorithm> DerefMut for CandleOptim<A> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl<A: Algorithm> candle_nn::Optimizer for CandleOptim<A> {
    type Config = A;

    fn new(vars: Vec<Var>, config: A) -> candle_core::Result<Self> {
        Self::from_vars(vars, config).map_err(candle_core::Error::wrap)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_with(grads).map_err(candle_core::Error::wrap)
    }

    /// The first group's learning rate.
    fn learning_rate(&self) -> f64 {
        self.inner.lr(0).unwrap_or(0.0)
    }

    /// Sets every group's learning rate, as candle's optimizers have one.
    fn set_learning_rate(&mut self, lr: f64) {
        for group in 0..self.inner.num_param_groups() {
            // Every index below num_param_groups exists.
            let _ = self.inner.set_lr(group, lr);
        }
    }
}

/// SGD (momentum, dampening, nesterov, weight_decay, maximize) over candle Vars.
pub type Sgd = CandleOptim<optim::SgdConfig>;
/// Adam over candle Vars.
pub type Adam = CandleOptim<optim::AdamConfig>;
/// AdamW over candle Vars.
pub type AdamW = CandleOptim<optim::AdamWConfig>;
/// Adamax over candle Vars.
pub type Adamax = CandleOptim<optim::AdamaxConfig>;
/// Adadelta over candle Vars.
pub type Adadelta = CandleOptim<optim::AdadeltaConfig>;
/// Adagrad over candle Vars.
pub type Adagrad = CandleOptim<optim::AdagradConfig>;
/// RMSprop over candle Vars.
pub type Rmsprop = CandleOptim<optim::RmspropConfig>;
/// ASGD over candle Vars.
pub type Asgd = CandleOptim<optim::AsgdConfig>;
/// Rprop over candle Vars.
pub type Rprop = CandleOptim<optim::RpropConfig>;
/// NAdam over candle Vars.
pub type NAdam = CandleOptim<optim::NAdamConfig>;
/// RAdam over candle Vars.
pub type RAdam = CandleOptim<optim::RAdamConfig>;
/// Adafactor over candle Vars.
pub type Adafactor = CandleOptim<optim::AdafactorConfig>;
/// Muon over candle Vars (2-D parameters only, as in torch).
pub type Muon = CandleOptim<optim::MuonConfig>;
/// SparseAdam over candle Vars. candle's gradients are dense, which torch's
/// SparseAdam refuses; so does this one, with a typed error at `step`.
pub type SparseAdam = CandleOptim<optim::SparseAdamConfig>;

/// The README's code blocks (ferroptim's and this crate's), compiled and run
/// as doctests here, where both crates are in scope.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
