//! CyclicLR: the learning rate cycles between `base_lr` and `max_lr`
//! (Smith, 2017; torch's `CyclicLR`), and the momentum the other way.
//!
//! With `c = ⌊1 + t/size⌋` and `x = 1 + t/size − c` (the position in the cycle):
//!
//! ```text
//! s  = x/r            if x ≤ r  (rising; r = step_size_up/size)
//!      (x − 1)/(r − 1)  otherwise
//! lr = base_lr + (max_lr − base_lr)·s·f
//! m  = max_m − (max_m − base_m)·s·f
//! ```
//!
//! where `f` is 1 ("triangular"), `1/2^(c−1)` ("triangular2"), `γ^t`
//! ("exp_range"), or a function of the cycle or the step of one's own.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    momentum_key, scheduler_error, set_extra, set_lrs, set_momentum, start, PerGroup, Progress,
    Rule,
};
use crate::error::Result;
use crate::optimizer::Optimizer;

/// A custom scale function of the cycle number or of the step (torch's `scale_fn`).
#[derive(Clone)]
pub struct ScaleFn(Arc<dyn Fn(f64) -> f64 + Send + Sync>);

impl ScaleFn {
    /// Wraps a closure.
    pub fn new(f: impl Fn(f64) -> f64 + Send + Sync + 'static) -> Self {
        ScaleFn(Arc::new(f))
    }
}

impl fmt::Debug for ScaleFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScaleFn(..)")
    }
}

/// [`CyclicLR`]'s arguments (torch's names and defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CyclicLRConfig {
    /// The lower bound of the learning rate, for all groups or each.
    pub base_lr: PerGroup,
    /// The upper bound of the learning rate, for all groups or each.
    pub max_lr: PerGroup,
    /// Steps of the rising half (default 2000).
    #[serde(default = "CyclicLRConfig::default_step_size_up")]
    pub step_size_up: f64,
    /// Steps of the falling half (default: `step_size_up`).
    #[serde(default)]
    pub step_size_down: Option<f64>,
    /// "triangular" (default), "triangular2" or "exp_range".
    #[serde(default = "CyclicLRConfig::default_mode")]
    pub mode: String,
    /// The base of "exp_range" (default 1).
    #[serde(default = "CyclicLRConfig::one")]
    pub gamma: f64,
    /// A custom scale function, which replaces `mode`'s.
    #[serde(skip)]
    pub scale_fn: Option<ScaleFn>,
    /// What a custom `scale_fn` takes: "cycle" (default) or "iterations".
    #[serde(default = "CyclicLRConfig::default_scale_mode")]
    pub scale_mode: String,
    /// Cycle the momentum (or Adam's β₁) inversely (default true).
    #[serde(default = "CyclicLRConfig::yes")]
    pub cycle_momentum: bool,
    /// The lower bound of the momentum (default 0.8).
    #[serde(default = "CyclicLRConfig::default_base_momentum")]
    pub base_momentum: PerGroup,
    /// The upper bound of the momentum (default 0.9).
    #[serde(default = "CyclicLRConfig::default_max_momentum")]
    pub max_momentum: PerGroup,
    /// −1 for a new schedule, else the step to resume after.
    #[serde(default = "CyclicLRConfig::new_schedule")]
    pub last_epoch: i64,
}

impl CyclicLRConfig {
    /// torch's defaults around the two required bounds.
    pub fn new(base_lr: impl Into<PerGroup>, max_lr: impl Into<PerGroup>) -> Self {
        CyclicLRConfig {
            base_lr: base_lr.into(),
            max_lr: max_lr.into(),
            step_size_up: 2000.0,
            step_size_down: None,
            mode: Self::default_mode(),
            gamma: 1.0,
            scale_fn: None,
            scale_mode: Self::default_scale_mode(),
            cycle_momentum: true,
            base_momentum: Self::default_base_momentum(),
            max_momentum: Self::default_max_momentum(),
            last_epoch: -1,
        }
    }
    fn default_step_size_up() -> f64 {
        2000.0
    }
    fn default_mode() -> String {
        "triangular".into()
    }
    fn default_scale_mode() -> String {
        "cycle".into()
    }
    fn one() -> f64 {
        1.0
    }
    fn yes() -> bool {
        true
    }
    fn default_base_momentum() -> PerGroup {
        PerGroup::One(0.8)
    }
    fn default_max_momentum() -> PerGroup {
        PerGroup::One(0.9)
    }
    fn new_schedule() -> i64 {
        -1
    }
}

/// torch's `CyclicLR`; see the module documentation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CyclicLR {
    max_lrs: Vec<f64>,
    total_size: f64,
    step_ratio: f64,
    mode: String,
    gamma: f64,
    scale_mode: String,
    cycle_momentum: bool,
    // Written only when cycling momentum, as torch sets them only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_beta1: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    base_momentums: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    max_momentums: Vec<f64>,
    #[serde(skip)]
    scale_fn: Option<ScaleFn>,
    #[serde(flatten)]
    progress: Progress,
}

impl CyclicLR {
    /// Sets each group's `lr` to `base_lr` (and its momentum to
    /// `max_momentum`) for a new schedule, then takes the first step.
    pub fn new(opt: &mut dyn Optimizer, config: CyclicLRConfig) -> Result<Self> {
        crate::lr_scheduler::all_or_nothing(opt, |opt| Self::build(opt, config))
    }

    fn build(opt: &mut dyn Optimizer, config: CyclicLRConfig) -> Result<Self> {
        const NAME: &str = "CyclicLR";
        let groups = opt.num_param_groups();
        let base_lrs = config.base_lr.expand(NAME, "base_lr", groups)?;
        let max_lrs = config.max_lr.expand(NAME, "max_lr", groups)?;
        let up = config.step_size_up;
        let down = config.step_size_down.unwrap_or(up);
        let total_size = up + down;
        if !(up >= 0.0 && down >= 0.0 && total_size > 0.0) {
            return Err(scheduler_error(
                NAME,
                "step_size_up and step_size_down must be >= 0, and not both 0",
            ));
        }
        let known = ["triangular", "triangular2", "exp_range"].contains(&config.mode.as_str());
        if !known && config.scale_fn.is_none() {
            return Err(scheduler_error(
                NAME,
                "mode is invalid and scale_fn is None",
            ));
        }
        if !["cycle", "iterations"].contains(&config.scale_mode.as_str()) {
            let reason = format!(
                "scale_mode must be \"cycle\" or \"iterations\", found {:?}",
                config.scale_mode
            );
            return Err(scheduler_error(NAME, reason));
        }
        let mut rule = CyclicLR {
            max_lrs,
            total_size,
            step_ratio: up / total_size,
            mode: config.mode,
            gamma: config.gamma,
            scale_mode: config.scale_mode,
            cycle_momentum: config.cycle_momentum,
            use_beta1: None,
            base_momentums: Vec::new(),
            max_momentums: Vec::new(),
            scale_fn: config.scale_fn,
            progress: Progress::default(),
        };
        rule.init_scale_mode();
        if rule.cycle_momentum {
            rule.use_beta1 = Some(momentum_key(NAME, opt)?);
            rule.base_momentums = config.base_momentum.expand(NAME, "base_momentum", groups)?;
            rule.max_momentums = config.max_momentum.expand(NAME, "max_momentum", groups)?;
        }
        if config.last_epoch == -1 {
            set_lrs(opt, &base_lrs)?;
            if rule.cycle_momentum {
                for g in 0..groups {
                    set_momentum(opt, g, rule.use_beta1 == Some(true), rule.max_momentums[g])?;
                    set_extra(opt, g, "max_momentum", rule.max_momentums[g])?;
                    set_extra(opt, g, "base_momentum", rule.base_momentums[g])?;
                }
            }
        }
        let mut rule = start(rule, opt, config.last_epoch)?;
        rule.progress.base_lrs = base_lrs;
        Ok(rule)
    }

    /// torch's `_init_scale_fn`: the built-in modes fix their scale mode.
    fn init_scale_mode(&mut self) {
        if self.scale_fn.is_none() {
            self.scale_mode = match self.mode.as_str() {
                "exp_range" => "iterations".into(),
                _ => "cycle".into(),
            };
        }
    }

    fn scale(&self, x: f64) -> f64 {
        match (&self.scale_fn, self.mode.as_str()) {
            (Some(f), _) => (f.0)(x),
            (None, "triangular2") => 1.0 / 2f64.powf(x - 1.0),
            (None, "exp_range") => self.gamma.powf(x),
            (None, _) => 1.0,
        }
    }
}

impl Rule for CyclicLR {
    const NAME: &'static str = "CyclicLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let t = self.progress.last_epoch as f64;
        let cycle = (1.0 + t / self.total_size).floor();
        let x = 1.0 + t / self.total_size - cycle;
        let scale_factor = if x <= self.step_ratio {
            x / self.step_ratio
        } else {
            (x - 1.0) / (self.step_ratio - 1.0)
        };
        let f = if self.scale_mode == "cycle" {
            self.scale(cycle)
        } else {
            self.scale(t)
        };
        let lrs = self
            .progress
            .base_lrs
            .iter()
            .zip(&self.max_lrs)
            .map(|(base, max)| base + (max - base) * scale_factor * f)
            .collect();
        if self.cycle_momentum {
            for (g, (base, max)) in self
                .base_momentums
                .iter()
                .zip(&self.max_momentums)
                .enumerate()
            {
                let momentum = max - (max - base) * scale_factor * f;
                set_momentum(opt, g, self.use_beta1 == Some(true), momentum)?;
            }
        }
        Ok(lrs)
    }
    fn keep_unsaved(&mut self, old: &Self) {
        self.scale_fn = old.scale_fn.clone();
        self.init_scale_mode();
    }
}
