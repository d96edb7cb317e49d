//! CosineAnnealingWarmRestarts: cosine annealing that restarts every `T_i`
//! epochs, each period `T_mult` times the last (SGDR, Loshchilov & Hutter,
//! 2017; torch's `CosineAnnealingWarmRestarts`):
//!
//! ```text
//! lr = η_min + (base_lr − η_min)·(1 + cos(π·T_cur/T_i))/2
//! ```

use serde::{Deserialize, Serialize};

use super::{check_groups, from_state, lrs, scheduler_error, set_lrs, start_progress, to_state};
use super::{LrScheduler, Progress, SchedulerState};
use crate::error::Result;
use crate::optimizer::Optimizer;

/// [`CosineAnnealingWarmRestarts`]'s arguments (torch's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineAnnealingWarmRestartsConfig {
    /// Epochs until the first restart (>= 1).
    #[serde(rename = "T_0")]
    pub t_0: i64,
    /// The growth of the period after each restart (>= 1, default 1).
    #[serde(rename = "T_mult", default = "CosineAnnealingWarmRestartsConfig::one")]
    pub t_mult: i64,
    /// The lowest learning rate (default 0).
    #[serde(default)]
    pub eta_min: f64,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "CosineAnnealingWarmRestartsConfig::new_schedule")]
    pub last_epoch: i64,
}

impl CosineAnnealingWarmRestartsConfig {
    /// A new schedule restarting every `t_0` epochs (torch's defaults: `T_mult` 1, `eta_min` 0).
    pub fn new(t_0: i64) -> Self {
        CosineAnnealingWarmRestartsConfig {
            t_0,
            t_mult: 1,
            eta_min: 0.0,
            last_epoch: -1,
        }
    }

    fn one() -> i64 {
        1
    }
    fn new_schedule() -> i64 {
        -1
    }
}

/// torch's `CosineAnnealingWarmRestarts`; see the module documentation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CosineAnnealingWarmRestarts {
    #[serde(rename = "T_0")]
    t_0: i64,
    #[serde(rename = "T_i")]
    t_i: i64,
    #[serde(rename = "T_mult")]
    t_mult: i64,
    eta_min: f64,
    #[serde(rename = "T_cur")]
    t_cur: f64,
    #[serde(flatten)]
    progress: Progress,
}

const NAME: &str = "CosineAnnealingWarmRestarts";

impl CosineAnnealingWarmRestarts {
    /// A new schedule (or a resumed one, by `config.last_epoch`).
    pub fn new(opt: &mut dyn Optimizer, config: CosineAnnealingWarmRestartsConfig) -> Result<Self> {
        if config.t_0 <= 0 {
            let reason = format!("Expected positive integer T_0, but got {}", config.t_0);
            return Err(scheduler_error(NAME, reason));
        }
        if config.t_mult < 1 {
            let reason = format!("Expected integer T_mult >= 1, but got {}", config.t_mult);
            return Err(scheduler_error(NAME, reason));
        }
        super::all_or_nothing(opt, |opt| {
            let mut s = CosineAnnealingWarmRestarts {
                t_0: config.t_0,
                t_i: config.t_0,
                t_mult: config.t_mult,
                eta_min: config.eta_min,
                t_cur: config.last_epoch as f64,
                progress: start_progress(NAME, opt, config.last_epoch)?,
            };
            s.restart(opt)?;
            Ok(s)
        })
    }

    fn get_lr(&self) -> Vec<f64> {
        let phase = (std::f64::consts::PI * self.t_cur / self.t_i as f64).cos();
        self.progress
            .base_lrs
            .iter()
            .map(|b| self.eta_min + (b - self.eta_min) * (1.0 + phase) / 2.0)
            .collect()
    }

    fn apply(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        set_lrs(opt, &self.get_lr())?;
        self.progress.last_lr = lrs(opt);
        Ok(())
    }

    /// Moves to `epoch`, which may be fractional (torch's `step(epoch)`,
    /// e.g. `epoch + i/iters` inside an epoch).
    pub fn step_to(&mut self, opt: &mut dyn Optimizer, epoch: f64) -> Result<()> {
        // An epoch must also fit `last_epoch`, an i64 (torch's Python int has no end).
        if epoch.is_nan() || epoch < 0.0 || epoch >= i64::MAX as f64 {
            return Err(scheduler_error(
                NAME,
                format!("Expected non-negative epoch below 2^63, but got {epoch}"),
            ));
        }
        check_groups(NAME, opt, self.progress.base_lrs.len())?;
        let (t_0, t_mult) = (self.t_0 as f64, self.t_mult);
        let (mut t_i, t_cur) = (self.t_0, epoch);
        let t_cur = if epoch >= t_0 {
            if t_mult == 1 {
                epoch % t_0
            } else {
                let m = t_mult as f64;
                let n = ((epoch / t_0 * (m - 1.0) + 1.0).ln() / m.ln()) as i64;
                let mn = m.powf(n as f64);
                t_i = u32::try_from(n)
                    .ok()
                    .and_then(|n| t_mult.checked_pow(n))
                    .and_then(|p| self.t_0.checked_mul(p))
                    .ok_or_else(|| {
                        let reason = format!("epoch {epoch}: its period T_i is past 2^63");
                        scheduler_error(NAME, reason)
                    })?;
                epoch - t_0 * (mn - 1.0) / (m - 1.0)
            }
        } else {
            t_cur
        };
        self.t_i = t_i;
        self.t_cur = t_cur;
        self.progress.last_epoch = epoch.floor() as i64;
        self.apply(opt)
    }
}

impl LrScheduler for CosineAnnealingWarmRestarts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if self.progress.last_epoch < 0 {
            return self.step_to(opt, 0.0);
        }
        check_groups(NAME, opt, self.progress.base_lrs.len())?;
        let last_epoch = super::next_epoch(NAME, self.progress.last_epoch)?;
        let (mut t_cur, mut t_i) = (self.t_cur + 1.0, self.t_i);
        if t_cur >= t_i as f64 {
            t_cur %= t_i as f64;
            t_i = t_i.checked_mul(self.t_mult).ok_or_else(|| {
                scheduler_error(
                    NAME,
                    format!("the next period, {t_i} * {}, is past 2^63", self.t_mult),
                )
            })?;
        }
        (self.progress.last_epoch, self.t_cur, self.t_i) = (last_epoch, t_cur, t_i);
        self.apply(opt)
    }

    fn get_last_lr(&self) -> &[f64] {
        &self.progress.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.progress.last_epoch
    }

    fn state_dict(&self) -> SchedulerState {
        to_state(self)
    }

    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()> {
        let loaded: Self = from_state(NAME, state)?;
        if loaded.t_0 < 1 || loaded.t_i < 1 || loaded.t_mult < 1 {
            return Err(crate::error::Error::state(
                "CosineAnnealingWarmRestarts state_dict.T_i",
                "T_0, T_i and T_mult must be >= 1",
            ));
        }
        *self = loaded;
        Ok(())
    }

    /// torch's inherited `_update_lr(epoch)`: no closed form, so the current `T_cur` decides.
    fn jump_to(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        check_groups(NAME, opt, self.progress.base_lrs.len())?;
        self.progress.last_epoch = epoch;
        self.apply(opt)
    }

    fn rewind(&mut self) {
        self.progress.last_epoch = self.progress.last_epoch.saturating_sub(1);
    }

    /// torch's `_initial_step`: its own `step` does not count steps, so `_step_count` stays 0.
    fn restart(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.progress.step_count = 0;
        self.step(opt)
    }
}
