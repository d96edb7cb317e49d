//! AdEMAMix (Pagliardini et al., 2024, "The AdEMAMix Optimizer: Better,
//! Faster, Older"), as pytorch-optimizer 4.1.0 implements it.
//!
//! Adam with a second, slow momentum added to the fast one. With group step
//! `t`, gradient `g` (negated if maximizing, plus `λ·θ` with coupled decay):
//!
//! ```text
//! θ ← θ·(1 − λ·lr)                    (decoupled decay; 1 − λ if fixed_decay)
//! m ← m + (1 − β₁)·(g − m)
//! v ← β₂·v + (1 − β₂)·g²
//! s ← s + (1 − β₃(t))·(g − s)
//! θ ← θ − lr·(m/(1 − β₁ᵗ) + α(t)·s) / (√v/√(1 − β₂ᵗ) + ε)
//! ```
//!
//! Without `t_alpha_beta3` (`T`), `α(t) = α` and `β₃(t) = β₃`; with it, both
//! warm up over `T` steps: `α(t) = min(t·α/T, α)` and
//! `β₃(t) = min(exp(ln β₁·ln β₃ / ((1 − t/T)·ln β₃ + (t/T)·ln β₁)), β₃)`.
//! `cautious` masks `m` where `m·g ≤ 0` (scaled by `numel/(kept + 1)`);
//! `stable_adamw` divides the update by `max(1, √mean(g²/max(v, 10⁻¹⁶)))`.
//!
//! As in the reference, the step is counted per group (`param_groups[i]
//! ["step"]`), the state is `exp_avg`, `exp_avg_sq` and `exp_avg_slow`,
//! and `maximize` belongs to the optimizer (not in the state_dict).
//! `t_alpha_beta3 = 0` is refused here, where the reference accepts it and
//! then divides by zero in its first step.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::json::{is_false, is_zero};
use crate::kernels::{self, py_min, AdemamixScalars, AdemamixSlices, GradInputs};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{pto_betas, pto_learning_rate, pto_non_negative};

/// AdEMAMix over param groups.
pub type AdEMAMix = Optim<AdEMAMixConfig>;

/// AdEMAMix's hyperparameters: pytorch-optimizer's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{AdEMAMix, AdEMAMixConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let config = AdEMAMixConfig { lr: 0.1, t_alpha_beta3: Some(100.0), ..Default::default() };
/// let mut opt = AdEMAMix::new([p.clone()], config)?;
/// p.set_grad(Tensor::from_vec(vec![1.0], &[1])?)?;
/// opt.step()?;
/// assert!(p.to_vec::<f64>()?[0] < 1.0);
/// assert_eq!(opt.hyperparameter(0, "step"), Some(1.into()));
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdEMAMixConfig {
    /// Learning rate (default 1e-3; 0 is allowed, as in the reference).
    pub lr: f64,
    /// The decays of the fast momentum (β₁, in [0, 1)), the second moment
    /// (β₂, in [0, 1)) and the slow momentum (β₃, in [0, 1]) (default (0.9, 0.999, 0.9999)).
    pub betas: (f64, f64, f64),
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decay θ directly instead of adding `λ·θ` to the gradient (default false).
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `λ` per step, not `λ·lr` (default false).
    pub fixed_decay: bool,
    /// The slow momentum's weight in the update (default 5).
    pub alpha: f64,
    /// The warm-up of `α` and `β₃`, in steps (default `None`: none).
    pub t_alpha_beta3: Option<f64>,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Cautious masking of the fast momentum (default false; in a group only when set).
    #[serde(skip_serializing_if = "is_false")]
    pub cautious: bool,
    /// StableAdamW's update scale (default false; in a group only when set).
    #[serde(skip_serializing_if = "is_false")]
    pub stable_adamw: bool,
    /// The group's step count (in a group from its first step on).
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u64,
    /// Ascend instead of descend (default false). An argument of the
    /// optimizer: every group has the defaults', and a load keeps it.
    #[serde(skip_serializing)]
    pub maximize: bool,
}

impl Default for AdEMAMixConfig {
    fn default() -> Self {
        AdEMAMixConfig {
            lr: 1e-3,
            betas: (0.9, 0.999, 0.9999),
            weight_decay: 0.0,
            weight_decouple: false,
            fixed_decay: false,
            alpha: 5.0,
            t_alpha_beta3: None,
            eps: 1e-8,
            cautious: false,
            stable_adamw: false,
            step: 0,
            maximize: false,
        }
    }
}

/// AdEMAMix's per-parameter state, under pytorch-optimizer's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdEMAMixState {
    /// The fast momentum.
    pub exp_avg: Tensor,
    /// The second moment.
    pub exp_avg_sq: Tensor,
    /// The slow momentum.
    pub exp_avg_slow: Tensor,
}

crate::param_state!(AdEMAMixState {
    exp_avg: tensor,
    exp_avg_sq: tensor,
    exp_avg_slow: tensor
});

crate::hyperparameters!(AdEMAMixConfig {
    name: "AdEMAMix",
    reference: "pytorch-optimizer 4.1.0",
    keys_when_set: &["cautious", "stable_adamw", "step"],
    torch_flags: &["foreach"],
    optional_keys: &[],

    /// pytorch-optimizer's checks, in its order and with its messages.
    fn validate(&self) -> Result<()> {
        pto_learning_rate(self.lr)?;
        pto_betas(&[self.betas.0, self.betas.1, self.betas.2])?;
        pto_non_negative("alpha", self.alpha)?;
        if let Some(t) = self.t_alpha_beta3 {
            pto_non_negative("t_alpha_beta3", t)?;
            if t == 0.0 {
                return Err(Error::hyper(
                    "t_alpha_beta3",
                    "t_alpha_beta3 must be positive or None (the warm-up divides by it)".into(),
                ));
            }
        }
        pto_non_negative("weight_decay", self.weight_decay)?;
        pto_non_negative("eps", self.eps)
    }

    fn inherit(&mut self, defaults: &Self) {
        self.keep_unsaved(defaults);
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.maximize = live.maximize;
    }
});

impl AdEMAMixConfig {
    /// `α(t)`: the reference's `schedule_alpha`.
    fn alpha_at(&self, step: f64) -> f64 {
        match self.t_alpha_beta3 {
            None => self.alpha,
            Some(t) => py_min(step * self.alpha / t, self.alpha),
        }
    }

    /// `β₃(t)`: the reference's `schedule_beta3`.
    fn beta3_at(&self, step: f64) -> f64 {
        let (beta1, _, beta3) = self.betas;
        match self.t_alpha_beta3 {
            None => beta3,
            Some(t) => {
                let (log_beta1, log_beta3) = (beta1.ln(), beta3.ln());
                let mix = (1.0 - step / t) * log_beta3 + (step / t) * log_beta1;
                py_min((log_beta1 * log_beta3 / mix).exp(), beta3)
            }
        }
    }
}

impl Algorithm for AdEMAMixConfig {
    type State = AdEMAMixState;

    fn begin_step(&mut self) {
        // Saturating: a step count read from a checkpoint may be anything.
        self.step = self.step.saturating_add(1);
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> AdEMAMixState {
        AdEMAMixState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            exp_avg_slow: param.zeros_like(),
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut AdEMAMixState,
    ) -> Result<()> {
        let (beta1, beta2, _) = self.betas;
        let step = self.step.max(1);
        let t = step as f64;
        let h = AdemamixScalars {
            inputs: GradInputs::new(
                self.lr,
                self.weight_decay,
                self.weight_decouple,
                self.fixed_decay,
                self.maximize,
            ),
            one_minus_beta1: T::from_f64(1.0 - beta1),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            one_minus_beta3: T::from_f64(1.0 - self.beta3_at(t)),
            bias_correction1: T::from_f64(1.0 - beta1.powf(t)),
            bias_correction2_sqrt: T::from_f64((1.0 - beta2.powf(t)).sqrt()),
            eps: T::from_f64(self.eps),
            alpha: T::from_f64(self.alpha_at(t)),
            neg_lr: T::from_f64(-self.lr),
            cautious: self.cautious,
            stable_adamw: self.stable_adamw,
        };
        let slices = AdemamixSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<T>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
            exp_avg_slow: state.exp_avg_slow.as_slice_mut::<T>()?,
        };
        kernels::ademamix(slices, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim;

    #[test]
    fn a_warm_up_of_zero_steps_is_refused() {
        let p = crate::Param::zeros::<f32>(&[1]);
        let Err(err) = optim::build("ademamix", r#"{"t_alpha_beta3": 0.0}"#, [p]) else {
            panic!("a warm-up of 0 steps was accepted");
        };
        assert!(
            matches!(
                err,
                Error::InvalidHyperparameter {
                    name: "t_alpha_beta3",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn the_warm_up_reaches_alpha_and_beta3_at_its_end() {
        let c = AdEMAMixConfig {
            t_alpha_beta3: Some(10.0),
            ..Default::default()
        };
        // α(t) rises linearly; β₃(t) starts at β₁ and rises to β₃.
        assert_eq!(c.alpha_at(5.0), 2.5);
        assert_eq!(c.alpha_at(20.0), 5.0);
        let near_start = c.beta3_at(1e-9);
        assert!((near_start - 0.9).abs() < 1e-7, "{near_start}");
        assert!(c.beta3_at(5.0) > 0.9 && c.beta3_at(5.0) < 0.9999);
        assert_eq!(c.beta3_at(10.0), 0.9999);
        let fixed = AdEMAMixConfig::default();
        assert_eq!((fixed.alpha_at(3.0), fixed.beta3_at(3.0)), (5.0, 0.9999));
    }
}
