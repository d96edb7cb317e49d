//! Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled"),
//! as schedulefree 1.4.1's `AdamWScheduleFree` implements it: Adam's
//! normalized gradient (no first moment: the averaging plays its part)
//! through Schedule-Free's averaging (see [`schedule_free`](super::schedule_free)):
//!
//! ```text
//! v ← β₂·v + (1 − β₂)·g²
//! g ← g / (√(v/(1 − β₂ᵏ⁺¹)) + ε) + λ·y
//! y ← lerp(y, z, c_{k+1}) + lr_k·(β₁·(1 − c_{k+1}) − 1)·g
//! z ← z − lr_k·g
//! ```
//!
//! As for Schedule-Free SGD: the parameters are `y` in train mode and `x`
//! in eval mode ([`Optimizer::train`](crate::Optimizer::train) /
//! [`Optimizer::eval`](crate::Optimizer::eval); a step in eval mode is an
//! error), the averaging weights are group keys, and the state is `z` and
//! `exp_avg_sq`, the reference's keys. The reference normalizes (and
//! decays) `p.grad` in place; ferroptim leaves the gradient alone.

use serde::{Deserialize, Serialize};

use super::schedule_free::{mode_weight, Averaging};
use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{
    self, AdamWScheduleFreeScalars, AdamWScheduleFreeSlices, ScheduleFreeScalars,
};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{check_non_negative, check_unit_interval, py_float};

/// Schedule-Free AdamW over param groups.
pub type AdamWScheduleFree = Optim<AdamWScheduleFreeConfig>;

/// Schedule-Free AdamW's hyperparameters and averaging state: schedulefree's
/// group keys and defaults.
///
/// ```
/// use ferroptim::{optim::{AdamWScheduleFree, AdamWScheduleFreeConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = AdamWScheduleFree::new([p.clone()], AdamWScheduleFreeConfig::default())?;
/// opt.train()?;
/// for g in [1.0, -0.5] {
///     p.set_grad(Tensor::from_vec(vec![g], &[1])?)?;
///     opt.step()?;
/// }
/// let y = p.to_vec::<f64>()?[0];
/// opt.eval()?;
/// let x = p.to_vec::<f64>()?[0];
/// opt.train()?; // and back to y
/// assert!((p.to_vec::<f64>()?[0] - y).abs() < 1e-15 && x != y);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWScheduleFreeConfig {
    /// Learning rate (default 0.0025).
    pub lr: f64,
    /// β₁, the interpolation between z and x, in (0, 1), and β₂, the second
    /// moment's decay, in [0, 1) (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// The power of the step in the averaging weights (default 0).
    pub r: f64,
    /// Steps taken (`k`).
    pub k: u64,
    /// Steps of linear lr warm-up (default 0).
    pub warmup_steps: u64,
    /// Whether the parameters are at y (train) or x (eval); false until `train()`.
    pub train_mode: bool,
    /// The sum of the averaging weights so far.
    pub weight_sum: f64,
    /// The largest scheduled lr so far (−1 before the first step).
    pub lr_max: f64,
    /// The last step's lr after warm-up.
    pub scheduled_lr: f64,
    /// The power of the lr in the averaging weights (default 2).
    pub weight_lr_power: f64,
    /// L2 penalty, taken at y after the normalization (default 0).
    pub weight_decay: f64,
    /// The reference's choice of implementation (default true). Its two
    /// give the same numbers; ferroptim has one. Kept for the state_dict.
    pub foreach: bool,
}

impl Default for AdamWScheduleFreeConfig {
    fn default() -> Self {
        AdamWScheduleFreeConfig {
            lr: 0.0025,
            betas: (0.9, 0.999),
            eps: 1e-8,
            r: 0.0,
            k: 0,
            warmup_steps: 0,
            train_mode: false,
            weight_sum: 0.0,
            lr_max: -1.0,
            scheduled_lr: 0.0,
            weight_lr_power: 2.0,
            weight_decay: 0.0,
            foreach: true,
        }
    }
}

/// Schedule-Free AdamW's per-parameter state, under the reference's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWScheduleFreeState {
    /// The base iterate.
    pub z: Tensor,
    /// The second moment.
    pub exp_avg_sq: Tensor,
}

crate::param_state!(AdamWScheduleFreeState {
    z: tensor,
    exp_avg_sq: tensor
});

crate::hyperparameters!(AdamWScheduleFreeConfig {
    name: "AdamWScheduleFree",
    reference: "schedulefree 1.4.1",
    torch_flags: &[],
    optional_keys: &[],

    /// The reference checks nothing; these are torch's AdamW checks and
    /// messages, and β₁ must be positive (`eval()` divides by it).
    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("eps", "Invalid epsilon value", self.eps)?;
        if !(self.betas.0 > 0.0 && self.betas.0 < 1.0) {
            return Err(Error::hyper(
                "betas",
                format!(
                    "Invalid beta parameter at index 0: {} (expected 0 < beta1 < 1: eval() divides by it)",
                    py_float(self.betas.0)
                ),
            ));
        }
        check_unit_interval("betas", "Invalid beta parameter at index 1", self.betas.1)?;
        check_non_negative("weight_decay", "Invalid weight_decay value", self.weight_decay)
    }
});

impl AdamWScheduleFreeConfig {
    fn averaging(&self) -> Averaging {
        Averaging {
            k: self.k,
            scheduled_lr: self.scheduled_lr,
            lr_max: self.lr_max,
            weight_sum: self.weight_sum,
        }
    }
}

impl Algorithm for AdamWScheduleFreeConfig {
    type State = AdamWScheduleFreeState;

    fn begin_step(&mut self) {
        let next =
            self.averaging()
                .advance(self.lr, self.warmup_steps, self.r, self.weight_lr_power);
        (self.k, self.scheduled_lr, self.lr_max, self.weight_sum) =
            (next.k, next.scheduled_lr, next.lr_max, next.weight_sum);
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> AdamWScheduleFreeState {
        AdamWScheduleFreeState {
            z: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }

    fn init_state_from<T: Element>(
        &self,
        values: &[T],
        param: &ParamMeta<'_>,
    ) -> AdamWScheduleFreeState {
        AdamWScheduleFreeState {
            z: Tensor::from_vec(values.to_vec(), param.shape())
                .unwrap_or_else(|_| param.zeros_like()),
            exp_avg_sq: param.zeros_like(),
        }
    }

    fn train_mode(&self) -> Option<bool> {
        Some(self.train_mode)
    }

    fn set_train_mode(&mut self, train: bool) {
        self.train_mode = train;
    }

    fn switch_mode<T: Element>(
        &self,
        train: bool,
        param: &mut [T],
        state: &AdamWScheduleFreeState,
    ) -> Result<()> {
        let z = state.z.as_slice::<T>()?;
        kernels::switch_mode(param, z, mode_weight(train, self.betas.0));
        Ok(())
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut AdamWScheduleFreeState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let lr = self.scheduled_lr;
        let ckp1 = self.averaging().ckp1(self.r, self.weight_lr_power);
        let h = AdamWScheduleFreeScalars {
            schedule: ScheduleFreeScalars {
                weight_decay: (self.weight_decay != 0.0).then(|| T::from_f64(self.weight_decay)),
                ckp1: T::from_f64(ckp1),
                y_coef: T::from_f64(lr * (beta1 * (1.0 - ckp1) - 1.0)),
                neg_lr: T::from_f64(-lr),
            },
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            bias_correction2: T::from_f64(1.0 - beta2.powf(self.k as f64)),
            eps: T::from_f64(self.eps),
        };
        let slices = AdamWScheduleFreeSlices {
            param,
            grad,
            z: state.z.as_slice_mut::<T>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
        };
        kernels::adamw_schedule_free(slices, &h)
    }
}
