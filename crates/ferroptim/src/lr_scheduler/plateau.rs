//! ReduceLROnPlateau: cut the learning rate when a metric stops improving
//! (torch's `ReduceLROnPlateau`).
//!
//! A metric `a` improves on the best `b` when, by `mode` and `threshold_mode`:
//!
//! ```text
//! min, rel: a < b·(1 − threshold)      min, abs: a < b − threshold
//! max, rel: a > b·(1 + threshold)      max, abs: a > b + threshold
//! ```
//!
//! After more than `patience` steps without improvement each group's `lr`
//! becomes `max(lr·factor, min_lr)` (if that changes it by more than `eps`),
//! and `cooldown` steps follow in which bad steps are not counted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{from_state, lrs, scheduler_error, to_state, PerGroup, SchedulerState};
use crate::error::Result;
use crate::json;
use crate::optimizer::Optimizer;

/// [`ReduceLROnPlateau`]'s arguments (torch's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReduceLROnPlateauConfig {
    /// "min" (default: lower is better) or "max".
    pub mode: String,
    /// The factor the learning rate is cut by, below 1 (default 0.1).
    pub factor: f64,
    /// Steps without improvement tolerated (default 10).
    pub patience: i64,
    /// How much better counts as better (default 1e-4).
    pub threshold: f64,
    /// "rel" (default) or "abs".
    pub threshold_mode: String,
    /// Steps after a cut in which bad steps are not counted (default 0).
    pub cooldown: i64,
    /// The floor of each group's learning rate, for all or each (default 0).
    pub min_lr: PerGroup,
    /// Cuts smaller than this are skipped (default 1e-8).
    pub eps: f64,
}

impl Default for ReduceLROnPlateauConfig {
    fn default() -> Self {
        ReduceLROnPlateauConfig {
            mode: "min".into(),
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: "rel".into(),
            cooldown: 0,
            min_lr: PerGroup::One(0.0),
            eps: 1e-8,
        }
    }
}

/// torch's `ReduceLROnPlateau`; steps on a metric with [`ReduceLROnPlateau::step`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReduceLROnPlateau {
    factor: f64,
    min_lrs: Vec<f64>,
    default_min_lr: Option<f64>,
    patience: i64,
    cooldown: i64,
    eps: f64,
    last_epoch: i64,
    #[serde(rename = "_last_lr")]
    last_lr: Vec<f64>,
    mode: String,
    threshold: f64,
    threshold_mode: String,
    #[serde(with = "json::float")]
    mode_worse: f64,
    #[serde(with = "json::float")]
    best: f64,
    cooldown_counter: i64,
    num_bad_epochs: i64,
}

impl ReduceLROnPlateau {
    /// A scheduler watching a metric for `opt`'s groups.
    pub fn new(opt: &dyn Optimizer, config: ReduceLROnPlateauConfig) -> Result<Self> {
        const NAME: &str = "ReduceLROnPlateau";
        if config.factor.is_nan() || config.factor >= 1.0 {
            return Err(scheduler_error(NAME, "Factor should be < 1.0."));
        }
        let groups = opt.num_param_groups();
        let (min_lrs, default_min_lr) = match &config.min_lr {
            PerGroup::One(x) => (vec![*x; groups], Some(*x)),
            PerGroup::Each(v) if v.len() == groups => (v.clone(), None),
            PerGroup::Each(v) => {
                let reason = format!("expected {groups} min_lrs, got {}", v.len());
                return Err(scheduler_error(NAME, reason));
            }
        };
        let mode_worse = match config.mode.as_str() {
            "min" => f64::INFINITY,
            "max" => f64::NEG_INFINITY,
            other => return Err(scheduler_error(NAME, format!("mode {other} is unknown!"))),
        };
        if !["rel", "abs"].contains(&config.threshold_mode.as_str()) {
            let reason = format!("threshold mode {} is unknown!", config.threshold_mode);
            return Err(scheduler_error(NAME, reason));
        }
        Ok(ReduceLROnPlateau {
            factor: config.factor,
            min_lrs,
            default_min_lr,
            patience: config.patience,
            cooldown: config.cooldown,
            eps: config.eps,
            last_epoch: 0,
            last_lr: lrs(opt),
            mode: config.mode,
            threshold: config.threshold,
            threshold_mode: config.threshold_mode,
            mode_worse,
            best: mode_worse,
            cooldown_counter: 0,
            num_bad_epochs: 0,
        })
    }

    fn is_better(&self, a: f64, best: f64) -> bool {
        match (self.mode.as_str(), self.threshold_mode.as_str()) {
            ("min", "rel") => a < best * (1.0 - self.threshold),
            ("min", _) => a < best - self.threshold,
            (_, "rel") => a > best * (self.threshold + 1.0),
            _ => a > best + self.threshold,
        }
    }

    /// One step with this epoch's metric (torch's `step(metrics)`).
    pub fn step(&mut self, opt: &mut dyn Optimizer, metric: f64) -> Result<()> {
        let groups = opt.num_param_groups();
        if groups != self.min_lrs.len() {
            match self.default_min_lr {
                Some(x) => self.min_lrs = vec![x; groups],
                None => {
                    return Err(scheduler_error(
                        "ReduceLROnPlateau",
                        format!(
                            "The number of param groups in the `optimizer` ({groups}) differs from when \
                             `ReduceLROnPlateau` was initialized ({}), usually due to a new param group \
                             being added to the optimizer. Please modify the `min_lrs` field to match the \
                             length of the `optimizer` param groups.",
                            self.min_lrs.len()
                        ),
                    ))
                }
            }
        }
        self.last_epoch = self.last_epoch.saturating_add(1);
        if self.is_better(metric, self.best) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs = self.num_bad_epochs.saturating_add(1);
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            for g in 0..groups {
                let old = opt.lr(g).unwrap_or(0.0);
                let new = (old * self.factor).max(self.min_lrs[g]);
                if old - new > self.eps {
                    opt.set_lr(g, new)?;
                }
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
        self.last_lr = lrs(opt);
        Ok(())
    }

    /// Every group's learning rate after the last step.
    pub fn get_last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    /// The best metric seen (±∞ before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Steps taken.
    pub fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    /// The state, under torch's attribute names.
    pub fn state_dict(&self) -> SchedulerState {
        to_state(self)
    }

    /// Restores a state_dict written by [`ReduceLROnPlateau::state_dict`] or
    /// by torch; on error nothing changes.
    pub fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()> {
        let mut state = state.clone();
        // torch writes `min_lr` lists under `min_lrs`; older checkpoints may lack `default_min_lr`.
        state.entry("default_min_lr").or_insert(Value::Null);
        let loaded: ReduceLROnPlateau = from_state("ReduceLROnPlateau", &state)?;
        if !["min", "max"].contains(&loaded.mode.as_str())
            || !["rel", "abs"].contains(&loaded.threshold_mode.as_str())
        {
            return Err(crate::error::Error::state(
                "ReduceLROnPlateau state_dict.mode",
                "mode must be \"min\" or \"max\", threshold_mode \"rel\" or \"abs\"",
            ));
        }
        *self = loaded;
        Ok(())
    }
}
