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
mod model;
mod slot;

use std::ops::{Deref, DerefMut};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use ferroptim::{Algorithm, GroupStore, IntoParamGroups, OptimizerHooks};

pub use lbfgs::CandleLbfgs;
pub use model::{load_model, model_tensors};
pub use slot::CandleParam;

// What a candle training loop needs from ferroptim, so that this crate is
// the one dependency: the optimizers' configs, groups, the trait,
// schedulers, clipping and checkpoints.
pub use ferroptim::checkpoint::TrainingCheckpoint;
pub use ferroptim::{
    clip, json, lr_scheduler, optim, swa_utils, GroupSpec, LossContext, Optim, Optimizer,
    StateDict, StepOutcome, TorchCheckpoint,
};

/// What can go wrong between candle and ferroptim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter's dtype is not one ferroptim updates.
    #[error("parameter {param} is {dtype:?}; ferroptim updates f32, f64, bf16 and f16 parameters (convert the Var with to_dtype before building the optimizer)")]
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
    /// A checkpoint's model weights do not fit the `VarMap` (see [`load_model`]).
    #[error("the model does not match: {reason}")]
    ModelMismatch {
        /// Which name or shape differs.
        reason: String,
    },
    /// A named parameter (from a `VarMap` or `(name, Var)` pairs) was
    /// refused: which one, by name, and why.
    #[error("{name:?}: {source}")]
    Named {
        /// The Var's name.
        name: String,
        /// Why it was refused.
        #[source]
        source: Box<Error>,
    },
    /// Two `(name, Var)` pairs with one name.
    #[error("two parameters are named {name:?}; names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
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

/// [`clip::clip_grad_norm`]'s arguments, as a step option of
/// [`CandleOptim::set_clip_grad_norm`] and [`BoxedOptim::set_clip_grad_norm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipGradNorm {
    /// The largest total norm the gradients may have.
    pub max_norm: f64,
    /// The norm: 2 (default), 1, any p, `f64::INFINITY` for the largest magnitude.
    pub norm_type: f64,
    /// Refuse the step (a typed error, nothing changed) when the total norm is NaN or infinite.
    pub error_if_nonfinite: bool,
}

impl ClipGradNorm {
    /// Clip to a total 2-norm of `max_norm`, as `clip_grad_norm_(params, max_norm)`.
    pub fn new(max_norm: f64) -> Self {
        ClipGradNorm {
            max_norm,
            norm_type: 2.0,
            error_if_nonfinite: false,
        }
    }
}

/// A ferroptim optimizer over candle `Var`s: ferroptim's [`Optim<A>`] whose
/// parameters are [`CandleParam`]s. It implements `candle_nn::Optimizer`
/// and [`ferroptim::Optimizer`] (so schedulers take `&mut opt`), and
/// dereferences to the [`Optim`] for everything else ferroptim offers.
///
/// Build it from a `VarMap` with [`CandleOptim::from_varmap`] (or from
/// [`named_params`]): its parameters are then in name order and named in
/// the state_dict (torch's `param_names`), so a checkpoint resumes in a
/// fresh process whatever order the `VarMap`'s hash map hands them out in.
/// [`CandleOptim::from_vars`] matches a checkpoint by position only.
///
/// With both traits in scope, `opt.step(..)` is ambiguous: call
/// [`step_with`](Self::step_with) (or `backward_step`) for a step from a
/// `GradStore`.
#[derive(Clone, Debug)]
pub struct CandleOptim<A: Algorithm> {
    inner: Optim<A, CandleParam>,
    clip: Option<ClipGradNorm>,
    last_grad_norm: Option<f64>,
}

impl<A: Algorithm> CandleOptim<A> {
    /// An optimizer over `vars` (one group) with hyperparameters `config`.
    /// A checkpoint is matched by position: for a `VarMap`, whose order
    /// changes between processes, use [`from_varmap`](Self::from_varmap).
    pub fn from_vars(vars: Vec<Var>, config: A) -> Result<Self> {
        Self::with_groups(params_of(vars)?, config)
    }

    /// An optimizer over every `Var` of `varmap` (one group), ordered and
    /// named by the `VarMap`'s names: checkpoints load by name.
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// use candle_nn::{VarBuilder, VarMap};
    /// use ferroptim_candle::{optim::AdamWConfig, AdamW};
    /// let varmap = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// candle_nn::linear(4, 2, vb.pp("fc"))?;
    /// let opt = AdamW::from_varmap(&varmap, AdamWConfig::default())?;
    /// assert_eq!(opt.param_groups()[0].names().unwrap(), ["fc.bias", "fc.weight"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_varmap(varmap: &VarMap, config: A) -> Result<Self> {
        Self::with_groups(GroupSpec::named(named_params(varmap)?), config)
    }

    /// An optimizer over param groups of [`CandleParam`]s, each group
    /// overriding whichever of `defaults` it sets:
    /// `[GroupSpec::new(weights), GroupSpec::new(biases).set("weight_decay", 0.0)]`.
    pub fn with_groups(groups: impl IntoParamGroups<CandleParam>, defaults: A) -> Result<Self> {
        Ok(CandleOptim {
            inner: Optim::new(groups, defaults)?,
            clip: None,
            last_grad_norm: None,
        })
    }

    /// Clips the gradients before every step from a `GradStore`
    /// ([`step_with`](Self::step_with), `backward_step`), in place, to a
    /// total norm over this optimizer's Vars (torch's `clip_grad_norm_`
    /// between backward and step); `None` turns it off.
    pub fn set_clip_grad_norm(&mut self, clip: Option<ClipGradNorm>) {
        self.clip = clip;
    }

    /// The total gradient norm before clipping, of the last step that clipped.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// Adds a param group; hyperparameters it leaves out come from the defaults.
    pub fn add_param_group(&mut self, group: GroupSpec<CandleParam>) -> Result<()> {
        Ok(self.inner.add_param_group(group)?)
    }

    /// One update of every parameter that `grads` has a gradient for, in
    /// place (clipped first, if [`set_clip_grad_norm`](Self::set_clip_grad_norm)
    /// says so). If a gradient is unusable nothing changes.
    pub fn step_with(&mut self, grads: &GradStore) -> Result<()> {
        let (clip, params) = (self.clip, self.inner.params());
        let norm = with_grads(&params, grads, || {
            let norm = clip_with(clip, &params)?;
            self.inner.step()?;
            Ok::<_, ferroptim::Error>(norm)
        })?;
        self.last_grad_norm = norm.or(self.last_grad_norm);
        Ok(())
    }

    /// As [`step_with`](Self::step_with), but only if every gradient is
    /// finite; otherwise nothing changes and the outcome names the first
    /// parameter with a NaN or infinite gradient (ferroptim's
    /// `step_if_finite`, for mixed-precision loss scaling).
    pub fn step_if_finite_with(&mut self, grads: &GradStore) -> Result<StepOutcome> {
        let params = self.inner.params();
        Ok(with_grads(&params, grads, || self.inner.step_if_finite())?)
    }

    /// Clips the gradients in `grads` of this optimizer's Vars in place, to
    /// a total `norm_type`-norm of at most `max_norm`, and returns the
    /// total before clipping: torch's `clip_grad_norm_(opt.params, ...)`
    /// over a candle `GradStore`, allocating nothing.
    pub fn clip_grad_norm(&self, grads: &GradStore, clip: ClipGradNorm) -> Result<f64> {
        let params = self.inner.params();
        Ok(with_grads(&params, grads, || {
            clip::clip_grad_norm(
                &params,
                clip.max_norm,
                clip.norm_type,
                clip.error_if_nonfinite,
            )
        })?)
    }

    /// Clamps the gradients in `grads` of this optimizer's Vars to
    /// `[-clip_value, clip_value]` in place (torch's `clip_grad_value_`).
    pub fn clip_grad_value(&self, grads: &GradStore, clip_value: f64) -> Result<()> {
        let params = self.inner.params();
        Ok(with_grads(&params, grads, || {
            clip::clip_grad_value(&params, clip_value)
        })?)
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

/// ferroptim's interface, as the [`Optim`] inside has it: schedulers,
/// `state_dict`, hooks. Its `step` updates from the gradients attached
/// during [`CandleOptim::step_with`]; outside it there are none, so a step
/// from a `GradStore` is `step_with(&grads)`.
impl<A: Algorithm> Optimizer for CandleOptim<A> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn group_store(&self) -> &dyn GroupStore {
        self.inner.group_store()
    }
    fn group_store_mut(&mut self) -> &mut dyn GroupStore {
        self.inner.group_store_mut()
    }
    fn hooks(&self) -> &OptimizerHooks {
        self.inner.hooks()
    }
    fn step(&mut self) -> ferroptim::Result<()> {
        self.inner.step()
    }
    fn step_if_finite(&mut self) -> ferroptim::Result<StepOutcome> {
        self.inner.step_if_finite()
    }
    fn step_scaled(&mut self, grad_scale: Option<f32>, found_inf: bool) -> ferroptim::Result<()> {
        self.inner.step_scaled(grad_scale, found_inf)
    }
    fn step_with_closure(
        &mut self,
        closure: &mut dyn FnMut() -> ferroptim::Result<f64>,
    ) -> ferroptim::Result<f64> {
        self.inner.step_with_closure(closure)
    }
    fn train(&mut self) -> ferroptim::Result<()> {
        self.inner.train()
    }
    fn eval(&mut self) -> ferroptim::Result<()> {
        self.inner.eval()
    }
    fn state_dict(&self) -> StateDict {
        self.inner.state_dict()
    }
    fn load_state_dict(&mut self, state_dict: &StateDict) -> ferroptim::Result<()> {
        self.inner.load_state_dict(state_dict)
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
        Optimizer::lr(&self.inner, 0).unwrap_or(0.0)
    }

    /// Sets every group's learning rate, as candle's optimizers have one.
    fn set_learning_rate(&mut self, lr: f64) {
        for group in 0..Optimizer::num_param_groups(&self.inner) {
            // Every index below num_param_groups exists.
            let _ = Optimizer::set_lr(&mut self.inner, group, lr);
        }
    }
}

/// The type aliases `Sgd`, `Adam`, ... one per row of ferroptim's registry
/// that runs per parameter (LBFGS is [`CandleLbfgs`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __candle_aliases {
    ($($name:ident: $config:ident, [$($alias:ident)?], $drive:ident, $matrices:literal, [$(($reads:literal, $writes:literal)),*], $bench:literal, $demo:expr, $full:expr, $traj:literal;)*) => {
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
    clip: Option<ClipGradNorm>,
    last_grad_norm: Option<f64>,
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
        clip: None,
        last_grad_norm: None,
    })
}

impl BoxedOptim {
    /// One step from the gradients in `grads` (for optimizers whose step
    /// takes gradients; LBFGS needs [`step_with_loss`](Self::step_with_loss)).
    pub fn step_with(&mut self, grads: &GradStore) -> Result<()> {
        let (clip, params) = (self.clip, &self.params);
        let norm = with_grads(params, grads, || {
            let norm = clip_with(clip, params)?;
            self.inner.step()?;
            Ok::<_, ferroptim::Error>(norm)
        })?;
        self.last_grad_norm = norm.or(self.last_grad_norm);
        Ok(())
    }

    /// As [`CandleOptim::set_clip_grad_norm`]: clip before each [`step_with`](Self::step_with).
    pub fn set_clip_grad_norm(&mut self, clip: Option<ClipGradNorm>) {
        self.clip = clip;
    }

    /// The total gradient norm before clipping, of the last step that clipped.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// One step with a closure computing the loss from the Vars, whose
    /// gradients come from candle's backward pass (torch's `step(closure)`;
    /// LBFGS calls it several times). Returns the first loss.
    pub fn step_with_loss(
        &mut self,
        mut loss: impl FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<f64> {
        step_with_loss(&mut *self.inner, &self.params, |_| loss())
    }

    /// [`step_with_loss`](Self::step_with_loss) with a closure that gets
    /// the [`LossContext`] (which evaluation this is).
    pub fn step_with_loss_context(
        &mut self,
        loss: impl FnMut(&LossContext) -> candle_core::Result<Tensor>,
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

/// The Vars of `varmap` as named parameters, ordered by name, each checked
/// (f32 or f64, on the CPU): what [`GroupSpec::named`] takes, or what to
/// split into groups by name. A `VarMap` hands its Vars out in hash order,
/// which changes from one process to the next; names do not.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use ferroptim_candle::{named_params, optim::AdamWConfig, AdamW, GroupSpec};
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// candle_nn::linear(4, 8, vb.pp("fc1"))?;
/// candle_nn::linear(8, 2, vb.pp("fc2"))?;
/// // Weights decay, biases do not.
/// let (biases, weights): (Vec<_>, Vec<_>) =
///     named_params(&varmap)?.into_iter().partition(|(name, _)| name.ends_with("bias"));
/// let groups = vec![GroupSpec::named(weights), GroupSpec::named(biases).set("weight_decay", 0.0)];
/// let opt = AdamW::with_groups(groups, AdamWConfig::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn named_params(varmap: &VarMap) -> Result<Vec<(String, CandleParam)>> {
    named_vars(model::vars_of(varmap))
}

/// `(name, Var)` pairs as named parameters, ordered by name (see
/// [`named_params`]); the same name twice is an error.
pub fn named_vars<S: Into<String>>(
    vars: impl IntoIterator<Item = (S, Var)>,
) -> Result<Vec<(String, CandleParam)>> {
    let mut vars: Vec<(String, Var)> = vars.into_iter().map(|(n, v)| (n.into(), v)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = vars.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::DuplicateName {
            name: pair[0].0.clone(),
        });
    }
    vars.into_iter()
        .enumerate()
        .map(|(i, (name, var))| match CandleParam::new(var, i) {
            Ok(p) => Ok((name, p)),
            Err(e) => Err(Error::Named {
                name,
                source: Box::new(e),
            }),
        })
        .collect()
}

/// Clips the attached gradients of `params` if `clip` says so; the total norm.
fn clip_with(clip: Option<ClipGradNorm>, params: &[CandleParam]) -> ferroptim::Result<Option<f64>> {
    clip.map(|c| clip::clip_grad_norm(params, c.max_norm, c.norm_type, c.error_if_nonfinite))
        .transpose()
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
    mut loss: impl FnMut(&LossContext) -> candle_core::Result<Tensor>,
) -> Result<f64> {
    let mut closure = |ctx: &mut LossContext| -> ferroptim::Result<f64> {
        let mut run = || -> Result<f64> {
            // The last evaluation's gradients are read already: free them
            // before this evaluation makes new ones.
            params.iter().for_each(CandleParam::detach_grad);
            let loss = loss(ctx)?;
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
    let result = opt.step_with_context(&mut closure);
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
