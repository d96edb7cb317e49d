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
use candle_core::{Tensor, Var};
use ferroptim::optim;
use ferroptim::{Algorithm, GroupSpec, IntoParamGroups, Optim, Optimizer, StepOutcome};

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
        Self::with_groups(params_of(vars)?, config)
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
        let params = self.inner.params();
        with_grads(&params, grads, || f(&mut self.inner))
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

/// The type aliases `Sgd`, `Adam`, ... one per row of ferroptim's registry
/// that runs per parameter (LBFGS is [`CandleLbfgs`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __candle_aliases {
    ($($name:ident: $config:ident, [$($alias:ident)?], $drive:ident, $matrices:literal, ($($floor:literal),*), $bench:literal, $demo:expr, $full:expr, $traj:literal;)*) => {
        $($(
            #[doc = concat!("ferroptim's `", stringify!($config), "` over candle Vars (see [`CandleOptim`]).")]
            pub type $alias = CandleOptim<optim::$config>;
        )?)*
    };
}

ferroptim::for_each_optimizer!(crate::__candle_aliases);

/// Any of ferroptim's optimizers, chosen by name at run time, over candle
/// Vars: what [`build`] returns. It dereferences to `dyn ferroptim::Optimizer`.
pub struct BoxedOptim {
    inner: Box<dyn Optimizer>,
    params: Vec<CandleParam>,
}

/// Builds any of ferroptim's optimizers by name (`ferroptim::optim::NAMES`)
/// from a JSON object of torch's arguments, over candle parameters (or
/// groups of them): ferroptim's `optim::build`, through candle.
///
/// ```
/// use candle_core::{Device, Var};
/// use ferroptim_candle::CandleParam;
/// let w = CandleParam::new(Var::new(&[0.0f32], &Device::Cpu)?, 0)?;
/// let mut opt = ferroptim_candle::build("nadam", r#"{"lr": 0.1}"#, vec![w.clone()])?;
/// for _ in 0..100 {
///     let loss = (w.var().as_tensor() - 3.0)?.sqr()?.sum_all()?;
///     opt.step_with(&loss.backward()?)?;
/// }
/// assert!((w.var().to_vec1::<f32>()?[0] - 3.0).abs() < 0.1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build(
    name: &str,
    config_json: &str,
    groups: impl IntoParamGroups<CandleParam>,
) -> Result<BoxedOptim> {
    let groups = groups.into_param_groups();
    let params = groups.iter().flat_map(|g| g.params().to_vec()).collect();
    Ok(BoxedOptim {
        inner: optim::build(name, config_json, groups)?,
        params,
    })
}

impl BoxedOptim {
    /// One step from the gradients in `grads` (for optimizers whose step
    /// takes gradients; LBFGS needs [`step_with_loss`](Self::step_with_loss)).
    pub fn step_with(&mut self, grads: &GradStore) -> Result<()> {
        Ok(with_grads(&self.params, grads, || self.inner.step())?)
    }

    /// One step with a closure computing the loss from the Vars, whose
    /// gradients come from candle's backward pass (torch's `step(closure)`;
    /// LBFGS calls it several times). Returns the first loss.
    pub fn step_with_loss(
        &mut self,
        loss: impl FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<f64> {
        step_with_loss(&mut *self.inner, &self.params, loss)
    }
}

impl Deref for BoxedOptim {
    type Target = dyn Optimizer;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl DerefMut for BoxedOptim {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.inner
    }
}

/// `vars` as parameters, each checked (f32 or f64, on the CPU).
pub(crate) fn params_of(vars: Vec<Var>) -> Result<Vec<CandleParam>> {
    vars.into_iter()
        .enumerate()
        .map(|(i, v)| CandleParam::new(v, i))
        .collect()
}

/// Runs `f` while every parameter holds its gradient from `grads`, then
/// lets go of them, so the GradStore's memory can be freed.
fn with_grads<R>(params: &[CandleParam], grads: &GradStore, f: impl FnOnce() -> R) -> R {
    for p in params {
        p.attach_grad(grads);
    }
    let result = f();
    for p in params {
        p.detach_grad();
    }
    result
}

/// `opt.step_with_closure` with a closure that computes the loss, runs
/// candle's backward pass and hands each parameter its gradient (none:
/// torch's zeros).
pub(crate) fn step_with_loss(
    opt: &mut dyn Optimizer,
    params: &[CandleParam],
    mut loss: impl FnMut() -> candle_core::Result<Tensor>,
) -> Result<f64> {
    let mut closure = || -> ferroptim::Result<f64> {
        let mut run = || -> Result<f64> {
            // The last evaluation's gradients are read already: free them
            // before this evaluation makes new ones.
            params.iter().for_each(CandleParam::detach_grad);
            let loss = loss()?;
            let grads = loss.backward()?;
            for p in params {
                p.attach_grad(&grads);
            }
            Ok(loss
                .to_dtype(candle_core::DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?)
        };
        run().map_err(ferroptim::Error::closure)
    };
    let result = opt.step_with_closure(&mut closure);
    for p in params {
        p.detach_grad();
    }
    Ok(result?)
}

/// The README's code blocks (ferroptim's and this crate's), compiled and run
/// as doctests here, where both crates are in scope.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
