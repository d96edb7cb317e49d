//! The schedulers whose rule is a formula of the epoch: torch's recursive
//! forms (each step multiplies the group's current `lr`, so schedulers
//! chain), and their closed forms where torch has one.
//!
//! | scheduler | `lr` at epoch `t` (closed form, from `base_lr = initial_lr`) |
//! | --- | --- |
//! | `LambdaLR` | `base_lr · λ(t)` |
//! | `MultiplicativeLR` | `lr_{t−1} · λ(t)` |
//! | `StepLR` | `base_lr · γ^⌊t / step_size⌋` |
//! | `MultiStepLR` | `base_lr · γ^(milestones ≤ t)` |
//! | `ConstantLR` | `base_lr · factor` until `total_iters`, then `base_lr` |
//! | `LinearLR` | `base_lr · (s + (e − s)·min(t, T)/T)` |
//! | `ExponentialLR` | `base_lr · γ^t` |
//! | `PolynomialLR` | `base_lr · (1 − min(t, T)/T)^power` |
//! | `CosineAnnealingLR` | `η_min + (base_lr − η_min)·(1 + cos(π·t/T_max))/2` |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{lrs, scheduler_error, start, Progress, Rule};
use crate::error::Result;
use crate::optimizer::Optimizer;

fn new_schedule() -> i64 {
    -1
}

/// A learning-rate factor as a function of the epoch, for [`LambdaLR`] and [`MultiplicativeLR`].
#[derive(Clone)]
pub struct LrLambda(Arc<dyn Fn(i64) -> f64 + Send + Sync>);

impl LrLambda {
    /// Wraps a closure of the epoch.
    pub fn new(f: impl Fn(i64) -> f64 + Send + Sync + 'static) -> Self {
        LrLambda(Arc::new(f))
    }

    fn call(&self, epoch: i64) -> f64 {
        (self.0)(epoch)
    }
}

impl fmt::Debug for LrLambda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LrLambda(..)")
    }
}

/// One lambda per group: the same for all, or one each (checked against the groups).
fn lambdas_for(
    name: &'static str,
    opt: &dyn Optimizer,
    lambdas: Vec<LrLambda>,
) -> Result<Vec<LrLambda>> {
    let groups = opt.num_param_groups();
    match lambdas.len() {
        1 => Ok(vec![lambdas[0].clone(); groups]),
        n if n == groups => Ok(lambdas),
        n => Err(scheduler_error(
            name,
            format!("Expected {groups} lr_lambdas, but got {n}"),
        )),
    }
}

/// `lr = initial_lr · λ(epoch)` (torch's `LambdaLR`). The lambdas are not
/// saved in a state_dict (torch saves only callable objects' attributes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LambdaLR {
    #[serde(skip)]
    lr_lambdas: Vec<LrLambda>,
    #[serde(flatten)]
    progress: Progress,
}

impl LambdaLR {
    /// A new schedule; `lambdas` holds one function for every group, or one for all.
    pub fn new(opt: &mut dyn Optimizer, lambdas: Vec<LrLambda>) -> Result<Self> {
        Self::resume(opt, lambdas, -1)
    }

    /// A schedule resumed after epoch `last_epoch` (torch's `last_epoch`
    /// argument; −1 is [`new`](Self::new)), from the groups' `initial_lr`.
    pub fn resume(
        opt: &mut dyn Optimizer,
        lambdas: Vec<LrLambda>,
        last_epoch: i64,
    ) -> Result<Self> {
        let lr_lambdas = lambdas_for("LambdaLR", opt, lambdas)?;
        let rule = LambdaLR {
            lr_lambdas,
            progress: Progress::default(),
        };
        start(rule, opt, last_epoch)
    }
}

impl Rule for LambdaLR {
    const NAME: &'static str = "LambdaLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, _: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let t = self.progress.last_epoch;
        Ok(self
            .lr_lambdas
            .iter()
            .zip(&self.progress.base_lrs)
            .map(|(f, base)| base * f.call(t))
            .collect())
    }
    fn keep_unsaved(&mut self, old: &Self) {
        self.lr_lambdas = old.lr_lambdas.clone();
    }
}

/// `lr ← lr · λ(epoch)` at every step after the first (torch's `MultiplicativeLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MultiplicativeLR {
    #[serde(skip)]
    lr_lambdas: Vec<LrLambda>,
    #[serde(flatten)]
    progress: Progress,
}

impl MultiplicativeLR {
    /// A new schedule; `lambdas` holds one function for every group, or one for all.
    pub fn new(opt: &mut dyn Optimizer, lambdas: Vec<LrLambda>) -> Result<Self> {
        Self::resume(opt, lambdas, -1)
    }

    /// A schedule resumed after epoch `last_epoch` (torch's `last_epoch`
    /// argument; −1 is [`new`](Self::new)), from the groups' `initial_lr`.
    pub fn resume(
        opt: &mut dyn Optimizer,
        lambdas: Vec<LrLambda>,
        last_epoch: i64,
    ) -> Result<Self> {
        let lr_lambdas = lambdas_for("MultiplicativeLR", opt, lambdas)?;
        let rule = MultiplicativeLR {
            lr_lambdas,
            progress: Progress::default(),
        };
        start(rule, opt, last_epoch)
    }
}

impl Rule for MultiplicativeLR {
    const NAME: &'static str = "MultiplicativeLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = lrs(opt);
        if self.progress.is_initial {
            return Ok(lrs);
        }
        let t = self.progress.last_epoch;
        Ok(lrs
            .iter()
            .zip(&self.lr_lambdas)
            .map(|(lr, f)| lr * f.call(t))
            .collect())
    }
    fn keep_unsaved(&mut self, old: &Self) {
        self.lr_lambdas = old.lr_lambdas.clone();
    }
}

/// [`StepLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepLRConfig {
    /// Epochs between decays (>= 1).
    pub step_size: i64,
    /// The decay factor (torch's default 0.1).
    #[serde(default = "StepLRConfig::default_gamma")]
    pub gamma: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "new_schedule")]
    pub last_epoch: i64,
}

impl StepLRConfig {
    /// A new schedule decaying by torch's default `gamma` (0.1) every `step_size` epochs.
    pub fn new(step_size: i64) -> Self {
        StepLRConfig {
            step_size,
            gamma: Self::default_gamma(),
            last_epoch: -1,
        }
    }

    fn default_gamma() -> f64 {
        0.1
    }
}

/// `lr ← lr·γ` every `step_size` epochs (torch's `StepLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLR {
    step_size: i64,
    gamma: f64,
    #[serde(flatten)]
    progress: Progress,
}

impl StepLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: StepLRConfig) -> Result<Self> {
        let rule = StepLR {
            step_size: config.step_size,
            gamma: config.gamma,
            progress: Progress::default(),
        };
        rule.check()?;
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for StepLR {
    const NAME: &'static str = "StepLR";
    crate::lr_scheduler::impl_progress!();
    fn check(&self) -> Result<()> {
        if self.step_size < 1 {
            let reason = format!("step_size must be >= 1, found {}", self.step_size);
            return Err(scheduler_error(Self::NAME, reason));
        }
        Ok(())
    }
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let t = self.progress.last_epoch;
        let lrs = lrs(opt);
        if t == 0 || t.rem_euclid(self.step_size) != 0 {
            return Ok(lrs);
        }
        Ok(lrs.iter().map(|lr| lr * self.gamma).collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let k = self.progress.last_epoch.div_euclid(self.step_size);
        Some(
            self.progress
                .base_lrs
                .iter()
                .map(|b| b * self.gamma.powf(k as f64))
                .collect(),
        )
    }
}

/// [`MultiStepLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiStepLRConfig {
    /// The epochs at which to decay (repeats decay more than once).
    pub milestones: Vec<i64>,
    /// The decay factor (torch's default 0.1).
    #[serde(default = "StepLRConfig::default_gamma")]
    pub gamma: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "new_schedule")]
    pub last_epoch: i64,
}

impl MultiStepLRConfig {
    /// A new schedule decaying by torch's default `gamma` (0.1) at each milestone.
    pub fn new(milestones: Vec<i64>) -> Self {
        MultiStepLRConfig {
            milestones,
            gamma: StepLRConfig::default_gamma(),
            last_epoch: -1,
        }
    }
}

/// `lr ← lr·γ^k` at an epoch listed `k` times in `milestones` (torch's `MultiStepLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MultiStepLR {
    /// torch's `Counter`: epoch → how many times it is listed.
    milestones: BTreeMap<i64, u32>,
    gamma: f64,
    #[serde(flatten)]
    progress: Progress,
}

impl MultiStepLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: MultiStepLRConfig) -> Result<Self> {
        let mut milestones = BTreeMap::new();
        for m in config.milestones {
            *milestones.entry(m).or_insert(0) += 1;
        }
        let rule = MultiStepLR {
            milestones,
            gamma: config.gamma,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for MultiStepLR {
    const NAME: &'static str = "MultiStepLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = lrs(opt);
        match self.milestones.get(&self.progress.last_epoch) {
            None => Ok(lrs),
            Some(&k) => Ok(lrs
                .iter()
                .map(|lr| lr * self.gamma.powf(f64::from(k)))
                .collect()),
        }
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let t = self.progress.last_epoch;
        let passed: u32 = self.milestones.range(..=t).map(|(_, &k)| k).sum();
        let factor = self.gamma.powf(f64::from(passed));
        Some(self.progress.base_lrs.iter().map(|b| b * factor).collect())
    }
}

/// [`ConstantLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstantLRConfig {
    /// The factor applied until `total_iters`, in [0, 1] (default 1/3).
    pub factor: f64,
    /// Epochs at the reduced rate (default 5).
    pub total_iters: i64,
    /// −1 for a new schedule, else the epoch to resume after.
    pub last_epoch: i64,
}

impl Default for ConstantLRConfig {
    fn default() -> Self {
        ConstantLRConfig {
            factor: 1.0 / 3.0,
            total_iters: 5,
            last_epoch: -1,
        }
    }
}

/// `lr · factor` for `total_iters` epochs, then `lr` (torch's `ConstantLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConstantLR {
    factor: f64,
    total_iters: i64,
    #[serde(flatten)]
    progress: Progress,
}

impl ConstantLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: ConstantLRConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.factor) {
            let reason = "Constant multiplicative factor expected to be between 0 and 1.";
            return Err(scheduler_error("ConstantLR", reason));
        }
        let rule = ConstantLR {
            factor: config.factor,
            total_iters: config.total_iters,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for ConstantLR {
    const NAME: &'static str = "ConstantLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let (t, lrs) = (self.progress.last_epoch, lrs(opt));
        if t == 0 {
            return Ok(lrs.iter().map(|lr| lr * self.factor).collect());
        }
        if t != self.total_iters {
            return Ok(lrs);
        }
        Ok(lrs.iter().map(|lr| lr * (1.0 / self.factor)).collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let done = if self.progress.last_epoch >= self.total_iters {
            1.0 - self.factor
        } else {
            0.0
        };
        Some(
            self.progress
                .base_lrs
                .iter()
                .map(|b| b * (self.factor + done))
                .collect(),
        )
    }
}

/// [`LinearLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearLRConfig {
    /// The factor at epoch 0, in (0, 1] (default 1/3).
    pub start_factor: f64,
    /// The factor from `total_iters` on, in [0, 1] (default 1).
    pub end_factor: f64,
    /// Epochs of the ramp (default 5).
    pub total_iters: i64,
    /// −1 for a new schedule, else the epoch to resume after.
    pub last_epoch: i64,
}

impl Default for LinearLRConfig {
    fn default() -> Self {
        LinearLRConfig {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_iters: 5,
            last_epoch: -1,
        }
    }
}

/// The factor moves linearly from `start_factor` to `end_factor` over `total_iters` epochs (torch's `LinearLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinearLR {
    start_factor: f64,
    end_factor: f64,
    total_iters: i64,
    #[serde(flatten)]
    progress: Progress,
}

impl LinearLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: LinearLRConfig) -> Result<Self> {
        if !(config.start_factor > 0.0 && config.start_factor <= 1.0) {
            let reason = "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.";
            return Err(scheduler_error("LinearLR", reason));
        }
        if !(0.0..=1.0).contains(&config.end_factor) {
            let reason = "Ending multiplicative factor expected to be between 0 and 1.";
            return Err(scheduler_error("LinearLR", reason));
        }
        if config.total_iters < 1 {
            let reason = format!("total_iters must be >= 1, found {}", config.total_iters);
            return Err(scheduler_error("LinearLR", reason));
        }
        let rule = LinearLR {
            start_factor: config.start_factor,
            end_factor: config.end_factor,
            total_iters: config.total_iters,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for LinearLR {
    const NAME: &'static str = "LinearLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let (t, lrs) = (self.progress.last_epoch, lrs(opt));
        if t == 0 {
            return Ok(lrs.iter().map(|lr| lr * self.start_factor).collect());
        }
        if self.progress.is_initial || t > self.total_iters {
            return Ok(lrs);
        }
        let (s, e, n) = (self.start_factor, self.end_factor, self.total_iters as f64);
        let factor = 1.0 + (e - s) / (n * s + (t - 1) as f64 * (e - s));
        Ok(lrs.iter().map(|lr| lr * factor).collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let (s, e) = (self.start_factor, self.end_factor);
        let t = self.total_iters.min(self.progress.last_epoch) as f64;
        let factor = s + (e - s) * t / self.total_iters as f64;
        Some(self.progress.base_lrs.iter().map(|b| b * factor).collect())
    }
}

/// [`ExponentialLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExponentialLRConfig {
    /// The decay factor per epoch.
    pub gamma: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "new_schedule")]
    pub last_epoch: i64,
}

impl ExponentialLRConfig {
    /// A new schedule decaying by `gamma` every epoch.
    pub fn new(gamma: f64) -> Self {
        ExponentialLRConfig {
            gamma,
            last_epoch: -1,
        }
    }
}

/// `lr ← lr·γ` every epoch (torch's `ExponentialLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExponentialLR {
    gamma: f64,
    #[serde(flatten)]
    progress: Progress,
}

impl ExponentialLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: ExponentialLRConfig) -> Result<Self> {
        let rule = ExponentialLR {
            gamma: config.gamma,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for ExponentialLR {
    const NAME: &'static str = "ExponentialLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = lrs(opt);
        if self.progress.is_initial {
            return Ok(lrs);
        }
        Ok(lrs.iter().map(|lr| lr * self.gamma).collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let factor = self.gamma.powf(self.progress.last_epoch as f64);
        Some(self.progress.base_lrs.iter().map(|b| b * factor).collect())
    }
}

/// [`PolynomialLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolynomialLRConfig {
    /// Epochs until the rate reaches 0 (default 5).
    pub total_iters: i64,
    /// The polynomial's power (default 1).
    pub power: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    pub last_epoch: i64,
}

impl Default for PolynomialLRConfig {
    fn default() -> Self {
        PolynomialLRConfig {
            total_iters: 5,
            power: 1.0,
            last_epoch: -1,
        }
    }
}

/// `lr · (1 − t/T)^power`, reaching 0 at `total_iters` (torch's `PolynomialLR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolynomialLR {
    total_iters: i64,
    power: f64,
    #[serde(flatten)]
    progress: Progress,
}

impl PolynomialLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: PolynomialLRConfig) -> Result<Self> {
        if config.total_iters < 1 {
            let reason = format!("total_iters must be >= 1, found {}", config.total_iters);
            return Err(scheduler_error("PolynomialLR", reason));
        }
        let rule = PolynomialLR {
            total_iters: config.total_iters,
            power: config.power,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for PolynomialLR {
    const NAME: &'static str = "PolynomialLR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let (t, lrs) = (self.progress.last_epoch, lrs(opt));
        if self.progress.is_initial || t > self.total_iters {
            return Ok(lrs);
        }
        let n = self.total_iters as f64;
        let factor = ((1.0 - t as f64 / n) / (1.0 - (t - 1) as f64 / n)).powf(self.power);
        Ok(lrs.iter().map(|lr| lr * factor).collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        let n = self.total_iters as f64;
        let t = self.total_iters.min(self.progress.last_epoch) as f64;
        let factor = (1.0 - t / n).powf(self.power);
        Some(self.progress.base_lrs.iter().map(|b| b * factor).collect())
    }
}

/// [`CosineAnnealingLR`]'s arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineAnnealingLRConfig {
    /// Epochs of a half cosine (>= 1).
    #[serde(rename = "T_max")]
    pub t_max: i64,
    /// The lowest learning rate (default 0).
    #[serde(default)]
    pub eta_min: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "new_schedule")]
    pub last_epoch: i64,
}

impl CosineAnnealingLRConfig {
    /// A new half cosine over `t_max` epochs down to torch's default `eta_min` (0).
    pub fn new(t_max: i64) -> Self {
        CosineAnnealingLRConfig {
            t_max,
            eta_min: 0.0,
            last_epoch: -1,
        }
    }
}

/// A cosine from `initial_lr` down to `eta_min` over `T_max` epochs, and
/// back up (torch's `CosineAnnealingLR`, in its recursive form).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CosineAnnealingLR {
    #[serde(rename = "T_max")]
    t_max: i64,
    eta_min: f64,
    #[serde(flatten)]
    progress: Progress,
}

impl CosineAnnealingLR {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: CosineAnnealingLRConfig) -> Result<Self> {
        let rule = CosineAnnealingLR {
            t_max: config.t_max,
            eta_min: config.eta_min,
            progress: Progress::default(),
        };
        rule.check()?;
        start(rule, opt, config.last_epoch)
    }
}

impl Rule for CosineAnnealingLR {
    const NAME: &'static str = "CosineAnnealingLR";
    crate::lr_scheduler::impl_progress!();
    fn check(&self) -> Result<()> {
        if self.t_max < 1 {
            let reason = format!("T_max must be >= 1, found {}", self.t_max);
            return Err(scheduler_error(Self::NAME, reason));
        }
        Ok(())
    }
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        use std::f64::consts::PI;
        let (t, lrs) = (self.progress.last_epoch, lrs(opt));
        let (t_max, eta_min) = (self.t_max as f64, self.eta_min);
        let base_lrs = &self.progress.base_lrs;
        if self.progress.is_initial {
            return Ok(lrs);
        }
        if self.progress.step_count == 1 && t > 0 {
            return Ok(base_lrs
                .iter()
                .map(|b| eta_min + (b - eta_min) * (1.0 + (t as f64 * PI / t_max).cos()) / 2.0)
                .collect());
        }
        // In i128: near the end of the i64 range these would overflow.
        let (t_wide, t_max_wide) = (i128::from(t), i128::from(self.t_max));
        if (t_wide - 1 - t_max_wide).rem_euclid(2 * t_max_wide) == 0 {
            return Ok(lrs
                .iter()
                .zip(base_lrs)
                .map(|(lr, b)| lr + (b - eta_min) * (1.0 - (PI / t_max).cos()) / 2.0)
                .collect());
        }
        let ratio =
            (1.0 + (PI * t as f64 / t_max).cos()) / (1.0 + (PI * (t - 1) as f64 / t_max).cos());
        Ok(lrs
            .iter()
            .map(|lr| ratio * (lr - eta_min) + eta_min)
            .collect())
    }
    fn closed_form(&self) -> Option<Vec<f64>> {
        use std::f64::consts::PI;
        let t = self.progress.last_epoch as f64;
        let eta_min = self.eta_min;
        Some(
            self.progress
                .base_lrs
                .iter()
                .map(|b| eta_min + (b - eta_min) * (1.0 + (PI * t / self.t_max as f64).cos()) / 2.0)
                .collect(),
        )
    }
}
