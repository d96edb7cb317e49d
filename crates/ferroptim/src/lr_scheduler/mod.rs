//! Learning-rate schedulers: torch's `torch.optim.lr_scheduler`, on any
//! [`Optimizer`]'s param groups.
//!
//! A scheduler does not own the optimizer: it is given it at construction
//! and at every [`LrScheduler::step`], so the training loop keeps using the
//! optimizer in between. Otherwise it behaves as torch's: construction
//! records each group's `initial_lr` (in the group, so it is saved with the
//! optimizer) and takes the first step (epoch 0); every `step` moves
//! `last_epoch` on and writes each group's new `lr`; the update rules are
//! torch's recursive ("chainable") forms, so schedulers combine by
//! multiplying, exactly as in torch; [`LrScheduler::state_dict`] holds
//! torch's keys, and loads torch's own scheduler state_dicts.
//!
//! ```
//! use ferroptim::lr_scheduler::{LrScheduler, StepLR, StepLRConfig};
//! use ferroptim::optim::{Sgd, SgdConfig};
//! use ferroptim::{Optimizer, Param};
//! let mut opt = Sgd::new([Param::zeros::<f32>(&[2])], SgdConfig { lr: 0.1, ..Default::default() })?;
//! let mut sched = StepLR::new(&mut opt, StepLRConfig { step_size: 2, gamma: 0.5, last_epoch: -1 })?;
//! let mut lrs = vec![];
//! for _ in 0..5 {
//!     opt.step()?; // a real loop computes gradients first
//!     sched.step(&mut opt)?;
//!     lrs.push(sched.get_last_lr()[0]);
//! }
//! assert_eq!(lrs, [0.1, 0.05, 0.05, 0.025, 0.025]);
//! # Ok::<(), ferroptim::Error>(())
//! ```
//!
//! [`ReduceLROnPlateau`] steps on a metric and so is not an [`LrScheduler`]
//! (torch's `ChainedScheduler` and `SequentialLR` refuse it too).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json;
use crate::optimizer::Optimizer;

/// Implements [`Rule`]'s bookkeeping for a scheduler with a `progress` field.
macro_rules! impl_progress {
    () => {
        fn progress(&self) -> &$crate::lr_scheduler::Progress {
            &self.progress
        }
        fn progress_mut(&mut self) -> &mut $crate::lr_scheduler::Progress {
            &mut self.progress
        }
    };
}
pub(crate) use impl_progress;

mod combine;
mod cyclic;
mod one_cycle;
mod plateau;
mod simple;
mod warm_restarts;

pub use combine::{ChainedScheduler, SequentialLR};
pub use cyclic::{CyclicLR, CyclicLRConfig, ScaleFn};
pub use one_cycle::{OneCycleLR, OneCycleLRConfig};
pub use plateau::{ReduceLROnPlateau, ReduceLROnPlateauConfig};
pub use simple::{
    ConstantLR, ConstantLRConfig, CosineAnnealingLR, CosineAnnealingLRConfig, ExponentialLR,
    ExponentialLRConfig, LambdaLR, LinearLR, LinearLRConfig, LrLambda, MultiStepLR,
    MultiStepLRConfig, MultiplicativeLR, PolynomialLR, PolynomialLRConfig, StepLR, StepLRConfig,
};
pub use warm_restarts::{CosineAnnealingWarmRestarts, CosineAnnealingWarmRestartsConfig};

/// A scheduler's state_dict: torch's attribute names and values.
pub type SchedulerState = Map<String, Value>;

/// What every epoch-driven scheduler offers (torch's `LRScheduler`).
pub trait LrScheduler: Send {
    /// torch's class name.
    fn name(&self) -> &'static str;

    /// Moves to the next epoch and writes every group's learning rate
    /// (torch's `scheduler.step()`). On error nothing changes.
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;

    /// The learning rate of every group after the last step (torch's `get_last_lr()`).
    fn get_last_lr(&self) -> &[f64];

    /// The index of the last epoch (torch's `last_epoch`; 0 after construction).
    fn last_epoch(&self) -> i64;

    /// The state, under torch's attribute names (torch's `state_dict()`).
    fn state_dict(&self) -> SchedulerState;

    /// Restores a state_dict written by [`LrScheduler::state_dict`] or by
    /// torch. Everything is read first: on error the scheduler is unchanged.
    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()>;

    /// Jumps to `epoch` and writes the learning rates there, with the closed
    /// form where torch has one (torch's `_update_lr(epoch)`, which
    /// `SequentialLR` uses at its milestones).
    fn jump_to(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()>;

    /// Steps back one epoch without touching the optimizer (torch's
    /// `SequentialLR.recursive_undo`).
    fn rewind(&mut self);

    /// Takes the construction step again (torch's `_initial_step`).
    fn restart(&mut self, opt: &mut dyn Optimizer) -> Result<()>;
}

/// The progress every epoch-driven scheduler keeps (torch's `LRScheduler` attributes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Each group's learning rate at epoch 0 (its `initial_lr`).
    pub base_lrs: Vec<f64>,
    /// The index of the last epoch.
    pub last_epoch: i64,
    /// Steps taken, the construction step included.
    #[serde(rename = "_step_count")]
    pub step_count: u64,
    /// Each group's learning rate after the last step.
    #[serde(rename = "_last_lr")]
    pub last_lr: Vec<f64>,
    /// Whether the construction step is running.
    #[serde(rename = "_is_initial", default)]
    pub(crate) is_initial: bool,
}

/// A scheduler whose step is torch's `LRScheduler.step`: a rule for the next
/// learning rates, and where torch has one, a closed form.
pub(crate) trait Rule: Clone + Send + Serialize + DeserializeOwned + 'static {
    const NAME: &'static str;
    fn progress(&self) -> &Progress;
    fn progress_mut(&mut self) -> &mut Progress;
    /// torch's `get_lr()`, called after `last_epoch` moved.
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>>;
    /// torch's `_get_closed_form_lr()`, where it exists.
    fn closed_form(&self) -> Option<Vec<f64>> {
        None
    }
    /// The constructor's checks of the rule's own values, run on a loaded
    /// state_dict too (a zero period would fail the next step).
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Carries what a state_dict does not hold (closures) from `old` into a loaded `self`.
    fn keep_unsaved(&mut self, old: &Self) {
        let _ = old;
    }
}

/// Runs `f` on `rule`, undoing every change to it if `f` fails.
fn atomically<R: Clone>(rule: &mut R, f: impl FnOnce(&mut R) -> Result<()>) -> Result<()> {
    let before = rule.clone();
    let result = f(rule);
    if result.is_err() {
        *rule = before;
    }
    result
}

/// torch's `_update_lr`: moves `last_epoch` (to `epoch`, or on by one) and
/// writes the new learning rates.
fn update_lr<R: Rule>(rule: &mut R, opt: &mut dyn Optimizer, epoch: Option<i64>) -> Result<()> {
    check_groups(R::NAME, opt, rule.progress().base_lrs.len())?;
    let values = match epoch {
        None => {
            rule.progress_mut().last_epoch = next_epoch(R::NAME, rule.progress().last_epoch)?;
            rule.get_lr(opt)?
        }
        Some(epoch) => {
            rule.progress_mut().last_epoch = epoch;
            match rule.closed_form() {
                Some(values) => values,
                None => rule.get_lr(opt)?,
            }
        }
    };
    set_lrs(opt, &values)?;
    rule.progress_mut().last_lr = lrs(opt);
    Ok(())
}

impl<R: Rule> LrScheduler for R {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        atomically(self, |rule| {
            let p = rule.progress_mut();
            p.step_count = p.step_count.saturating_add(1);
            update_lr(rule, opt, None)
        })
    }

    fn get_last_lr(&self) -> &[f64] {
        &self.progress().last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.progress().last_epoch
    }

    fn state_dict(&self) -> SchedulerState {
        to_state(self)
    }

    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()> {
        let mut loaded: R = from_state(R::NAME, state)?;
        loaded.check()?;
        loaded.keep_unsaved(self);
        *self = loaded;
        Ok(())
    }

    fn jump_to(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        atomically(self, |rule| update_lr(rule, opt, Some(epoch)))
    }

    fn rewind(&mut self) {
        let p = self.progress_mut();
        p.last_epoch = p.last_epoch.saturating_sub(1);
    }

    fn restart(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        atomically(self, |rule| {
            let p = rule.progress_mut();
            p.step_count = 1;
            p.is_initial = true;
            let result = update_lr(rule, opt, None);
            rule.progress_mut().is_initial = false;
            result
        })
    }
}

/// torch's `LRScheduler.__init__`: with `last_epoch == -1` each group's
/// `initial_lr` is set (if absent) to its `lr`; otherwise every group must
/// already have one (a resumed schedule). Returns the progress before the
/// construction step.
pub(crate) fn start_progress(
    name: &'static str,
    opt: &mut dyn Optimizer,
    last_epoch: i64,
) -> Result<Progress> {
    let groups = opt.num_param_groups();
    if last_epoch == -1 {
        for g in 0..groups {
            if opt.hyperparameter(g, "initial_lr").is_none() {
                let lr = group_value(name, opt, g, "lr")?;
                set_extra(opt, g, "initial_lr", lr)?;
            }
        }
    } else if last_epoch < -1 {
        return Err(scheduler_error(
            name,
            format!("last_epoch must be -1 (a new schedule) or an epoch >= 0, found {last_epoch}"),
        ));
    }
    let base_lrs = (0..groups)
        .map(|g| {
            group_value(name, opt, g, "initial_lr").map_err(|_| {
                scheduler_error(
                    name,
                    format!(
                        "param 'initial_lr' is not specified in param_groups[{g}] when resuming \
                         scheduler with last_epoch >= 0"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Progress {
        base_lrs,
        last_epoch,
        ..Progress::default()
    })
}

/// Construction: the progress of [`start_progress`], then the first step;
/// on error the optimizer's groups are as they were.
pub(crate) fn start<R: Rule>(mut rule: R, opt: &mut dyn Optimizer, last_epoch: i64) -> Result<R> {
    all_or_nothing(opt, |opt| {
        *rule.progress_mut() = start_progress(R::NAME, opt, last_epoch)?;
        rule.restart(opt)?;
        Ok(rule)
    })
}

/// Runs `f`, a constructor's changes to `opt`'s groups (their `lr`,
/// `initial_lr`, momentum, ...): if it fails, every group's hyperparameters
/// and extra keys are put back as they were.
pub(crate) fn all_or_nothing<R>(
    opt: &mut dyn Optimizer,
    f: impl FnOnce(&mut dyn Optimizer) -> Result<R>,
) -> Result<R> {
    let before = opt.param_groups_json();
    let result = f(opt);
    if result.is_err() {
        // What the optimizer itself wrote reads back.
        let _ = opt.load_param_groups(&before);
    }
    result
}

/// The epoch after `epoch`; an error at the end of the `i64` range.
pub(crate) fn next_epoch(name: &'static str, epoch: i64) -> Result<i64> {
    epoch.checked_add(1).ok_or_else(|| {
        scheduler_error(
            name,
            format!("last_epoch is {epoch}, the largest an epoch can be"),
        )
    })
}

pub(crate) fn scheduler_error(scheduler: &'static str, reason: impl Into<String>) -> Error {
    Error::Scheduler {
        scheduler,
        reason: reason.into(),
    }
}

/// Errors unless the optimizer has `expected` param groups.
pub(crate) fn check_groups(name: &'static str, opt: &dyn Optimizer, expected: usize) -> Result<()> {
    let found = opt.num_param_groups();
    if found == expected {
        Ok(())
    } else {
        Err(scheduler_error(
            name,
            format!("the scheduler has values for {expected} param groups but the optimizer has {found}"),
        ))
    }
}

/// A number in group `g` under `key` (its `lr`, `initial_lr`, `max_momentum`, ...).
pub(crate) fn group_value(
    name: &'static str,
    opt: &dyn Optimizer,
    g: usize,
    key: &str,
) -> Result<f64> {
    opt.hyperparameter(g, key)
        .and_then(|v| json::as_f64(&v))
        .ok_or_else(|| {
            scheduler_error(
                name,
                format!("param_groups[{g}] has no number under {key:?}"),
            )
        })
}

/// Sets a key of group `g` that the optimizer does not know (`initial_lr`, `max_lr`, ...).
pub(crate) fn set_extra(opt: &mut dyn Optimizer, g: usize, key: &str, value: f64) -> Result<()> {
    opt.set_group_extra(g, key, json::number(value))
}

/// Every group's learning rate.
pub(crate) fn lrs(opt: &dyn Optimizer) -> Vec<f64> {
    (0..opt.num_param_groups())
        .filter_map(|g| opt.lr(g))
        .collect()
}

/// Writes every group's learning rate.
pub(crate) fn set_lrs(opt: &mut dyn Optimizer, values: &[f64]) -> Result<()> {
    for (g, &lr) in values.iter().enumerate() {
        opt.set_lr(g, lr)?;
    }
    Ok(())
}

/// A per-group value given once or per group (torch's `_format_param`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerGroup {
    /// The same value for every group.
    One(f64),
    /// One value per group.
    Each(Vec<f64>),
}

impl PerGroup {
    /// The value of every one of `groups` groups; an error if the list has another length.
    pub(crate) fn expand(
        &self,
        scheduler: &'static str,
        name: &str,
        groups: usize,
    ) -> Result<Vec<f64>> {
        match self {
            PerGroup::One(x) => Ok(vec![*x; groups]),
            PerGroup::Each(v) if v.len() == groups => Ok(v.clone()),
            PerGroup::Each(v) => Err(scheduler_error(
                scheduler,
                format!(
                    "{name} must have the same length as optimizer.param_groups. \
                     {name} has {} values, param_groups has {groups}.",
                    v.len()
                ),
            )),
        }
    }
}

impl From<f64> for PerGroup {
    fn from(x: f64) -> Self {
        PerGroup::One(x)
    }
}

/// Whether the optimizer cycles `betas[0]` (Adam and its relatives) or
/// `momentum` (SGD, RMSprop), as torch decides from its defaults; an error
/// if it has neither.
pub(crate) fn momentum_key(name: &'static str, opt: &dyn Optimizer) -> Result<bool> {
    let defaults = opt.defaults_json();
    if defaults.contains_key("betas") {
        Ok(true)
    } else if defaults.contains_key("momentum") {
        Ok(false)
    } else {
        Err(scheduler_error(
            name,
            "optimizer must support momentum or beta1 with `cycle_momentum` option enabled",
        ))
    }
}

/// Writes group `g`'s momentum: `betas[0]` when `use_beta1`, else `momentum`.
pub(crate) fn set_momentum(
    opt: &mut dyn Optimizer,
    g: usize,
    use_beta1: bool,
    m: f64,
) -> Result<()> {
    if use_beta1 {
        let beta2 = opt
            .hyperparameter(g, "betas")
            .and_then(|b| b.get(1).and_then(json::as_f64))
            .ok_or_else(|| {
                Error::state(
                    format!("param_groups[{g}].betas"),
                    "expected a pair of numbers",
                )
            })?;
        opt.set_hyperparameter(
            g,
            "betas",
            Value::from(vec![json::number(m), json::number(beta2)]),
        )
    } else {
        opt.set_hyperparameter(g, "momentum", json::number(m))
    }
}

/// Python's `bisect.bisect_right`: how many of the sorted `xs` are `<= x`.
pub(crate) fn bisect_right(xs: &[i64], x: i64) -> usize {
    xs.partition_point(|&m| m <= x)
}

pub(crate) fn to_state<T: Serialize>(value: &T) -> SchedulerState {
    match json::to_value(value) {
        Ok(Value::Object(map)) => map,
        // A scheduler is a struct of numbers, strings and lists: always an object.
        _ => Map::new(),
    }
}

pub(crate) fn from_state<T: DeserializeOwned>(
    name: &'static str,
    state: &SchedulerState,
) -> Result<T> {
    json::from_value(Value::Object(state.clone()))
        .map_err(|e| Error::state(format!("{name} state_dict"), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each config's `new` (required arguments only) is what torch's
    /// defaults give for the same arguments: the serde defaults.
    #[test]
    fn config_constructors_are_torch_defaults() {
        fn json<T: serde::de::DeserializeOwned>(s: &str) -> T {
            serde_json::from_str(s).unwrap()
        }
        assert_eq!(StepLRConfig::new(3), json(r#"{"step_size": 3}"#));
        assert_eq!(
            MultiStepLRConfig::new(vec![2, 5]),
            json(r#"{"milestones": [2, 5]}"#)
        );
        assert_eq!(ExponentialLRConfig::new(0.9), json(r#"{"gamma": 0.9}"#));
        assert_eq!(CosineAnnealingLRConfig::new(10), json(r#"{"T_max": 10}"#));
        assert_eq!(
            CosineAnnealingWarmRestartsConfig::new(4),
            json(r#"{"T_0": 4}"#)
        );
        for default in [
            serde_json::to_value(ConstantLRConfig::default()).unwrap(),
            serde_json::to_value(LinearLRConfig::default()).unwrap(),
            serde_json::to_value(PolynomialLRConfig::default()).unwrap(),
        ] {
            assert_eq!(default["last_epoch"], -1);
        }
    }

    #[test]
    fn bisect_right_counts_milestones_at_or_before() {
        assert_eq!(bisect_right(&[3, 6, 6, 9], 0), 0);
        assert_eq!(bisect_right(&[3, 6, 6, 9], 6), 3);
        assert_eq!(bisect_right(&[3, 6, 6, 9], 10), 4);
    }

    #[test]
    fn per_group_values_must_match_the_groups() {
        assert_eq!(
            PerGroup::One(0.5).expand("X", "max_lr", 2).unwrap(),
            [0.5, 0.5]
        );
        let err = PerGroup::Each(vec![1.0])
            .expand("X", "max_lr", 2)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("max_lr has 1 values, param_groups has 2"),
            "{err}"
        );
    }
}
