//! The stateful optimizer of torch's `torch.optim.Optimizer`, written once.
//!
//! [`Optimizer`] is the interface every optimizer offers (`zero_grad`, `step`,
//! `state_dict`, `load_state_dict`, the groups' hyperparameters, hooks, ...);
//! it is object safe, so `Box<dyn Optimizer>` works (see
//! [`optim::build`](crate::optim::build)) and the schedulers take any
//! optimizer. An implementation supplies its step and its state; the group
//! methods come from its [`GroupStore`] and the hooks from its
//! [`OptimizerHooks`].
//!
//! [`Optim<A, P>`] implements it for every algorithm `A` whose update is per
//! parameter and every kind of parameter `P` (a [`ParamSlot`]): the
//! algorithm module only supplies its hyperparameters and the update of one
//! parameter (an [`Algorithm`]) and its per-parameter state (a
//! [`ParamState`]). `Optim` is the shared group store ([`Groups`]) plus one
//! state per parameter.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::algorithm::{reduced_unsupported, Algorithm, Totals};
use crate::error::{Error, Result};
use crate::group::{GroupSpec, GroupStore, Groups, IntoParamGroups, ParamGroup, Precision};
use crate::hooks::Hooks;
use crate::parallel::Exec;
use crate::param::Param;
use crate::slot::{GradKind, GradRef, ParamMeta, ParamSlot, SlotData};
use crate::state::{ParamState, StateDict, StateEntries, StateValue};
use crate::tensor::{Dtype, Element, Storage, Tensor, TensorDataMut};

/// The hooks of an optimizer (see [`hooks`](crate::hooks)): each receives it as `&dyn Optimizer`.
pub type OptimizerHooks = Hooks<dyn Optimizer>;

/// What every optimizer offers: torch's `Optimizer` methods.
pub trait Optimizer: Send {
    /// torch's class name, e.g. `"Adam"`.
    fn name(&self) -> &'static str;

    /// The param groups, whatever the optimizer's hyperparameters.
    fn group_store(&self) -> &dyn GroupStore;

    /// The param groups, to change.
    fn group_store_mut(&mut self) -> &mut dyn GroupStore;

    /// The hooks registered on this optimizer.
    fn hooks(&self) -> &OptimizerHooks;

    /// One update of every parameter that has a gradient. Parameters without a
    /// gradient are skipped, as in torch. If any gradient is unusable, or a
    /// step pre-hook refuses, the call fails before anything changes.
    fn step(&mut self) -> Result<()>;

    /// Steps only if every gradient is finite (torch's GradScaler skips a
    /// step on `found_inf` the same way, without calling the step hooks).
    /// With a NaN or infinite gradient nothing changes, parameters nor
    /// state, and the outcome names the first such parameter (state_dict
    /// numbering); the gradients are left for the caller to inspect or clear.
    ///
    /// ```
    /// use ferroptim::{optim::{Sgd, SgdConfig}, Optimizer, Param, StepOutcome, Tensor};
    /// let p = Param::from_vec(vec![1.0f32], &[1])?;
    /// let mut opt = Sgd::new([p.clone()], SgdConfig { lr: 0.1, ..Default::default() })?;
    /// p.set_grad(Tensor::from_vec(vec![f32::NAN], &[1])?)?;
    /// assert_eq!(opt.step_if_finite()?, StepOutcome::Skipped { param: 0 });
    /// assert_eq!(p.to_vec::<f32>()?, [1.0]);
    /// p.set_grad(Tensor::from_vec(vec![1.0f32], &[1])?)?;
    /// assert_eq!(opt.step_if_finite()?, StepOutcome::Stepped);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    fn step_if_finite(&mut self) -> Result<StepOutcome>;

    /// One step of a run with AMP's gradient scaling, as torch's fused
    /// optimizers take GradScaler's `optimizer.grad_scale` and
    /// `optimizer.found_inf`: with `found_inf` nothing changes (parameters,
    /// state, step counts and gradients; the step hooks are not called);
    /// otherwise each gradient, `grad_scale` times the true one, is divided
    /// by it inside the update, in the type the step computes in (`f32` for
    /// the 16-bit types, so the update sees the unrounded quotient), and
    /// left unscaled in place, as torch leaves it. Only groups with
    /// `fused=True` (Adam, AdamW, SGD, Adagrad) take it, as in torch; a
    /// `grad_scale` that is not finite and positive is refused too, before
    /// anything changes.
    ///
    /// ```
    /// use ferroptim::{optim::{Sgd, SgdConfig}, Grad, Optimizer, Param, Tensor};
    /// let p = Param::from_vec(vec![1.0f32], &[1])?;
    /// let config = SgdConfig { lr: 0.1, fused: Some(true), ..Default::default() };
    /// let mut opt = Sgd::new([p.clone()], config)?;
    /// p.set_grad(Tensor::from_vec(vec![1024.0f32], &[1])?)?; // 1.0, scaled by 1024
    /// opt.step_scaled(Some(1024.0), false)?;
    /// assert_eq!(p.to_vec::<f32>()?, [0.9]);
    /// let Some(Grad::Dense(g)) = p.grad() else { unreachable!() };
    /// assert_eq!(g.as_slice::<f32>()?, [1.0]);
    /// opt.step_scaled(Some(1024.0), true)?; // found_inf: skipped
    /// assert_eq!(p.to_vec::<f32>()?, [0.9]);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    fn step_scaled(&mut self, grad_scale: Option<f32>, found_inf: bool) -> Result<()> {
        let _ = (grad_scale, found_inf);
        Err(Error::GradScalingUnsupported {
            optimizer: self.name(),
        })
    }

    /// Calls `closure` (which recomputes the loss and gradients), then steps,
    /// and returns the loss, as torch's `step(closure)`.
    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64>;

    /// [`Optimizer::step_with_closure`] with a closure that gets a
    /// [`LossContext`]: it can `zero_grad()` the optimizer's parameters
    /// (which `self` being borrowed for the step rules out otherwise) and
    /// knows which evaluation this is (LBFGS calls it up to `max_eval`
    /// times per step).
    ///
    /// ```
    /// use ferroptim::{optim::{Lbfgs, LbfgsConfig}, Optimizer, Param, Tensor};
    /// let x = Param::from_vec(vec![3.0f64], &[1])?;
    /// let mut opt = Lbfgs::new([x.clone()], LbfgsConfig::default())?;
    /// let mut evaluations = 0;
    /// opt.step_with_context(&mut |ctx| {
    ///     ctx.zero_grad();
    ///     evaluations = ctx.evaluation();
    ///     let v = x.to_vec::<f64>()?[0];
    ///     x.set_grad(Tensor::from_vec(vec![2.0 * v], &[1])?)?; // d/dx x²
    ///     Ok(v * v)
    /// })?;
    /// assert!(evaluations > 1 && x.to_vec::<f64>()?[0].abs() < 1e-6);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    fn step_with_context(
        &mut self,
        closure: &mut dyn FnMut(&mut LossContext) -> Result<f64>,
    ) -> Result<f64> {
        let mut ctx = LossContext {
            evaluation: 0,
            zero_grad: self.group_store().grad_zeroer(),
        };
        self.step_with_closure(&mut || {
            ctx.evaluation += 1;
            closure(&mut ctx)
        })
    }

    /// Puts the parameters at their training point, as Schedule-Free's
    /// `optimizer.train()` does (call it before training steps, as with
    /// `model.train()`); for optimizers whose parameters do not differ
    /// between training and evaluation, nothing happens.
    fn train(&mut self) -> Result<()> {
        Ok(())
    }

    /// Puts the parameters at their evaluation point (Schedule-Free's
    /// `optimizer.eval()`: call it before evaluating or saving the model);
    /// for other optimizers nothing happens.
    fn eval(&mut self) -> Result<()> {
        Ok(())
    }

    /// The state and hyperparameters, shaped like torch's `state_dict()`.
    fn state_dict(&self) -> StateDict;

    /// Restores a state_dict. Everything is checked first; on error the
    /// optimizer is exactly as it was.
    fn load_state_dict(&mut self, state_dict: &StateDict) -> Result<()>;

    /// Drops every gradient (torch's default `zero_grad(set_to_none=True)`).
    fn zero_grad(&mut self) {
        self.zero_grad_with(true);
    }

    /// `zero_grad(set_to_none)`: drop the gradients, or set them to zero in place.
    fn zero_grad_with(&mut self, set_to_none: bool) {
        self.group_store_mut().zero_grad_with(set_to_none);
    }

    /// Every group's hyperparameters and extra keys, with `params` (and
    /// `param_names` if named): the `param_groups` of
    /// [`Optimizer::state_dict`], without copying any state.
    fn param_groups_json(&self) -> Vec<Map<String, Value>> {
        self.group_store().param_groups_json()
    }

    /// Restores groups saved by [`Optimizer::param_groups_json`] (or the
    /// `param_groups` of a state_dict), leaving the state alone. Checked
    /// first, as `load_state_dict` checks them; on error nothing changes.
    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()> {
        self.group_store_mut().load_param_groups(groups)
    }

    /// The number of param groups.
    fn num_param_groups(&self) -> usize {
        self.group_store().len()
    }

    /// The defaults, as JSON (torch's `optimizer.defaults`).
    fn defaults_json(&self) -> Map<String, Value> {
        self.group_store().defaults_json()
    }

    /// A group's hyperparameter by torch's name (`group["momentum"]`).
    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value> {
        self.group_store().hyperparameter(group, key)
    }

    /// Sets a group's hyperparameter by name; the result is validated.
    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.group_store_mut().set_hyperparameter(group, key, value)
    }

    /// Sets a key of a group that is not one of this optimizer's
    /// hyperparameters, as torch's schedulers add `initial_lr` or `max_lr` to
    /// its group dicts; it is kept through `state_dict` round trips and read
    /// back with [`Optimizer::hyperparameter`]. Hyperparameters themselves go
    /// through [`Optimizer::set_hyperparameter`], which validates them.
    /// `null` is refused: it is what serde_json makes of a NaN or infinite
    /// float, which [`json::number`](crate::json::number) writes instead.
    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.group_store_mut().set_group_extra(group, key, value)
    }

    /// A group's learning rate (`None` if there is no such group).
    fn lr(&self, group: usize) -> Option<f64> {
        self.group_store().lr(group)
    }

    /// Sets a group's learning rate, as schedulers do (not validated, as in torch).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.group_store_mut().set_lr(group, lr)
    }

    crate::hooks::for_each_hook!(optimizer_register, dyn Optimizer + 'static);
}

/// An optimizer over parameters of kind `P` that takes more of them after
/// it is built, as torch's `optimizer.add_param_group({...})`: what
/// [`build`](crate::optim::build) returns, so that an optimizer made by name
/// grows like one made by type. LBFGS refuses, as torch's takes one group.
///
/// ```
/// use ferroptim::{optim, GroupSpec, Optimizer, Param};
/// let mut opt = optim::build("adamw", r#"{"lr": 0.01}"#, [Param::zeros::<f32>(&[2])])?;
/// opt.add_param_group(GroupSpec::new([Param::zeros::<f32>(&[3])]).set("lr", 0.1))?;
/// assert_eq!((opt.num_param_groups(), opt.lr(1)), (2, Some(0.1)));
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub trait AddParamGroup<P: ParamSlot>: Optimizer {
    /// Adds a param group; hyperparameters it leaves out come from the
    /// defaults. A group that fails validation changes nothing.
    fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()>;
}

impl<A: Algorithm, P: ParamSlot> AddParamGroup<P> for Optim<A, P> {
    fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()> {
        Optim::add_param_group(self, group)
    }
}

/// Runs a step between its hooks: pre-hooks first (an error stops the step
/// before anything changes), post-hooks after a step that succeeded. Every
/// optimizer's `step` and `step_with_closure` go through here.
pub(crate) fn hooked_step<O: Optimizer + 'static, R>(
    opt: &mut O,
    body: impl FnOnce(&mut O) -> Result<R>,
) -> Result<R> {
    opt.hooks().step_pre(&*opt)?;
    let out = body(opt)?;
    opt.hooks().step_post(&*opt);
    Ok(out)
}

/// Builds a state_dict between its hooks.
pub(crate) fn hooked_state_dict<O: Optimizer + 'static>(
    opt: &O,
    body: impl FnOnce() -> StateDict,
) -> StateDict {
    opt.hooks().state_dict_pre(opt);
    let mut sd = body();
    opt.hooks().state_dict_post(opt, &mut sd);
    sd
}

/// Loads a state_dict between its hooks: pre-hooks see (and may rewrite) a
/// copy, taken only when there are any.
pub(crate) fn hooked_load<O: Optimizer + 'static>(
    opt: &mut O,
    sd: &StateDict,
    body: impl FnOnce(&mut O, &StateDict) -> Result<()>,
) -> Result<()> {
    let mut sd = Cow::Borrowed(sd);
    if opt.hooks().has_load_pre() {
        opt.hooks().load_pre(&*opt, sd.to_mut())?;
    }
    body(opt, &sd)?;
    opt.hooks().load_post(&*opt);
    Ok(())
}

/// What a loss closure gets from [`Optimizer::step_with_context`].
pub struct LossContext {
    evaluation: usize,
    zero_grad: Box<dyn Fn(bool) + Send + Sync>,
}

impl LossContext {
    /// Which evaluation of the loss this is in the current step, from 1.
    pub fn evaluation(&self) -> usize {
        self.evaluation
    }

    /// Drops the gradients of the optimizer's parameters (torch's
    /// `optimizer.zero_grad()` at the top of a closure).
    pub fn zero_grad(&self) {
        (self.zero_grad)(true);
    }

    /// `zero_grad(set_to_none)`: drop the gradients, or zero them in place.
    pub fn zero_grad_with(&self, set_to_none: bool) {
        (self.zero_grad)(set_to_none);
    }
}

impl std::fmt::Debug for LossContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossContext")
            .field("evaluation", &self.evaluation)
            .finish_non_exhaustive()
    }
}

/// What [`Optimizer::step_if_finite`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Every gradient was finite and the step was taken.
    Stepped,
    /// Parameter `param` had a NaN or infinite gradient: nothing changed.
    Skipped {
        /// The first such parameter, in state_dict numbering.
        param: usize,
    },
}

/// An optimizer running algorithm `A` over param groups: `Optim<AdamConfig>`
/// is [`Adam`](crate::optim::Adam).
///
/// Parameters are ferroptim's [`Param`]s by default; `P` may be any
/// [`ParamSlot`], such as an adapter's handle on a framework's tensor.
///
/// # Master weights
///
/// A group added with `GroupSpec::set("master_weights", true)` keeps, for
/// each of its bfloat16 or float16 parameters, a float32 copy θ₃₂ in the
/// parameter's state (key `master_weight`, saved and loaded like any state).
/// A step runs the algorithm's float32 update on θ₃₂, with the gradient
/// widened to float32 and the algorithm's state in float32, then writes
/// the parameter back rounded to nearest even:
///
/// ```text
/// θ₃₂ ← update(θ₃₂, float32(g));   θ ← round(θ₃₂)
/// ```
///
/// so updates smaller than half a 16-bit ulp accumulate instead of being
/// lost. The copy starts from the parameter at its first step; a value
/// written into the parameter after that is overwritten by the next step.
/// A float32 or float64 parameter in such a group is a typed error.
///
/// # Stochastic rounding
///
/// A group added with `GroupSpec::set("stochastic_rounding", true)` keeps
/// its bfloat16 parameters in bfloat16 and no copy: a step runs the
/// algorithm's float32 update on the widened parameter (state in float32,
/// as above), then rounds each value x to one of its two bfloat16
/// neighbours, up with probability equal to x's distance from the lower
/// one in units of their gap, so that E[θ] = x:
///
/// ```text
/// θ ← bf16( bits(x) + r >> 16 ),   r = hash(seed, t, i) mod 2¹⁶
/// ```
///
/// where `r` comes from a counter-based hash (SplitMix64) of the
/// parameter's seed, its rounding step `t` and the element index `i`, so a
/// run is the same on every thread count and resumes bit for bit: the seed
/// and `t` are state (`rounding_seed`, `rounding_step`). The seed is the
/// parameter's index. Non-finite values round to nearest. A float16, float32
/// or float64 parameter in such a group is a typed error (float16 needs
/// `master_weights`).
///
/// # Kahan summation
///
/// A group added with `GroupSpec::set("kahan_summation", true)` keeps, for
/// each bfloat16 or float16 parameter, a compensation buffer `c` in the
/// parameter's dtype (state key `kahan_comp`, zero at the first step), as
/// optimī does (Zamirai et al., "Revisiting BFloat16 Training", 2020). A
/// step runs the algorithm's float32 update from the widened parameter (state in
/// float32) to a value x, and with Δ = x − θ, each operation rounded to the
/// parameter's dtype:
///
/// ```text
/// c ← c + Δ;   θ' ← θ + c;   c ← c + (θ − θ');   θ ← θ'
/// ```
///
/// so what rounding loses from θ stays in `c` and is added at a later step.
/// A float32 or float64 parameter in such a group is a typed error.
///
/// A group turns on at most one of the three modes. Each runs the
/// algorithm's float32 update, so it serves every algorithm whose step is
/// one update per parameter, those without a 16-bit path of their own
/// (Lion, Muon, SOAP, Adafactor, LAMB, ...) included; not Prodigy, whose
/// step is two passes over every parameter, nor Schedule-Free, whose
/// train/eval switch moves the stored values.
#[derive(Clone, Debug)]
pub struct Optim<A: Algorithm, P: ParamSlot = Param> {
    groups: Groups<A, P>,
    /// Each group's parameters' states, `None` before a parameter's first step.
    states: Vec<Vec<Option<A::State>>>,
    /// What a `master_weights` or `stochastic_rounding` group keeps beside
    /// each parameter's state, `None` before its first step (and always in
    /// other groups).
    companions: Vec<Vec<Option<Companion>>>,
    hooks: OptimizerHooks,
}

fn check_param<A: Algorithm, P: ParamSlot>(
    options: &A,
    p: &P,
    index: usize,
    precision: Precision,
) -> Result<()> {
    crate::algorithm::check_dtype(options, p.dtype(), precision, index)?;
    options.check_param(&p.shape(), index)
}

impl<A: Algorithm, P: ParamSlot> Optim<A, P> {
    /// An optimizer over `params` (a list of [`Param`]s, of named ones, or of
    /// [`GroupSpec`]s) with `defaults` for every hyperparameter a group does not set.
    pub fn new(params: impl IntoParamGroups<P>, defaults: A) -> Result<Self> {
        let groups = Groups::new(params, defaults, &check_param::<A, P>)?;
        let states: Vec<Vec<Option<A::State>>> = groups
            .as_slice()
            .iter()
            .map(|group| {
                let precision = Precision::of(&group.extra);
                let init = |p: &P| {
                    let shape = p.shape();
                    let dtype = precision.state_dtype(p.dtype());
                    A::EAGER_STATE.then(|| group.options.init_state(&ParamMeta::new(&shape, dtype)))
                };
                group.params.iter().map(init).collect()
            })
            .collect();
        let companions = states.iter().map(|s| vec![None; s.len()]).collect();
        Ok(Optim {
            groups,
            states,
            companions,
            hooks: OptimizerHooks::default(),
        })
    }

    /// The defaults (torch's `optimizer.defaults`).
    pub fn defaults(&self) -> &A {
        self.groups.defaults()
    }

    /// The param groups.
    pub fn param_groups(&self) -> &[ParamGroup<A, P>] {
        self.groups.as_slice()
    }

    /// The param groups, to change hyperparameters between steps.
    pub fn param_groups_mut(&mut self) -> &mut [ParamGroup<A, P>] {
        self.groups.as_mut_slice()
    }

    /// Where `param` is: its group and its position in that group.
    fn position(&self, param: &P) -> Option<(usize, usize)> {
        let mut groups = self.groups.as_slice().iter().enumerate();
        groups.find_map(|(g, group)| Some((g, group.params.iter().position(|p| p.same_as(param))?)))
    }

    /// The state of `param` (torch's `optimizer.state[param]`); `None` before its first step.
    pub fn state(&self, param: &P) -> Option<&A::State> {
        let (g, i) = self.position(param)?;
        self.states[g][i].as_ref()
    }

    /// The float32 copy a `master_weights` group keeps of `param`; `None`
    /// before its first step or outside such a group.
    pub fn master_weight(&self, param: &P) -> Option<&Tensor> {
        let (g, i) = self.position(param)?;
        match &self.companions[g][i] {
            Some(Companion::Master(m)) => Some(m),
            _ => None,
        }
    }

    /// Adds a param group; hyperparameters it leaves out come from the
    /// defaults. Its parameters' state starts at their first step.
    pub fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()> {
        let len = group.params.len();
        self.groups.add(group, &check_param::<A, P>)?;
        self.states.push(vec![None; len]);
        self.companions.push(vec![None; len]);
        Ok(())
    }

    /// Every parameter, numbered as in the state_dict.
    pub fn params(&self) -> Vec<P> {
        self.groups.params().cloned().collect()
    }

    /// Checks every group's mode, and every gradient and the state it will
    /// update, before anything is updated. Across the pool when the step
    /// has one (on 100k small parameters this sweep is a fifth of the
    /// step); the error is the first parameter's in order either way.
    fn check_grads(&self) -> Result<()> {
        self.check_modes()?;
        crate::parallel::with_pool(|exec| {
            let mut first = 0;
            for (group, states) in self.groups.as_slice().iter().zip(&self.states) {
                let (options, precision) = (&group.options, Precision::of(&group.extra));
                let check = |(i, (p, state)): (usize, (&P, &Option<A::State>))| {
                    check_one(options, first + i, p, state.as_ref(), precision).err()
                };
                let found = match &exec {
                    Exec::Install(pool) if group.params.len() > 1 => pool.install(|| {
                        use rayon::prelude::*;
                        let pairs = group.params.par_iter().zip(states.par_iter());
                        pairs.enumerate().find_map_first(check)
                    }),
                    _ => group.params.iter().zip(states).enumerate().find_map(check),
                };
                if let Some(e) = found {
                    return Err(e);
                }
                first += group.params.len();
            }
            Ok(())
        })
    }

    /// A step needs every group in training mode, if it has modes.
    fn check_modes(&self) -> Result<()> {
        let groups = self.groups.as_slice().iter();
        match groups
            .map(|g| g.options.train_mode())
            .position(|m| m == Some(false))
        {
            Some(group) => Err(crate::Error::NotInTrainMode {
                optimizer: A::NAME,
                group,
            }),
            None => Ok(()),
        }
    }

    /// Moves every group in the other mode to `train` (see [`Optimizer::train`]).
    fn set_mode(&mut self, train: bool) -> Result<()> {
        let mut first = 0;
        for (group, states) in self.groups.as_mut_slice().iter_mut().zip(&self.states) {
            let len = group.params.len();
            if group.options.train_mode() == Some(!train) {
                for (i, (p, state)) in group.params.iter().zip(states).enumerate() {
                    let Some(state) = state else { continue };
                    let options = &group.options;
                    p.with_value_mut(first + i, &mut |data| match data {
                        TensorDataMut::F32(v) => options.switch_mode(train, v, state),
                        TensorDataMut::F64(v) => options.switch_mode(train, v, state),
                        // check_dtype refuses them for every algorithm with modes.
                        data => Err(reduced_unsupported::<A>(
                            format!("parameter {}", first + i),
                            data.dtype(),
                            false,
                        )),
                    })?;
                }
                group.options.set_train_mode(train);
            }
            first += len;
        }
        Ok(())
    }

    /// pytorch-optimizer's `get_global_gradient_norm`: every gradient's norm
    /// in its own dtype, then as `f32` squared and summed in order, as
    /// torch sums a short float32 vector (measured: bit for bit on its
    /// fixtures); `0` without gradients. Dense gradients only, as
    /// [`Optim::check_grads`] has made sure.
    fn global_grad_sq_norm(&self) -> Result<f32> {
        fn norm<T: Element>(g: &[T]) -> f32 {
            T::from_f64(crate::kernels::reduce::sum_sq(g).sqrt()).to_f64() as f32
        }
        let mut total = 0.0f32;
        for (index, p) in self.groups.params().enumerate() {
            p.with_grad_mut(index, &mut |g| {
                // A 16-bit gradient is in a float32 mode's group (check_dtype
                // refuses it elsewhere), whose step is the float32 one: widened.
                fn widened<S: Storage<Math = f32>>(g: &[S]) -> f32 {
                    with_buffer(|b| {
                        b.extend(g.iter().map(|x| x.load()));
                        norm(b)
                    })
                }
                let n = match g {
                    TensorDataMut::F32(v) => norm(v),
                    TensorDataMut::F64(v) => norm(v),
                    TensorDataMut::BF16(v) => widened(v),
                    TensorDataMut::F16(v) => widened(v),
                };
                total += n * n;
                Ok(())
            })?;
        }
        Ok(total)
    }

    /// Leaves every dense gradient divided by `grad_scale`, rounded to its
    /// dtype as torch's fused kernels store it (the update has used the
    /// same quotient, unrounded).
    fn unscale_grads(&self, grad_scale: f32) -> Result<()> {
        fn unscale<S: Storage>(g: &mut [S], scale: f32) {
            let scale = S::Math::from_f64(f64::from(scale));
            for x in g {
                *x = S::store(x.load() / scale);
            }
        }
        for (index, p) in self.groups.params().enumerate() {
            p.with_grad_mut(index, &mut |g| {
                match g {
                    TensorDataMut::F32(v) => unscale(v, grad_scale),
                    TensorDataMut::F64(v) => unscale(v, grad_scale),
                    TensorDataMut::BF16(v) => unscale(v, grad_scale),
                    TensorDataMut::F16(v) => unscale(v, grad_scale),
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A gathering step's first pass ([`Algorithm::GATHERS`]): every
    /// parameter with a gradient gathers (its state created first), and the
    /// totals are added in parameter order, whatever the threads.
    fn gather_all(&mut self) -> Result<Totals> {
        let (groups, states) = (self.groups.as_slice(), &mut self.states);
        let mut totals = [0.0; 2];
        let mut add = |t: Totals| {
            totals[0] += t[0];
            totals[1] += t[1];
        };
        crate::parallel::with_pool(|exec| {
            let mut first = 0;
            for (group, states) in groups.iter().zip(states.iter_mut()) {
                let options = &group.options;
                match &exec {
                    Exec::Install(pool) if group.params.len() > 1 => {
                        let each: Vec<Result<Totals>> = pool.install(|| {
                            use rayon::prelude::*;
                            let pairs = group.params.par_iter().zip(states.par_iter_mut());
                            pairs
                                .enumerate()
                                .map(|(i, (p, slot))| gather_one(options, first + i, p, slot))
                                .collect()
                        });
                        for t in each {
                            add(t?);
                        }
                    }
                    _ => {
                        let pairs = group.params.iter().zip(states.iter_mut());
                        for (i, (p, slot)) in pairs.enumerate() {
                            add(gather_one(options, first + i, p, slot)?);
                        }
                    }
                }
                first += group.params.len();
            }
            Ok::<(), crate::Error>(())
        })?;
        Ok(totals)
    }

    /// The step itself, without hooks.
    /// One update of every parameter with a gradient, each gradient
    /// divided by `grad_scale` inside the update when there is one (see
    /// [`Optimizer::step_scaled`], which checked every group takes it).
    fn update_all(&mut self, grad_scale: Option<f32>) -> Result<()> {
        self.check_grads()?;
        if A::GATHERS {
            A::begin_gather(self.groups.as_mut_slice())?;
            let totals = self.gather_all()?;
            if !A::end_gather(self.groups.as_mut_slice(), totals) {
                return Ok(());
            }
        }
        let defaults = self.groups.defaults().clone();
        let sq_norm = if defaults.needs_global_grad_norm() {
            Some(self.global_grad_sq_norm()?)
        } else {
            None
        };
        for group in self.groups.as_mut_slice() {
            if let Some(sq_norm) = sq_norm {
                group.options.set_global_grad_norm(&defaults, sq_norm);
            }
            group.options.begin_step();
        }
        let groups = self.groups.as_slice();
        let (states, companions) = (&mut self.states, &mut self.companions);
        crate::parallel::with_pool(|exec| {
            let mut first = 0;
            let each = groups.iter().zip(states.iter_mut()).zip(companions);
            for ((group, states), companions) in each {
                let options = &group.options;
                let precision = Precision::of(&group.extra);
                let one =
                    |i: usize, p: &P, slot: &mut _, c: &mut Option<Companion>| match grad_scale {
                        Some(scale) => update_scaled(options, first + i, p, slot, scale),
                        None => update_one(options, first + i, p, slot, precision, c),
                    };
                match &exec {
                    // Parameters are independent: spread them over the threads.
                    Exec::Install(pool) if group.params.len() > 1 => pool.install(|| {
                        use rayon::prelude::*;
                        let each = group.params.par_iter().zip(states.par_iter_mut());
                        each.zip(companions.par_iter_mut())
                            .enumerate()
                            .try_for_each(|(i, ((p, slot), m))| one(i, p, slot, m))
                    })?,
                    _ => {
                        let each = group.params.iter().zip(states.iter_mut());
                        for (i, ((p, slot), m)) in each.zip(companions.iter_mut()).enumerate() {
                            one(i, p, slot, m)?;
                        }
                    }
                }
                first += group.params.len();
            }
            Ok(())
        })
    }
}

impl<A: Algorithm, P: ParamSlot> Optimizer for Optim<A, P> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn group_store(&self) -> &dyn GroupStore {
        &self.groups
    }

    fn group_store_mut(&mut self) -> &mut dyn GroupStore {
        &mut self.groups
    }

    fn hooks(&self) -> &OptimizerHooks {
        &self.hooks
    }

    fn step(&mut self) -> Result<()> {
        hooked_step(self, |opt| opt.update_all(None))
    }

    fn step_scaled(&mut self, grad_scale: Option<f32>, found_inf: bool) -> Result<()> {
        let groups = self.groups.as_slice();
        let plain = |g: &ParamGroup<A, P>| Precision::of(&g.extra) == Precision::Plain;
        if !groups
            .iter()
            .all(|g| g.options.takes_grad_scale() && plain(g))
        {
            return Err(Error::GradScalingUnsupported { optimizer: A::NAME });
        }
        if let Some(scale) = grad_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::hyper(
                "grad_scale",
                format!("Invalid grad_scale: {scale} (expected a finite, positive scale)"),
            ));
        }
        if found_inf {
            return Ok(());
        }
        hooked_step(self, |opt| {
            opt.update_all(grad_scale)?;
            if let Some(scale) = grad_scale {
                opt.unscale_grads(scale)?;
            }
            Ok(())
        })
    }

    fn step_if_finite(&mut self) -> Result<StepOutcome> {
        if let Some(param) = self.groups.params().position(|p| !p.grad_is_finite()) {
            return Ok(StepOutcome::Skipped { param });
        }
        self.step()?;
        Ok(StepOutcome::Stepped)
    }

    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        hooked_step(self, |opt| {
            opt.check_modes()?;
            let loss = closure()?;
            opt.update_all(None)?;
            Ok(loss)
        })
    }

    fn train(&mut self) -> Result<()> {
        self.set_mode(true)
    }

    fn eval(&mut self) -> Result<()> {
        self.set_mode(false)
    }

    fn state_dict(&self) -> StateDict {
        hooked_state_dict(self, || {
            let states = self.states.iter().flatten();
            let companions = self.companions.iter().flatten();
            let state = states
                .zip(companions)
                .enumerate()
                .filter_map(|(index, (state, companion))| {
                    let mut entries = state.as_ref()?.to_entries();
                    if let Some(companion) = companion {
                        companion.save(&mut entries);
                    }
                    (!entries.is_empty()).then_some((index, entries))
                })
                .collect();
            StateDict {
                state,
                param_groups: self.groups.param_groups_json(),
            }
        })
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        hooked_load(self, sd, |opt, sd| {
            let saved = opt.groups.read_saved(&sd.param_groups, true)?;
            let position = Groups::<A, P>::positions(&saved)?;
            let groups = opt.groups.as_slice();
            // A 16-bit parameter of an algorithm that steps it only in a
            // float32 mode needs its saved group to have one.
            for (group, saved) in groups.iter().zip(&saved) {
                for (p, &id) in group.params.iter().zip(&saved.ids) {
                    let precision = saved.precision();
                    crate::algorithm::check_dtype(&saved.options, p.dtype(), precision, id)?;
                }
            }
            let mut states: Vec<Vec<Option<A::State>>> =
                groups.iter().map(|g| vec![None; g.params.len()]).collect();
            let mut companions: Vec<Vec<Option<Companion>>> =
                groups.iter().map(|g| vec![None; g.params.len()]).collect();
            for (&id, entries) in &sd.state {
                let &(g, i) = position.get(&id).ok_or_else(|| {
                    crate::Error::state(
                        format!("state[{id}]"),
                        "no param group lists this parameter index",
                    )
                })?;
                if entries.is_empty() {
                    // torch's defaultdict leaves `{}` for a parameter that was
                    // looked up but never stepped (Schedule-Free's train()).
                    continue;
                }
                let param = &groups[g].params[i];
                let shape = param.shape();
                // read_saved has checked the mode against the dtype.
                let precision = saved[g].precision();
                let dtype = precision.state_dtype(param.dtype());
                let mut reader = StateEntries::new(id, &shape, dtype, entries);
                companions[g][i] = Companion::load(precision, param.dtype(), &mut reader)?;
                let state = A::State::from_entries(reader)?;
                saved[g].options.check_state(&state, id)?;
                states[g][i] = Some(state);
            }
            // Everything checked: commit.
            opt.groups.commit(saved);
            opt.states = states;
            opt.companions = companions;
            Ok(())
        })
    }
}

/// One update of parameter `index` (state_dict numbering), creating its
/// state on its first step.
/// Parameter `index`'s gradient, and the state it will update, as a step
/// needs them. A parameter's shape is checked when its group is added; its
/// group's hyperparameters may have changed since (SOAP's merge_dims), so
/// again before its state exists, and its state after that.
fn check_one<A: Algorithm, P: ParamSlot>(
    options: &A,
    index: usize,
    p: &P,
    state: Option<&A::State>,
    precision: Precision,
) -> Result<()> {
    if let Some(kind) = p.grad_kind(index)? {
        options.check_grad(kind == GradKind::Sparse, index)?;
        if kind == GradKind::Sparse {
            check_dense_only_dtype::<A>(p.dtype(), index)?;
        }
        match state {
            Some(state) => options.check_state(state, index)?,
            None => check_param(options, p, index, precision)?,
        }
    }
    Ok(())
}

/// What a 16-bit parameter's precision mode keeps beside its state.
#[derive(Clone, Debug)]
enum Companion {
    /// `master_weights`: the float32 copy (state key `master_weight`).
    Master(Tensor),
    /// `stochastic_rounding`: the hash's seed and the number of steps
    /// rounded so far (`rounding_seed`, `rounding_step`).
    Rounding { seed: u64, step: u64 },
    /// `kahan_summation`: the compensation, in the parameter's dtype
    /// (`kahan_comp`).
    Kahan(Tensor),
}

const MASTER_WEIGHT: &str = "master_weight";
const ROUNDING_SEED: &str = "rounding_seed";
const ROUNDING_STEP: &str = "rounding_step";
const KAHAN_COMP: &str = "kahan_comp";

impl Companion {
    fn save(&self, entries: &mut crate::state::ParamStateDict) {
        match self {
            Companion::Master(m) => {
                entries.insert(MASTER_WEIGHT.into(), StateValue::Tensor(m.clone()));
            }
            Companion::Rounding { seed, step } => {
                // Both below 2^53 (StateEntries::step checks it on load).
                entries.insert(ROUNDING_SEED.into(), StateValue::Int(*seed as i64));
                entries.insert(ROUNDING_STEP.into(), StateValue::Int(*step as i64));
            }
            Companion::Kahan(c) => {
                entries.insert(KAHAN_COMP.into(), StateValue::Tensor(c.clone()));
            }
        }
    }

    /// Reads the companion of a parameter of dtype `param` (the reader's
    /// dtype is the state's, float32).
    fn load(
        precision: Precision,
        param: Dtype,
        reader: &mut StateEntries<'_>,
    ) -> Result<Option<Companion>> {
        Ok(match precision {
            Precision::Plain => None,
            Precision::MasterWeights => Some(Companion::Master(reader.tensor(MASTER_WEIGHT)?)),
            Precision::StochasticRounding => Some(Companion::Rounding {
                seed: reader.step(ROUNDING_SEED)? as u64,
                step: reader.step(ROUNDING_STEP)? as u64,
            }),
            Precision::KahanSummation => {
                Some(Companion::Kahan(reader.tensor(KAHAN_COMP)?.to_dtype(param)))
            }
        })
    }
}

/// One update of parameter `index` (state_dict numbering), creating its
/// state (and its precision mode's companion) on its first step.
fn update_one<A: Algorithm, P: ParamSlot>(
    options: &A,
    index: usize,
    p: &P,
    slot: &mut Option<A::State>,
    precision: Precision,
    companion: &mut Option<Companion>,
) -> Result<()> {
    use Precision::{KahanSummation, MasterWeights, Plain, StochasticRounding};
    p.update_in_place(index, &mut |shape, data| match (data, precision) {
        (SlotData::BF16(v, g), MasterWeights) => {
            update_master(options, index, shape, v, g, slot, companion)
        }
        (SlotData::F16(v, g), MasterWeights) => {
            update_master(options, index, shape, v, g, slot, companion)
        }
        (SlotData::BF16(v, g), StochasticRounding) => {
            update_rounded(options, index, shape, v, g, slot, companion)
        }
        (SlotData::BF16(v, g), KahanSummation) => {
            update_kahan(options, index, shape, v, g, slot, companion)
        }
        (SlotData::F16(v, g), KahanSummation) => {
            update_kahan(options, index, shape, v, g, slot, companion)
        }
        (data, MasterWeights | StochasticRounding | KahanSummation) => {
            precision.check_dtype::<A>(data.dtype(), index)
        }
        (SlotData::F32(v, g), Plain) => update_typed(options, index, shape, v, g, slot),
        (SlotData::F64(v, g), Plain) => update_typed(options, index, shape, v, g, slot),
        (SlotData::BF16(v, g), Plain) => update_reduced(options, index, shape, v, g, slot),
        (SlotData::F16(v, g), Plain) => update_reduced(options, index, shape, v, g, slot),
    })
}

/// One update of parameter `index` (state_dict numbering) whose gradient
/// is `grad_scale` times the true one ([`Optimizer::step_scaled`]), in a
/// group that takes it (checked): the algorithm divides it in its update.
fn update_scaled<A: Algorithm, P: ParamSlot>(
    options: &A,
    index: usize,
    p: &P,
    slot: &mut Option<A::State>,
    grad_scale: f32,
) -> Result<()> {
    fn typed<A: Algorithm, S: Storage>(
        options: &A,
        index: usize,
        shape: &[usize],
        values: &mut [S],
        grad: GradRef<'_, S>,
        slot: &mut Option<A::State>,
        grad_scale: f32,
    ) -> Result<()> {
        let GradRef::Dense(g) = grad else {
            // The fused kernels take no sparse gradient (check_grad refused it).
            return options.check_grad(true, index);
        };
        let meta = ParamMeta::new(shape, S::DTYPE);
        let state = slot.get_or_insert_with(|| options.init_state(&meta));
        options.update_scaled(values, g, shape, state, grad_scale)
    }
    p.update_in_place(index, &mut |shape, data| match data {
        SlotData::F32(v, g) => typed(options, index, shape, v, g, slot, grad_scale),
        SlotData::F64(v, g) => typed(options, index, shape, v, g, slot, grad_scale),
        SlotData::BF16(v, g) => typed(options, index, shape, v, g, slot, grad_scale),
        SlotData::F16(v, g) => typed(options, index, shape, v, g, slot, grad_scale),
    })
}

/// The float32 update of a 16-bit parameter's values `x` (a master copy,
/// or the widened parameter), with the gradient widened and the state in
/// float32.
fn update_widened<A: Algorithm, S: Storage<Math = f32>>(
    options: &A,
    index: usize,
    shape: &[usize],
    x: &mut [f32],
    grad: GradRef<'_, S>,
    slot: &mut Option<A::State>,
    precision: Precision,
) -> Result<()> {
    crate::algorithm::check_dtype(options, S::DTYPE, precision, index)?;
    let GradRef::Dense(g) = grad else {
        return check_dense_only_dtype::<A>(S::DTYPE, index);
    };
    with_buffer(|buffer| {
        buffer.extend(g.iter().map(|&x| x.load()));
        let g = &buffer[..];
        let meta = ParamMeta::new(shape, Dtype::F32);
        let state = slot.get_or_insert_with(|| options.init_state_from(x, &meta));
        options.update(x, g, shape, state)
    })
}

/// Runs `f` on an empty float32 buffer kept by the thread between steps
/// (for a parameter's widened values or gradient): a fresh allocation per step is, for a 10M-element
/// parameter, 40 MB of page faults that cost as much as the step. The
/// buffer is taken out of the thread's pool while `f` runs (so a nested
/// call, or a step of another parameter stolen by this thread, takes
/// another); the pool keeps at most four, each as large as the largest
/// parameter it has held.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    }
    let mut buffer = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    buffer.clear();
    let result = f(&mut buffer);
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < 4 {
            pool.push(buffer);
        }
    });
    result
}

/// A 16-bit parameter's step through its float32 master copy (see
/// [`Optim`]'s "Master weights"): the float32 update on the copy, then the
/// parameter rounded from it.
fn update_master<A: Algorithm, S: Storage<Math = f32>>(
    options: &A,
    index: usize,
    shape: &[usize],
    values: &mut [S],
    grad: GradRef<'_, S>,
    slot: &mut Option<A::State>,
    companion: &mut Option<Companion>,
) -> Result<()> {
    let mut fresh = None;
    let master = match companion {
        Some(Companion::Master(m)) => m,
        _ => fresh.insert(Tensor::from_vec(
            values.iter().map(|&v| v.load()).collect(),
            shape,
        )?),
    };
    let m = master.as_slice_mut::<f32>()?;
    update_widened(
        options,
        index,
        shape,
        m,
        grad,
        slot,
        Precision::MasterWeights,
    )?;
    for (v, &x) in values.iter_mut().zip(m.iter()) {
        *v = S::store(x);
    }
    if let Some(m) = fresh {
        *companion = Some(Companion::Master(m));
    }
    Ok(())
}

/// A bfloat16 parameter's step with stochastic rounding (see [`Optim`]'s
/// "Stochastic rounding"): the float32 update of the widened values, each
/// rounded up or down by a hash of (seed, step, element).
fn update_rounded<A: Algorithm>(
    options: &A,
    index: usize,
    shape: &[usize],
    values: &mut [half::bf16],
    grad: GradRef<'_, half::bf16>,
    slot: &mut Option<A::State>,
    companion: &mut Option<Companion>,
) -> Result<()> {
    let (seed, step) = match companion {
        Some(Companion::Rounding { seed, step }) => (*seed, *step),
        _ => (index as u64, 0),
    };
    with_buffer(|x| -> Result<()> {
        x.extend(values.iter().map(|v| v.to_f32()));
        let mode = Precision::StochasticRounding;
        update_widened(options, index, shape, x, grad, slot, mode)?;
        let stream = crate::kernels::rounding::Stream::new(seed, step);
        for (i, (v, &x)) in values.iter_mut().zip(x.iter()).enumerate() {
            *v = crate::kernels::rounding::round_bf16(x, stream.bits(i as u64));
        }
        Ok(())
    })?;
    *companion = Some(Companion::Rounding {
        seed,
        step: step + 1,
    });
    Ok(())
}

/// A 16-bit parameter's step with Kahan summation (see [`Optim`]'s "Kahan
/// summation"): the float32 update's change Δ is added to the parameter
/// through the compensation `c`, each operation rounded to the dtype.
fn update_kahan<A: Algorithm, S: Storage<Math = f32>>(
    options: &A,
    index: usize,
    shape: &[usize],
    values: &mut [S],
    grad: GradRef<'_, S>,
    slot: &mut Option<A::State>,
    companion: &mut Option<Companion>,
) -> Result<()> {
    with_buffer(|x| -> Result<()> {
        x.extend(values.iter().map(|v| v.load()));
        let mode = Precision::KahanSummation;
        update_widened(options, index, shape, x, grad, slot, mode)?;
        let mut fresh = None;
        let comp = match companion {
            Some(Companion::Kahan(c)) => c,
            _ => fresh.insert(Tensor::from_vec(vec![S::store(0.0); values.len()], shape)?),
        };
        for ((v, c), &new) in values
            .iter_mut()
            .zip(comp.as_slice_mut::<S>()?)
            .zip(x.iter())
        {
            let old = v.load();
            let sum = S::store(c.load() + (new - old));
            *v = S::store(old + sum.load());
            *c = S::store(sum.load() + S::store(old - v.load()).load());
        }
        if let Some(c) = fresh {
            *companion = Some(Companion::Kahan(c));
        }
        Ok(())
    })
}

/// Sparse gradients are taken for `f32` and `f64` parameters only.
fn check_dense_only_dtype<A: Algorithm>(dtype: crate::Dtype, index: usize) -> Result<()> {
    if dtype.is_reduced() {
        return Err(Error::DtypeUnsupported {
            what: format!("the sparse gradient of parameter {index}"),
            dtype,
            refused_by: A::NAME,
            supported: "float32 and float64 for sparse gradients",
        });
    }
    Ok(())
}

/// [`update_typed`] for a 16-bit parameter: its state starts from its
/// shape and dtype alone, and its gradient is dense.
fn update_reduced<A: Algorithm, S: Storage>(
    options: &A,
    index: usize,
    shape: &[usize],
    values: &mut [S],
    grad: GradRef<'_, S>,
    slot: &mut Option<A::State>,
) -> Result<()> {
    crate::algorithm::check_dtype(options, S::DTYPE, Precision::Plain, index)?;
    let GradRef::Dense(g) = grad else {
        return check_dense_only_dtype::<A>(S::DTYPE, index);
    };
    let state = slot.get_or_insert_with(|| options.init_state(&ParamMeta::new(shape, S::DTYPE)));
    options.update_reduced(values, g, shape, state)
}

/// The first pass of a gathering step over parameter `index`, creating its
/// state on its first step; nothing without a gradient.
fn gather_one<A: Algorithm, P: ParamSlot>(
    options: &A,
    index: usize,
    p: &P,
    slot: &mut Option<A::State>,
) -> Result<Totals> {
    fn typed<A: Algorithm, T: Element>(
        options: &A,
        index: usize,
        shape: &[usize],
        values: &[T],
        grad: GradRef<'_, T>,
        slot: &mut Option<A::State>,
    ) -> Result<Totals> {
        let meta = ParamMeta::new(shape, T::DTYPE);
        let state = slot.get_or_insert_with(|| options.init_state_from(values, &meta));
        match grad {
            GradRef::Dense(g) => options.gather(values, g, state),
            // A gathering step takes dense gradients only.
            GradRef::Sparse(_) => Err(crate::Error::SparseGradUnsupported {
                optimizer: A::NAME,
                param: index,
            }),
        }
    }
    let mut totals = [0.0; 2];
    p.update_in_place(index, &mut |shape, data| {
        totals = match data {
            SlotData::F32(v, g) => typed(options, index, shape, v, g, slot)?,
            SlotData::F64(v, g) => typed(options, index, shape, v, g, slot)?,
            // check_dtype refuses them for every gathering algorithm.
            data => {
                return Err(reduced_unsupported::<A>(
                    format!("parameter {index}"),
                    data.dtype(),
                    false,
                ))
            }
        };
        Ok(())
    })?;
    Ok(totals)
}

fn update_typed<A: Algorithm, T: Element>(
    options: &A,
    index: usize,
    shape: &[usize],
    values: &mut [T],
    grad: GradRef<'_, T>,
    slot: &mut Option<A::State>,
) -> Result<()> {
    let meta = ParamMeta::new(shape, T::DTYPE);
    let state = slot.get_or_insert_with(|| options.init_state_from(values, &meta));
    match grad {
        GradRef::Dense(g) => options.update(values, g, shape, state),
        GradRef::Sparse(g) => options.update_sparse(values, shape, g, state, index),
    }
}
