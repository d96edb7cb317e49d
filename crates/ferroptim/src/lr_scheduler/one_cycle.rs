//! OneCycleLR: one cycle of warm-up to `max_lr` and annealing far below the
//! start (Smith & Topin, 2018; torch's `OneCycleLR`), momentum moving the
//! other way.
//!
//! Each group gets `initial_lr = max_lr/div_factor`, `max_lr` and
//! `min_lr = initial_lr/final_div_factor`. The steps `0..total_steps` are cut
//! into phases (two, or three with `three_phase`); inside a phase from
//! `(s₀, a)` to `(s₁, b)` at step `t`, with `p = (t − s₀)/(s₁ − s₀)`:
//!
//! ```text
//! cos:    b + (a − b)/2 · (cos(π·p) + 1)
//! linear: (b − a)·p + a
//! ```

use serde::{Deserialize, Serialize};

use super::{
    group_value, momentum_key, scheduler_error, set_extra, set_momentum, start, PerGroup, Progress,
    Rule,
};
use crate::error::Result;
use crate::optimizer::Optimizer;

/// [`OneCycleLR`]'s arguments (torch's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneCycleLRConfig {
    /// The peak learning rate, for all groups or each.
    pub max_lr: PerGroup,
    /// Steps in the cycle; or give `epochs` and `steps_per_epoch`.
    #[serde(default)]
    pub total_steps: Option<i64>,
    /// Epochs, with `steps_per_epoch`, when `total_steps` is not given.
    #[serde(default)]
    pub epochs: Option<i64>,
    /// Steps per epoch, with `epochs`.
    #[serde(default)]
    pub steps_per_epoch: Option<i64>,
    /// The fraction of the cycle spent warming up (default 0.3).
    #[serde(default = "OneCycleLRConfig::default_pct_start")]
    pub pct_start: f64,
    /// "cos" (default) or "linear".
    #[serde(default = "OneCycleLRConfig::default_anneal")]
    pub anneal_strategy: String,
    /// Cycle the momentum (or Adam's β₁) inversely (default true).
    #[serde(default = "OneCycleLRConfig::yes")]
    pub cycle_momentum: bool,
    /// The lowest momentum (default 0.85).
    #[serde(default = "OneCycleLRConfig::default_base_momentum")]
    pub base_momentum: PerGroup,
    /// The highest momentum (default 0.95).
    #[serde(default = "OneCycleLRConfig::default_max_momentum")]
    pub max_momentum: PerGroup,
    /// `initial_lr = max_lr/div_factor` (default 25).
    #[serde(default = "OneCycleLRConfig::default_div")]
    pub div_factor: f64,
    /// `min_lr = initial_lr/final_div_factor` (default 1e4).
    #[serde(default = "OneCycleLRConfig::default_final_div")]
    pub final_div_factor: f64,
    /// Three phases: up, back down to `initial_lr`, then to `min_lr` (default false).
    #[serde(default)]
    pub three_phase: bool,
    /// −1 for a new schedule, else the step to resume after.
    #[serde(default = "OneCycleLRConfig::new_schedule")]
    pub last_epoch: i64,
}

impl OneCycleLRConfig {
    /// torch's defaults around `max_lr` and `total_steps`.
    pub fn new(max_lr: impl Into<PerGroup>, total_steps: i64) -> Self {
        OneCycleLRConfig {
            max_lr: max_lr.into(),
            total_steps: Some(total_steps),
            epochs: None,
            steps_per_epoch: None,
            pct_start: 0.3,
            anneal_strategy: Self::default_anneal(),
            cycle_momentum: true,
            base_momentum: Self::default_base_momentum(),
            max_momentum: Self::default_max_momentum(),
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            last_epoch: -1,
        }
    }
    fn default_pct_start() -> f64 {
        0.3
    }
    fn default_anneal() -> String {
        "cos".into()
    }
    fn yes() -> bool {
        true
    }
    fn default_base_momentum() -> PerGroup {
        PerGroup::One(0.85)
    }
    fn default_max_momentum() -> PerGroup {
        PerGroup::One(0.95)
    }
    fn default_div() -> f64 {
        25.0
    }
    fn default_final_div() -> f64 {
        1e4
    }
    fn new_schedule() -> i64 {
        -1
    }
}

/// One phase of the cycle: the step it ends at and the group keys it moves between.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Phase {
    end_step: f64,
    start_lr: String,
    end_lr: String,
    start_momentum: String,
    end_momentum: String,
}

fn phase(end_step: f64, lrs: (&str, &str), momenta: (&str, &str)) -> Phase {
    Phase {
        end_step,
        start_lr: lrs.0.into(),
        end_lr: lrs.1.into(),
        start_momentum: momenta.0.into(),
        end_momentum: momenta.1.into(),
    }
}

/// torch's `OneCycleLR`; see the module documentation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OneCycleLR {
    total_steps: i64,
    #[serde(rename = "_schedule_phases")]
    schedule_phases: Vec<Phase>,
    #[serde(rename = "_anneal_func_type")]
    anneal_func_type: String,
    cycle_momentum: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_beta1: Option<bool>,
    #[serde(flatten)]
    progress: Progress,
}

impl OneCycleLR {
    /// Writes each group's `initial_lr`, `max_lr` and `min_lr` (and
    /// momentum bounds) for a new schedule, then takes the first step.
    pub fn new(opt: &mut dyn Optimizer, config: OneCycleLRConfig) -> Result<Self> {
        crate::lr_scheduler::all_or_nothing(opt, |opt| Self::build(opt, config))
    }

    fn build(opt: &mut dyn Optimizer, config: OneCycleLRConfig) -> Result<Self> {
        const NAME: &str = "OneCycleLR";
        let total_steps = match (config.total_steps, config.epochs, config.steps_per_epoch) {
            (Some(t), _, _) if t <= 0 => {
                return Err(scheduler_error(
                    NAME,
                    format!("Expected positive integer total_steps, but got {t}"),
                ))
            }
            (Some(t), _, _) => t,
            (None, Some(e), Some(s)) => {
                if e <= 0 {
                    return Err(scheduler_error(
                        NAME,
                        format!("Expected positive integer epochs, but got {e}"),
                    ));
                }
                if s <= 0 {
                    let reason = format!("Expected positive integer steps_per_epoch, but got {s}");
                    return Err(scheduler_error(NAME, reason));
                }
                e.checked_mul(s).ok_or_else(|| {
                    scheduler_error(
                        NAME,
                        format!("epochs * steps_per_epoch ({e} * {s}) exceeds the largest step count, {}", i64::MAX),
                    )
                })?
            }
            _ => {
                return Err(scheduler_error(
                    NAME,
                    "You must define either total_steps OR (epochs AND steps_per_epoch)",
                ))
            }
        };
        let (pct, n) = (config.pct_start, total_steps as f64);
        let schedule_phases = if config.three_phase {
            vec![
                phase(
                    pct * n - 1.0,
                    ("initial_lr", "max_lr"),
                    ("max_momentum", "base_momentum"),
                ),
                phase(
                    2.0 * pct * n - 2.0,
                    ("max_lr", "initial_lr"),
                    ("base_momentum", "max_momentum"),
                ),
                phase(
                    n - 1.0,
                    ("initial_lr", "min_lr"),
                    ("max_momentum", "max_momentum"),
                ),
            ]
        } else {
            vec![
                phase(
                    pct * n - 1.0,
                    ("initial_lr", "max_lr"),
                    ("max_momentum", "base_momentum"),
                ),
                phase(
                    n - 1.0,
                    ("max_lr", "min_lr"),
                    ("base_momentum", "max_momentum"),
                ),
            ]
        };
        if !(0.0..=1.0).contains(&pct) {
            return Err(scheduler_error(
                NAME,
                format!("Expected float between 0 and 1 pct_start, but got {pct}"),
            ));
        }
        if !["cos", "linear"].contains(&config.anneal_strategy.as_str()) {
            let reason = format!(
                "anneal_strategy must be one of 'cos' or 'linear', instead got {}",
                config.anneal_strategy
            );
            return Err(scheduler_error(NAME, reason));
        }
        let groups = opt.num_param_groups();
        let max_lrs = config.max_lr.expand(NAME, "max_lr", groups)?;
        let momenta = if config.cycle_momentum {
            let use_beta1 = momentum_key(NAME, opt)?;
            let max = config.max_momentum.expand(NAME, "max_momentum", groups)?;
            let base = config.base_momentum.expand(NAME, "base_momentum", groups)?;
            Some((use_beta1, max, base))
        } else {
            None
        };
        if config.last_epoch == -1 {
            for (g, &max_lr) in max_lrs.iter().enumerate() {
                let initial_lr = max_lr / config.div_factor;
                set_extra(opt, g, "initial_lr", initial_lr)?;
                set_extra(opt, g, "max_lr", max_lr)?;
                set_extra(opt, g, "min_lr", initial_lr / config.final_div_factor)?;
            }
            if let Some((use_beta1, max, base)) = &momenta {
                for g in 0..groups {
                    set_momentum(opt, g, *use_beta1, max[g])?;
                    set_extra(opt, g, "max_momentum", max[g])?;
                    set_extra(opt, g, "base_momentum", base[g])?;
                }
            }
        }
        let rule = OneCycleLR {
            total_steps,
            schedule_phases,
            anneal_func_type: config.anneal_strategy,
            cycle_momentum: config.cycle_momentum,
            use_beta1: momenta.map(|m| m.0),
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        if self.anneal_func_type == "cos" {
            let cos_out = (std::f64::consts::PI * pct).cos() + 1.0;
            end + (start - end) / 2.0 * cos_out
        } else {
            (end - start) * pct + start
        }
    }
}

impl Rule for OneCycleLR {
    const NAME: &'static str = "OneCycleLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let step_num = self.progress.last_epoch;
        if step_num > self.total_steps {
            return Err(scheduler_error(
                Self::NAME,
                format!(
                    "Tried to step {step_num} times. The specified number of total steps is {}",
                    self.total_steps
                ),
            ));
        }
        let t = step_num as f64;
        let mut lrs = Vec::with_capacity(opt.num_param_groups());
        for g in 0..opt.num_param_groups() {
            let value = |key: &str| group_value(Self::NAME, opt, g, key);
            let mut start_step = 0.0;
            let last = self.schedule_phases.len() - 1;
            for (i, phase) in self.schedule_phases.iter().enumerate() {
                if t <= phase.end_step || i == last {
                    let pct = (t - start_step) / (phase.end_step - start_step);
                    lrs.push(self.anneal(value(&phase.start_lr)?, value(&phase.end_lr)?, pct));
                    if self.cycle_momentum {
                        let m = self.anneal(
                            value(&phase.start_momentum)?,
                            value(&phase.end_momentum)?,
                            pct,
                        );
                        set_momentum(opt, g, self.use_beta1 == Some(true), m)?;
                    }
                    break;
                }
                start_step = phase.end_step;
            }
        }
        Ok(lrs)
    }
}
