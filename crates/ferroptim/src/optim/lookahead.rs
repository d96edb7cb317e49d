//! Lookahead, wrapped around any optimizer, as pytorch-optimizer 4.1.0's
//! `Lookahead`.
//!
//! Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
//! back" (NeurIPS 2019). The base optimizer moves the fast weights θ; every
//! `k` of its steps (counted per group, in the group's `counter`), each
//! parameter of the group that has a gradient is pulled toward its slow
//! weights φ, which then take its value:
//!
//! ```text
//! θ ← lerp(θ, φ, 1 − α) = α·θ + (1 − α)·φ
//! φ ← θ
//! ```
//!
//! `pullback_momentum` says what happens to the base optimizer's
//! `momentum_buffer` b at that moment: `none` leaves it, `reset` zeroes it,
//! `pullback` gives it the same interpolation toward a slow copy
//! (`b ← lerp(b, b_slow, 1 − α)`, `b_slow ← b`).
//!
//! The state_dict is the base optimizer's, with Lookahead's `slow_params`
//! (and `slow_momentum`) in every parameter's state and each group's
//! `counter` in its group, as the reference keeps them; the reference's
//! own layout nests the two (`lookahead_state`, keyed by `(group, index)`,
//! and `base_optimizer`).
//!
//! A torch file of the reference's `state_dict()` reads as this one
//! ([`StateDict::load_torch`] merges the two parts), and
//! `tools/ferroptim_checkpoint.py`'s `load_lookahead` splits a ferroptim
//! checkpoint back into them for the reference's `load_state_dict`.
//!
//! As the reference, [`Lookahead::backup_and_load_cache`] swaps the slow
//! weights in for an evaluation (keeping the fast ones as `backup_params`
//! in the state) and [`Lookahead::clear_and_load_backup`] swaps them back;
//! [`AddParamGroup::add_param_group`] adds a group to the base and starts
//! its slow weights at the parameters' values.
//!
//! Where the reference is loose, this one refuses: `reset` and `pullback`
//! need a base whose state has a `momentum_buffer` (SGD or RMSprop with
//! `momentum > 0`, Muon); the reference would add the key to any base
//! (Adam's state included), where nothing reads it. A second
//! `backup_and_load_cache` before the backup is cleared is an error, where
//! the reference would overwrite the fast weights with the slow ones and
//! lose them; `clear_and_load_backup` without a backup is an error (the
//! reference's `KeyError`), and changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::group::{GroupSpec, GroupStore, IntoParamGroups};
use crate::kernels::{self, LookaheadScalars, LookaheadSlices};
use crate::optimizer::{
    hooked_load, hooked_state_dict, hooked_step, AddParamGroup, Optimizer, OptimizerHooks,
    StepOutcome,
};
use crate::param::Param;
use crate::slot::ParamSlot;
use crate::state::{ParamStateDict, StateDict, StateEntries, StateValue};
use crate::tensor::{Dtype, Element, Tensor, TensorDataMut};

/// What Lookahead does to the base optimizer's momentum at each update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullbackMomentum {
    /// Leave it (the default).
    #[default]
    None,
    /// Set it to zero.
    Reset,
    /// Interpolate it toward its slow copy, as the weights.
    Pullback,
}

impl PullbackMomentum {
    /// The reference's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullbackMomentum::None => "none",
            PullbackMomentum::Reset => "reset",
            PullbackMomentum::Pullback => "pullback",
        }
    }
}

/// Lookahead's own arguments, with the reference's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookaheadConfig {
    /// Base optimizer steps between updates of the slow weights (default 5).
    pub k: i64,
    /// How far the fast weights stay from the slow ones, in `[0, 1)` (default 0.5).
    pub alpha: f64,
    /// What happens to the base optimizer's momentum (default `none`).
    pub pullback_momentum: PullbackMomentum,
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        LookaheadConfig {
            k: 5,
            alpha: 0.5,
            pullback_momentum: PullbackMomentum::None,
        }
    }
}

impl LookaheadConfig {
    /// The reference's checks, with its messages.
    pub fn validate(&self) -> Result<()> {
        if self.k <= 0 {
            return Err(Error::InvalidHyperparameter {
                name: "k",
                message: "k must be positive".into(),
            });
        }
        if !(0.0 <= self.alpha && self.alpha < 1.0) {
            return Err(Error::InvalidHyperparameter {
                name: "alpha",
                message: "alpha must be in the range [0.0, 1.0)".into(),
            });
        }
        Ok(())
    }
}

/// One parameter's slow weights (and slow momentum, with `pullback`), and
/// its fast weights while the slow ones are swapped in.
#[derive(Clone, Debug, PartialEq)]
struct Slow {
    params: Tensor,
    momentum: Option<Tensor>,
    backup: Option<Tensor>,
}

impl Slow {
    /// Parameter `index`'s slow state as it starts: its value, and a zero
    /// slow momentum with `pullback`.
    fn start<P: ParamSlot>(p: &P, index: usize, mode: PullbackMomentum) -> Result<Slow> {
        Ok(Slow {
            params: value_of(p, index)?,
            momentum: (mode == PullbackMomentum::Pullback)
                .then(|| Tensor::zeros(p.dtype(), &p.shape())),
            backup: None,
        })
    }
}

const SLOW_PARAMS: &str = "slow_params";
const SLOW_MOMENTUM: &str = "slow_momentum";
const BACKUP_PARAMS: &str = "backup_params";
const MOMENTUM_BUFFER: &str = "momentum_buffer";
const COUNTER: &str = "counter";

/// Any optimizer with Lookahead's slow weights (see the [module](self)).
///
/// ```
/// use ferroptim::optim::{Lookahead, LookaheadConfig, SgdConfig};
/// use ferroptim::{Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let config = LookaheadConfig { k: 2, ..Default::default() };
/// let mut opt = Lookahead::new([p.clone()], SgdConfig { lr: 0.1, ..Default::default() }, config)?;
/// for _ in 0..2 {
///     p.set_grad(Tensor::from_vec(vec![1.0f64], &[1])?)?;
///     opt.step()?;
/// }
/// // Two SGD steps reach 0.8; the update pulls it halfway back to 1.
/// assert!((p.to_vec::<f64>()?[0] - 0.9).abs() < 1e-12);
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub struct Lookahead<P: ParamSlot = Param> {
    base: Box<dyn AddParamGroup<P>>,
    config: LookaheadConfig,
    /// Every parameter, in state_dict order.
    params: Vec<P>,
    /// How many parameters each group holds.
    group_sizes: Vec<usize>,
    slow: Vec<Slow>,
    hooks: OptimizerHooks,
}

impl<P: ParamSlot> Lookahead<P> {
    /// `base` (any optimizer's config) over `params`, wrapped in Lookahead.
    pub fn new<C: crate::optim::registry::Construct>(
        params: impl IntoParamGroups<P>,
        base: C,
        config: LookaheadConfig,
    ) -> Result<Self> {
        Self::wrap(params, config, |specs| base.construct(specs))
    }

    /// The optimizer named `name` (a [`build`](crate::optim::build) name)
    /// with `base_json` (its arguments) over `params`, wrapped in Lookahead.
    pub fn build(
        name: &str,
        base_json: &str,
        params: impl IntoParamGroups<P>,
        config: LookaheadConfig,
    ) -> Result<Self> {
        Self::wrap(params, config, |specs| {
            crate::optim::build(name, base_json, specs)
        })
    }

    /// As the reference is called from a config: one JSON object with
    /// `optimizer` (the base's name), Lookahead's `k`, `alpha` and
    /// `pullback_momentum`, and the base optimizer's arguments.
    ///
    /// ```
    /// use ferroptim::optim::Lookahead;
    /// use ferroptim::{Optimizer, Param};
    /// let opt = Lookahead::from_json(r#"{"optimizer": "adamw", "k": 6, "lr": 0.01}"#, [Param::zeros::<f32>(&[3])])?;
    /// assert_eq!((opt.base().name(), opt.config().k, opt.lr(0)), ("AdamW", 6, Some(0.01)));
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    pub fn from_json(json: &str, params: impl IntoParamGroups<P>) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidConfig {
            optimizer: "Lookahead",
            reason,
        };
        let mut kwargs: Map<String, Value> =
            serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let name = match kwargs.remove("optimizer") {
            Some(Value::String(name)) => name,
            other => {
                return Err(invalid(format!(
                    "`optimizer` names the base optimizer (e.g. \"adamw\"); got {other:?}"
                )))
            }
        };
        let mut own = Map::new();
        for key in ["k", "alpha", "pullback_momentum"] {
            if let Some(v) = kwargs.remove(key) {
                own.insert(key.into(), v);
            }
        }
        let config: LookaheadConfig =
            serde_json::from_value(Value::Object(own)).map_err(|e| invalid(e.to_string()))?;
        Self::build(&name, &Value::Object(kwargs).to_string(), params, config)
    }

    fn wrap(
        params: impl IntoParamGroups<P>,
        config: LookaheadConfig,
        base: impl FnOnce(Vec<GroupSpec<P>>) -> Result<Box<dyn AddParamGroup<P>>>,
    ) -> Result<Self> {
        config.validate()?;
        let specs = params.into_param_groups();
        let group_sizes: Vec<usize> = specs.iter().map(|s| s.params.len()).collect();
        let params: Vec<P> = specs
            .iter()
            .flat_map(|s| s.params.iter().cloned())
            .collect();
        check_dtypes(&params, 0)?;
        let mut base = base(specs)?;
        for group in 0..base.num_param_groups() {
            let momentum = base.hyperparameter(group, "momentum");
            check_momentum(&*base, config.pullback_momentum, group, momentum)?;
        }
        let slow = params
            .iter()
            .enumerate()
            .map(|(i, p)| Slow::start(p, i, config.pullback_momentum))
            .collect::<Result<_>>()?;
        for group in 0..group_sizes.len() {
            base.set_group_extra(group, COUNTER, Value::from(0u64))?;
        }
        Ok(Lookahead {
            base,
            config,
            params,
            group_sizes,
            slow,
            hooks: OptimizerHooks::default(),
        })
    }

    /// The wrapped optimizer.
    pub fn base(&self) -> &dyn Optimizer {
        &*self.base
    }

    /// Lookahead's arguments.
    pub fn config(&self) -> &LookaheadConfig {
        &self.config
    }

    /// Parameter `index`'s slow weights.
    pub fn slow_params(&self, index: usize) -> Option<&Tensor> {
        self.slow.get(index).map(|s| &s.params)
    }

    /// Whether the slow weights are swapped in
    /// ([`backup_and_load_cache`](Self::backup_and_load_cache)).
    pub fn is_backed_up(&self) -> bool {
        self.slow.iter().any(|s| s.backup.is_some())
    }

    /// Keeps every parameter's value (the fast weights) as its
    /// `backup_params` and gives it its slow weights, to evaluate them, as
    /// the reference's `backup_and_load_cache`. An error, changing nothing,
    /// if they are already swapped in (the reference would lose the fast
    /// weights).
    ///
    /// ```
    /// use ferroptim::optim::{Lookahead, LookaheadConfig, SgdConfig};
    /// use ferroptim::{Optimizer, Param, Tensor};
    /// let p = Param::from_vec(vec![1.0f64], &[1])?;
    /// let mut opt = Lookahead::new([p.clone()], SgdConfig { lr: 0.1, ..Default::default() }, LookaheadConfig::default())?;
    /// p.set_grad(Tensor::from_vec(vec![1.0f64], &[1])?)?;
    /// opt.step()?; // fast 0.9, slow still 1
    /// opt.backup_and_load_cache()?;
    /// assert_eq!(p.to_vec::<f64>()?, [1.0]);
    /// assert!(opt.backup_and_load_cache().is_err());
    /// opt.clear_and_load_backup()?;
    /// assert_eq!(p.to_vec::<f64>()?, [0.9]);
    /// assert!(opt.clear_and_load_backup().is_err());
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    pub fn backup_and_load_cache(&mut self) -> Result<()> {
        if let Some(i) = self.slow.iter().position(|s| s.backup.is_some()) {
            return Err(Error::state(
                format!("state[{i}].{BACKUP_PARAMS}"),
                "the fast weights are already backed up and the slow weights loaded; \
                 call clear_and_load_backup first",
            ));
        }
        let backups = self.values()?;
        let slow: Vec<&Tensor> = self.slow.iter().map(|s| &s.params).collect();
        set_values(&self.params, &slow, &backups)?;
        for (s, b) in self.slow.iter_mut().zip(backups) {
            s.backup = Some(b);
        }
        Ok(())
    }

    /// Gives every parameter back its fast weights and drops the backup, as
    /// the reference's `clear_and_load_backup`. An error, changing nothing,
    /// without a backup.
    pub fn clear_and_load_backup(&mut self) -> Result<()> {
        let backups = self
            .slow
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.backup.as_ref().ok_or_else(|| {
                    Error::state(
                        format!("state[{i}].{BACKUP_PARAMS}"),
                        "no backup of the fast weights; call backup_and_load_cache first",
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let current = self.values()?;
        set_values(&self.params, &backups, &current)?;
        for s in &mut self.slow {
            s.backup = None;
        }
        Ok(())
    }

    /// A copy of every parameter's values.
    fn values(&self) -> Result<Vec<Tensor>> {
        let copies = self.params.iter().enumerate();
        copies.map(|(i, p)| value_of(p, i)).collect()
    }

    fn counter(&self, group: usize) -> u64 {
        self.base
            .hyperparameter(group, COUNTER)
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }

    /// After a step of the base: count it in every group, and update the
    /// groups whose count reached `k`.
    fn after_step(&mut self) -> Result<()> {
        let mut first = 0;
        for group in 0..self.group_sizes.len() {
            let counter = self.counter(group).saturating_add(1);
            let due = counter >= self.config.k as u64;
            self.base.set_group_extra(
                group,
                COUNTER,
                Value::from(if due { 0 } else { counter }),
            )?;
            let members = first..first + self.group_sizes[group];
            if due {
                self.update(members.clone())?;
            }
            first = members.end;
        }
        Ok(())
    }

    /// The update of the parameters `members` that have a gradient.
    fn update(&mut self, members: std::ops::Range<usize>) -> Result<()> {
        let weight = 1.0 - self.config.alpha;
        let mut updated = Vec::new();
        for i in members {
            let p = &self.params[i];
            if p.grad_kind(i)?.is_none() {
                continue;
            }
            let slow = &mut self.slow[i].params;
            p.with_value_mut(i, &mut |value| pull(value, slow, weight))?;
            updated.push(i);
        }
        if updated.is_empty() || self.config.pullback_momentum == PullbackMomentum::None {
            return Ok(());
        }
        // The base's momentum, through its state_dict (every k steps).
        let mut sd = self.base.state_dict();
        for &i in &updated {
            let (shape, dtype) = (self.params[i].shape(), self.params[i].dtype());
            let entries = sd.state.entry(i).or_default();
            let buffer = match self.config.pullback_momentum {
                PullbackMomentum::Pullback => {
                    let mut buffer = match entries.remove(MOMENTUM_BUFFER) {
                        Some(StateValue::Tensor(t)) => t.to_dtype(dtype),
                        _ => Tensor::zeros(dtype, &shape),
                    };
                    if let Some(slow) = &mut self.slow[i].momentum {
                        let (_, data) = buffer.parts_mut();
                        pull(data, slow, weight)?;
                    }
                    buffer
                }
                _ => Tensor::zeros(dtype, &shape),
            };
            entries.insert(MOMENTUM_BUFFER.into(), StateValue::Tensor(buffer));
        }
        self.base.load_state_dict(&sd)
    }

    /// Splits a Lookahead state_dict into the base's and the slow weights,
    /// checking every entry.
    fn read(&self, sd: &StateDict) -> Result<(StateDict, Vec<Slow>)> {
        for (g, group) in sd.param_groups.iter().enumerate() {
            if !group.get(COUNTER).is_some_and(Value::is_u64) {
                return Err(Error::state(
                    format!("param_groups[{g}].{COUNTER}"),
                    "missing or not a count; Lookahead keeps the base steps since its last update in every group",
                ));
            }
        }
        if let Some(&id) = sd.state.keys().find(|&&id| id >= self.params.len()) {
            return Err(Error::state(
                format!("state[{id}]"),
                format!("there are {} parameters", self.params.len()),
            ));
        }
        let mut base = sd.clone();
        let mut slow = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            let entries = base.state.remove(&i).unwrap_or_default();
            let (own, rest): (ParamStateDict, ParamStateDict) =
                entries.into_iter().partition(|(k, _)| {
                    [SLOW_PARAMS, SLOW_MOMENTUM, BACKUP_PARAMS].contains(&k.as_str())
                });
            let shape = p.shape();
            let mut reader = StateEntries::new(i, &shape, p.dtype(), &own);
            let params = reader.tensor(SLOW_PARAMS)?;
            let momentum = match self.config.pullback_momentum {
                PullbackMomentum::Pullback => Some(reader.tensor(SLOW_MOMENTUM)?),
                _ => reader.optional_tensor(SLOW_MOMENTUM)?,
            };
            let backup = reader.optional_tensor(BACKUP_PARAMS)?;
            reader.finish()?;
            slow.push(Slow {
                params,
                momentum,
                backup,
            });
            if !rest.is_empty() {
                base.state.insert(i, rest);
            }
        }
        // The fast weights are backed up for every parameter or for none
        // (what backup_and_load_cache leaves); a mix could not be cleared.
        if slow.iter().any(|s| s.backup.is_some()) {
            if let Some(i) = slow.iter().position(|s| s.backup.is_none()) {
                return Err(Error::state(
                    format!("state[{i}].{BACKUP_PARAMS}"),
                    "missing while other parameters have one; the fast weights are backed up \
                     for every parameter or for none",
                ));
            }
        }
        Ok((base, slow))
    }
}

/// `value ← lerp(value, slow, weight)`, `slow ← value`, in the value's dtype.
fn pull(value: TensorDataMut<'_>, slow: &mut Tensor, weight: f64) -> Result<()> {
    fn typed<T: Element>(param: &mut [T], slow: &mut Tensor, weight: f64) -> Result<()> {
        let slices = LookaheadSlices {
            param,
            slow: slow.as_slice_mut::<T>()?,
        };
        kernels::lookahead(
            slices,
            &LookaheadScalars {
                weight: T::from_f64(weight),
            },
        )
    }
    match value {
        TensorDataMut::F32(v) => typed(v, slow, weight),
        TensorDataMut::F64(v) => typed(v, slow, weight),
        // Lookahead's constructor refuses them.
        data => Err(reduced_unsupported("a parameter".into(), data.dtype())),
    }
}

/// Lookahead's refusal of a 16-bit parameter: its slow weights are not yet
/// defined for them.
fn reduced_unsupported(what: String, dtype: Dtype) -> Error {
    Error::DtypeUnsupported {
        what,
        dtype,
        refused_by: "Lookahead",
        supported: "float32 and float64",
    }
}

/// Refuses the 16-bit parameters among `params`, numbered from `first`.
fn check_dtypes<P: ParamSlot>(params: &[P], first: usize) -> Result<()> {
    match params.iter().position(|p| p.dtype().is_reduced()) {
        Some(i) => Err(reduced_unsupported(
            format!("parameter {}", first + i),
            params[i].dtype(),
        )),
        None => Ok(()),
    }
}

/// A copy of parameter `index`'s values.
fn value_of<P: ParamSlot>(p: &P, index: usize) -> Result<Tensor> {
    let shape = p.shape();
    let mut copy = None;
    p.with_value_mut(index, &mut |value| {
        copy = Some(value.to_tensor(&shape)?);
        Ok(())
    })?;
    copy.ok_or_else(|| Error::state(format!("state[{index}]"), "the parameter has no values"))
}

/// Sets every parameter's value to `values`; if one cannot be set, the
/// ones already set go back to `restore`, so that nothing changes.
fn set_values<P: ParamSlot>(params: &[P], values: &[&Tensor], restore: &[Tensor]) -> Result<()> {
    for (i, (p, v)) in params.iter().zip(values).enumerate() {
        if let Err(e) = set_value(p, i, v) {
            for (j, (p, r)) in params.iter().zip(restore).enumerate().take(i) {
                // Each of these took a value of this shape and dtype just now.
                let _ = set_value(p, j, r);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Copies `value` into parameter `index`.
fn set_value<P: ParamSlot>(p: &P, index: usize, value: &Tensor) -> Result<()> {
    if value.shape() != p.shape().as_slice() || value.dtype() != p.dtype() {
        return Err(Error::state(
            format!("state[{index}]"),
            format!(
                "a value of shape {:?} ({:?}) for a parameter of shape {:?} ({:?})",
                value.shape(),
                value.dtype(),
                p.shape(),
                p.dtype()
            ),
        ));
    }
    p.with_value_mut(index, &mut |data| data.copy_from(value))
}

/// `reset` and `pullback` need a base whose every group keeps a momentum
/// buffer: refuses param group `group`, of `momentum`, if it keeps none.
fn check_momentum(
    base: &dyn Optimizer,
    mode: PullbackMomentum,
    group: usize,
    momentum: Option<Value>,
) -> Result<()> {
    let keeps = match base.name() {
        "Muon" => true,
        "SGD" | "RMSprop" => momentum.and_then(|v| v.as_f64()).is_some_and(|m| m > 0.0),
        _ => false,
    };
    match mode == PullbackMomentum::None || keeps {
        true => Ok(()),
        false => Err(Error::InvalidConfig {
            optimizer: "Lookahead",
            reason: format!(
                "pullback_momentum='{}' moves the base optimizer's momentum_buffer, which {} \
                 does not keep in param group {group} (SGD and RMSprop keep one with momentum > 0, \
                 Muon always)",
                mode.as_str(),
                base.name()
            ),
        }),
    }
}

impl<P: ParamSlot> Optimizer for Lookahead<P> {
    fn name(&self) -> &'static str {
        "Lookahead"
    }

    fn group_store(&self) -> &dyn GroupStore {
        self.base.group_store()
    }

    fn group_store_mut(&mut self) -> &mut dyn GroupStore {
        self.base.group_store_mut()
    }

    fn hooks(&self) -> &OptimizerHooks {
        &self.hooks
    }

    fn step(&mut self) -> Result<()> {
        hooked_step(self, |opt| {
            opt.base.step()?;
            opt.after_step()
        })
    }

    fn step_if_finite(&mut self) -> Result<StepOutcome> {
        let outcome = self.base.step_if_finite()?;
        if outcome == StepOutcome::Stepped {
            self.after_step()?;
        }
        Ok(outcome)
    }

    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        hooked_step(self, |opt| {
            let loss = opt.base.step_with_closure(closure)?;
            opt.after_step()?;
            Ok(loss)
        })
    }

    fn train(&mut self) -> Result<()> {
        self.base.train()
    }

    fn eval(&mut self) -> Result<()> {
        self.base.eval()
    }

    fn state_dict(&self) -> StateDict {
        hooked_state_dict(self, || {
            let mut sd = self.base.state_dict();
            for (i, slow) in self.slow.iter().enumerate() {
                let entries = sd.state.entry(i).or_default();
                entries.insert(SLOW_PARAMS.into(), StateValue::Tensor(slow.params.clone()));
                if let Some(m) = &slow.momentum {
                    entries.insert(SLOW_MOMENTUM.into(), StateValue::Tensor(m.clone()));
                }
                if let Some(b) = &slow.backup {
                    entries.insert(BACKUP_PARAMS.into(), StateValue::Tensor(b.clone()));
                }
            }
            sd
        })
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        hooked_load(self, sd, |opt, sd| {
            let (base, slow) = opt.read(sd)?;
            opt.base.load_state_dict(&base)?;
            opt.slow = slow;
            Ok(())
        })
    }
}

impl<P: ParamSlot> AddParamGroup<P> for Lookahead<P> {
    /// The base's `add_param_group`, then the new group's count at 0 and
    /// its parameters' slow weights at their values (a zero slow momentum
    /// with `pullback`), as the reference's. Checked before the base takes
    /// the group, so that a refusal changes nothing.
    fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()> {
        let first = self.params.len();
        let new = self.base.num_param_groups();
        let momentum = group
            .options
            .get("momentum")
            .cloned()
            .or_else(|| self.base.defaults_json().get("momentum").cloned());
        check_momentum(&*self.base, self.config.pullback_momentum, new, momentum)?;
        check_dtypes(&group.params, first)?;
        let params = group.params.clone();
        let slow = params
            .iter()
            .enumerate()
            .map(|(j, p)| Slow::start(p, first + j, self.config.pullback_momentum))
            .collect::<Result<Vec<_>>>()?;
        self.base.add_param_group(group)?;
        if self.base.hyperparameter(new, COUNTER).is_none() {
            self.base.set_group_extra(new, COUNTER, Value::from(0u64))?;
        }
        self.group_sizes.push(params.len());
        self.params.extend(params);
        self.slow.extend(slow);
        Ok(())
    }
}

impl<P: ParamSlot> std::fmt::Debug for Lookahead<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookahead")
            .field("config", &self.config)
            .field("base", &self.base.name())
            .field("params", &self.params.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, SgdConfig};

    fn sgd(momentum: f64) -> SgdConfig {
        SgdConfig {
            lr: 0.1,
            momentum,
            ..Default::default()
        }
    }

    #[test]
    fn bad_arguments_are_the_references_errors() {
        let p = || [Param::zeros::<f32>(&[2])];
        for (config, message) in [
            (
                LookaheadConfig {
                    k: 0,
                    ..Default::default()
                },
                "k must be positive",
            ),
            (
                LookaheadConfig {
                    alpha: f64::NAN,
                    ..Default::default()
                },
                "alpha must be in the range [0.0, 1.0)",
            ),
        ] {
            let err = Lookahead::new(p(), sgd(0.0), config)
                .unwrap_err()
                .to_string();
            assert_eq!(err, message);
        }
        let reset = LookaheadConfig {
            pullback_momentum: PullbackMomentum::Reset,
            ..Default::default()
        };
        let err = Lookahead::new(p(), AdamConfig::default(), reset)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pullback_momentum='reset' moves") && err.contains("Adam"),
            "{err}"
        );
        assert!(Lookahead::new(p(), sgd(0.0), reset).is_err());
        assert!(Lookahead::new(p(), sgd(0.9), reset).is_ok());
        let err = Lookahead::<Param>::from_json(r#"{"k": 2}"#, p())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`optimizer` names the base optimizer"),
            "{err}"
        );
        let err = Lookahead::<Param>::from_json(
            r#"{"optimizer": "sgd", "pullback_momentum": "both"}"#,
            p(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `both`"), "{err}");
    }

    #[test]
    fn a_failed_load_changes_nothing() {
        let p = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let mut opt = Lookahead::new([p.clone()], sgd(0.9), LookaheadConfig::default()).unwrap();
        p.set_grad(Tensor::from_vec(vec![1.0f32, 1.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        let before = opt.state_dict();
        let mut bad = before.clone();
        bad.param_groups[0].remove(COUNTER);
        let err = opt.load_state_dict(&bad).unwrap_err().to_string();
        assert!(err.contains("param_groups[0].counter"), "{err}");
        let mut bad = before.clone();
        bad.state.get_mut(&0).unwrap().remove(SLOW_PARAMS);
        let err = opt.load_state_dict(&bad).unwrap_err().to_string();
        assert!(err.contains("state[0].slow_params"), "{err}");
        let mut bad = before.clone();
        bad.state.get_mut(&0).unwrap().insert(
            MOMENTUM_BUFFER.into(),
            StateValue::Tensor(Tensor::zeros(crate::Dtype::F32, &[3])),
        );
        assert!(opt.load_state_dict(&bad).is_err());
        // A backup of some parameters' fast weights but not all.
        let two = Param::from_vec(vec![3.0f32], &[1]).unwrap();
        let mut pair = Lookahead::new(
            [p.clone(), two.clone()],
            sgd(0.9),
            LookaheadConfig::default(),
        )
        .unwrap();
        pair.backup_and_load_cache().unwrap();
        let mut partial = pair.state_dict();
        partial.state.get_mut(&1).unwrap().remove(BACKUP_PARAMS);
        let err = pair.load_state_dict(&partial).unwrap_err().to_string();
        assert!(err.contains("state[1].backup_params"), "{err}");
        pair.load_state_dict(&pair.state_dict()).unwrap();
        assert_eq!(opt.state_dict(), before);
        let json = StateDict::from_json(&before.to_json().unwrap()).unwrap();
        opt.load_state_dict(&json).unwrap();
        assert_eq!(opt.state_dict(), before);
    }

    #[test]
    fn a_refused_group_or_swap_changes_nothing() {
        let p = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let reset = LookaheadConfig {
            pullback_momentum: PullbackMomentum::Reset,
            ..Default::default()
        };
        let mut opt = Lookahead::new([p.clone()], sgd(0.9), reset).unwrap();
        p.set_grad(Tensor::from_vec(vec![1.0f32, 1.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        let before = opt.state_dict();
        // A group without momentum has no momentum_buffer to reset.
        let q = Param::zeros::<f32>(&[3]);
        let err = opt
            .add_param_group(GroupSpec::new([q.clone()]).set("momentum", 0.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("param group 1"), "{err}");
        // A group the base refuses (a parameter it already has).
        assert!(opt.add_param_group(GroupSpec::new([p.clone()])).is_err());
        assert_eq!(
            (opt.num_param_groups(), opt.state_dict()),
            (1, before.clone())
        );
        // Taken with the default momentum: count 0, slow weights its value.
        opt.add_param_group(GroupSpec::new([q.clone()])).unwrap();
        assert_eq!(opt.hyperparameter(1, COUNTER), Some(Value::from(0u64)));
        assert_eq!(opt.slow_params(1), Some(&q.value()));
        // Clearing a backup that is not there changes nothing.
        let before = (opt.state_dict(), p.value());
        assert!(opt.clear_and_load_backup().is_err());
        assert_eq!((opt.state_dict(), p.value()), before);
        // LBFGS takes one group, through Lookahead as by itself.
        let mut lbfgs =
            Lookahead::<Param>::from_json(r#"{"optimizer": "lbfgs"}"#, [Param::zeros::<f32>(&[1])])
                .unwrap();
        let err = lbfgs
            .add_param_group(GroupSpec::new([Param::zeros::<f32>(&[1])]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("LBFGS doesn't support per-parameter options"),
            "{err}"
        );
        assert_eq!(lbfgs.num_param_groups(), 1);
    }
}
