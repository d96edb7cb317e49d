//! Stochastic weight averaging: torch's `torch.optim.swa_utils`.
//!
//! [`AveragedModel`] keeps a running average of a set of [`Param`]s, taken
//! after the optimizer's steps (torch's `AveragedModel.update_parameters`):
//!
//! ```text
//! n = 0:    θ̄ ← θ                          (a copy)
//! SWA:      θ̄ ← θ̄ + (θ − θ̄)/(n + 1)        (equal weights, torch's CPU default)
//! EMA:      θ̄ ← lerp(θ̄, θ, 1 − decay)      (torch's get_ema_multi_avg_fn)
//! ```
//!
//! [`SWALR`] anneals each group's learning rate to a constant `swa_lr` over
//! `anneal_epochs` epochs, by cosine or linearly.
//!
//! ```
//! use ferroptim::swa_utils::{Averaging, AveragedModel};
//! use ferroptim::Param;
//! let w = Param::from_vec(vec![1.0f64, 2.0], &[2])?;
//! let mut swa = AveragedModel::new(&[w.clone()], Averaging::Swa)?;
//! swa.update_parameters(&[w.clone()])?; // copies
//! w.set_value(ferroptim::Tensor::from_vec(vec![3.0f64, 6.0], &[2])?)?;
//! swa.update_parameters(&[w.clone()])?; // averages
//! assert_eq!(swa.params()[0].to_vec::<f64>()?, [2.0, 4.0]);
//! assert_eq!(swa.n_averaged(), 2);
//! # Ok::<(), ferroptim::Error>(())
//! ```
//!
//! torch's `use_buffers` and `update_bn` need a model's buffers and forward
//! pass, which live in the framework adapters, not here.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::lerp;
use crate::lr_scheduler::{set_extra, start, PerGroup, Progress, Rule};
use crate::optimizer::Optimizer;
use crate::param::Param;
use crate::tensor::{Dtype, Element, Tensor, TensorData, TensorDataMut};
use crate::validate::py_float;

/// How [`AveragedModel`] averages.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Averaging {
    /// Equal weights over every update (torch's default `avg_fn` on CPU).
    Swa,
    /// An exponential moving average (torch's `get_ema_multi_avg_fn(decay)`).
    Ema {
        /// The weight of the old average, in [0, 1] (torch's default 0.999).
        decay: f64,
    },
}

impl Averaging {
    /// torch's `get_ema_multi_avg_fn(decay)`, with its check of `decay`.
    pub fn ema(decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            let message = format!(
                "Invalid decay value {} provided. Please provide a value in [0,1] range.",
                py_float(decay)
            );
            return Err(Error::hyper("decay", message));
        }
        Ok(Averaging::Ema { decay })
    }
}

/// A running average of a set of parameters (torch's `AveragedModel`).
#[derive(Clone, Debug)]
pub struct AveragedModel {
    params: Vec<Param>,
    averaging: Averaging,
    n_averaged: u64,
}

/// [`AveragedModel`]'s state: torch's `n_averaged` and the averaged values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AveragedState {
    /// Updates taken.
    pub n_averaged: u64,
    /// The averaged values, in the order of the parameters.
    pub params: Vec<Tensor>,
}

/// A tensor's shape and dtype.
type Layout = (Vec<usize>, Dtype);

/// Errors unless `b` has `a`'s shapes and dtypes, parameter by parameter.
fn check_like(what: &str, a: &[Layout], b: &[Layout]) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::state(
            what,
            format!("{} parameters given, the average has {}", b.len(), a.len()),
        ));
    }
    for (i, ((shape_a, dtype_a), (shape_b, dtype_b))) in a.iter().zip(b).enumerate() {
        if shape_a != shape_b {
            return Err(Error::ShapeMismatch {
                what: format!("{what}[{i}]"),
                expected: shape_a.clone(),
                found: shape_b.clone(),
            });
        }
        if dtype_a != dtype_b {
            return Err(Error::state(
                format!("{what}[{i}]"),
                format!("dtype {dtype_b} where the average has {dtype_a}"),
            ));
        }
    }
    Ok(())
}

fn layouts(params: &[Param]) -> Vec<Layout> {
    params.iter().map(|p| (p.shape(), p.dtype())).collect()
}

fn average<T: Element>(avg: &mut [T], current: &[T], averaging: Averaging, n: u64) {
    match averaging {
        // torch: averaged + (current − averaged) / (n_averaged + 1), each op rounded.
        Averaging::Swa => {
            let count = T::from_f64((n + 1) as f64);
            for (a, &c) in avg.iter_mut().zip(current) {
                *a = *a + (c - *a) / count;
            }
        }
        Averaging::Ema { decay } => {
            let weight = T::from_f64(1.0 - decay);
            for (a, &c) in avg.iter_mut().zip(current) {
                *a = lerp(*a, c, weight);
            }
        }
    }
}

impl AveragedModel {
    /// An average of `model`'s parameters, starting as copies of their
    /// current values (torch deep-copies the model); nothing is averaged
    /// until the first [`AveragedModel::update_parameters`].
    pub fn new(model: &[Param], averaging: Averaging) -> Result<Self> {
        if let Averaging::Ema { decay } = averaging {
            Averaging::ema(decay)?;
        }
        Ok(AveragedModel {
            params: model.iter().map(|p| Param::new(p.value())).collect(),
            averaging,
            n_averaged: 0,
        })
    }

    /// Folds the model's current values into the average: a copy on the
    /// first call, then SWA or EMA. Checked first: on error nothing changes.
    pub fn update_parameters(&mut self, model: &[Param]) -> Result<()> {
        self.check_model("update_parameters", model)?;
        let (averaging, n) = (self.averaging, self.n_averaged);
        let update = |avg: &Param, current: &Tensor| {
            avg.with_value_mut(|data| match (data, current.data()) {
                (TensorDataMut::F32(a), TensorData::F32(c)) if n == 0 => a.copy_from_slice(c),
                (TensorDataMut::F64(a), TensorData::F64(c)) if n == 0 => a.copy_from_slice(c),
                (TensorDataMut::F32(a), TensorData::F32(c)) => average(a, c, averaging, n),
                (TensorDataMut::F64(a), TensorData::F64(c)) => average(a, c, averaging, n),
                // Shapes and dtypes were checked above.
                _ => {}
            })
        };
        for (avg, current) in self.params.iter().zip(model) {
            if avg.same_as(current) {
                // Averaged with itself (torch allows it): read a copy, as
                // holding the value to read it and to write it would deadlock.
                update(avg, &current.value());
            } else {
                current.with_value(|current| update(avg, current));
            }
        }
        self.n_averaged += 1;
        Ok(())
    }

    /// Errors unless `model` has the averaged parameters' shapes and dtypes.
    fn check_model(&self, what: &str, model: &[Param]) -> Result<()> {
        check_like(what, &layouts(&self.params), &layouts(model))
    }

    /// The averaged parameters (torch's `swa_model.parameters()`).
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Updates taken (torch's `n_averaged`).
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// How this model averages.
    pub fn averaging(&self) -> Averaging {
        self.averaging
    }

    /// Writes the averages into `model`'s parameters (what a training run
    /// does at its end). Checked first: on error nothing changes.
    pub fn copy_to(&self, model: &[Param]) -> Result<()> {
        self.check_model("copy_to", model)?;
        for (p, avg) in model.iter().zip(&self.params) {
            p.set_value(avg.value())?;
        }
        Ok(())
    }

    /// The state to checkpoint.
    pub fn state_dict(&self) -> AveragedState {
        AveragedState {
            n_averaged: self.n_averaged,
            params: self.params.iter().map(Param::value).collect(),
        }
    }

    /// Restores a checkpoint; shapes and dtypes must match. On error nothing changes.
    pub fn load_state_dict(&mut self, state: &AveragedState) -> Result<()> {
        let saved: Vec<Layout> = state
            .params
            .iter()
            .map(|t| (t.shape().to_vec(), t.dtype()))
            .collect();
        check_like(
            "AveragedModel state_dict.params",
            &layouts(&self.params),
            &saved,
        )?;
        for (p, value) in self.params.iter().zip(&state.params) {
            p.set_value(value.clone())?;
        }
        self.n_averaged = state.n_averaged;
        Ok(())
    }
}

/// `SWALR`'s arguments (torch's names and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SWALRConfig {
    /// The learning rate to anneal to, for all groups or each.
    pub swa_lr: PerGroup,
    /// Epochs of annealing (default 10; 0 jumps at once).
    #[serde(default = "SWALRConfig::default_anneal_epochs")]
    pub anneal_epochs: i64,
    /// "cos" (default) or "linear".
    #[serde(default = "SWALRConfig::default_anneal")]
    pub anneal_strategy: String,
    /// −1 for a new schedule, else the epoch to resume after.
    #[serde(default = "SWALRConfig::new_schedule")]
    pub last_epoch: i64,
}

impl SWALRConfig {
    /// torch's defaults around `swa_lr`.
    pub fn new(swa_lr: impl Into<PerGroup>) -> Self {
        SWALRConfig {
            swa_lr: swa_lr.into(),
            anneal_epochs: 10,
            anneal_strategy: "cos".into(),
            last_epoch: -1,
        }
    }
    fn default_anneal_epochs() -> i64 {
        10
    }
    fn default_anneal() -> String {
        "cos".into()
    }
    fn new_schedule() -> i64 {
        -1
    }
}

/// Anneals each group's `lr` to its `swa_lr` (torch's `SWALR`): at step
/// `s` with `t = clamp(s/anneal_epochs, 0, 1)` and `α = (1 − cos(π·t))/2`
/// (or `t`), `lr = α·swa_lr + (1 − α)·lr₀`, where `lr₀` is recovered from
/// the group's current `lr` (so it chains like torch's).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SWALR {
    anneal_epochs: i64,
    #[serde(rename = "_anneal_strategy")]
    anneal_strategy: String,
    #[serde(flatten)]
    progress: Progress,
}

impl SWALR {
    /// Writes each group's `swa_lr`, then takes the first step.
    pub fn new(opt: &mut dyn Optimizer, config: SWALRConfig) -> Result<Self> {
        crate::lr_scheduler::all_or_nothing(opt, |opt| Self::build(opt, config))
    }

    fn build(opt: &mut dyn Optimizer, config: SWALRConfig) -> Result<Self> {
        let swa_lrs = config
            .swa_lr
            .expand("SWALR", "swa_lr", opt.num_param_groups())?;
        for (g, &swa_lr) in swa_lrs.iter().enumerate() {
            set_extra(opt, g, "swa_lr", swa_lr)?;
        }
        if !["cos", "linear"].contains(&config.anneal_strategy.as_str()) {
            let reason = format!(
                "anneal_strategy must be one of 'cos' or 'linear', instead got {}",
                config.anneal_strategy
            );
            return Err(crate::lr_scheduler::scheduler_error("SWALR", reason));
        }
        if config.anneal_epochs < 0 {
            let reason = format!(
                "anneal_epochs must be equal or greater than 0, got {}",
                config.anneal_epochs
            );
            return Err(crate::lr_scheduler::scheduler_error("SWALR", reason));
        }
        let rule = SWALR {
            anneal_epochs: config.anneal_epochs,
            anneal_strategy: config.anneal_strategy,
            progress: Progress::default(),
        };
        start(rule, opt, config.last_epoch)
    }

    fn anneal(&self, t: f64) -> f64 {
        if self.anneal_strategy == "cos" {
            (1.0 - (std::f64::consts::PI * t).cos()) / 2.0
        } else {
            t
        }
    }
}

impl Rule for SWALR {
    const NAME: &'static str = "SWALR";
    crate::lr_scheduler::impl_progress!();
    fn get_lr(&mut self, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let mut step = i64::try_from(self.progress.step_count).unwrap_or(i64::MAX) - 1;
        if self.anneal_epochs == 0 {
            step = step.max(1);
        }
        let epochs = self.anneal_epochs.max(1) as f64;
        let prev_alpha = self.anneal(((step as f64 - 1.0) / epochs).clamp(0.0, 1.0));
        let alpha = self.anneal((step as f64 / epochs).clamp(0.0, 1.0));
        (0..opt.num_param_groups())
            .map(|g| {
                let lr = crate::lr_scheduler::group_value(Self::NAME, opt, g, "lr")?;
                let swa_lr = crate::lr_scheduler::group_value(Self::NAME, opt, g, "swa_lr")?;
                let prev_lr = if prev_alpha == 1.0 {
                    swa_lr
                } else {
                    (lr - prev_alpha * swa_lr) / (1.0 - prev_alpha)
                };
                Ok(swa_lr * alpha + prev_lr * (1.0 - alpha))
            })
            .collect()
    }
}
