//! RAdam: Adam with a rectified adaptive learning rate (Liu et al., 2020; `torch.optim.RAdam`).
//!
//! With `ρ_∞ = 2/(1 − β₂) − 1` and `ρ_t = ρ_∞ − 2t·β₂ᵗ/(1 − β₂ᵗ)`:
//!
//! ```text
//! θ ← θ·(1 − lr·λ)                  if decoupled_weight_decay
//! g ← ±g + λ·θ                      otherwise
//! m ← lerp(m, g, 1 − β₁),  v ← β₂·v + (1 − β₂)·g²,  m̂ = m/(1 − β₁ᵗ)
//! θ ← θ − lr·m̂·r_t·√(1 − β₂ᵗ)/(√v + ε)    if ρ_t > 5, with r_t = √((ρ_t−4)(ρ_t−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρ_t))
//! θ ← θ − lr·m̂                            otherwise (the variance is not yet tractable)
//! ```
//!
//! State: `step`, `exp_avg`, `exp_avg_sq`.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, MomentSlices, Moments, RadamScalars};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_adam_like;

/// RAdam over param groups.
pub type RAdam = Optim<RAdamConfig>;

/// RAdam's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{RAdam, RAdamConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = RAdam::new([p.clone()], RAdamConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![3.0f64], &[1])?)?;
/// opt.step()?;
/// // Not yet rectified on the first step: θ ← θ − lr·m̂ = 1 − 0.1·3.
/// assert!((p.to_vec::<f64>()?[0] - 0.7).abs() < 1e-12);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RAdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0): an L2 penalty, or decoupled as in AdamW.
    pub weight_decay: f64,
    /// Apply weight decay to the parameter directly (default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        RAdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// RAdam's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct RAdamState {
    /// Steps taken.
    pub step: f64,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Second moment average.
    pub exp_avg_sq: Tensor,
}

crate::param_state!(RAdamState {
    step: step,
    exp_avg: tensor,
    exp_avg_sq: tensor,
});

crate::hyperparameters!(RAdamConfig {
    name: "RAdam",
    torch_flags: &["foreach", "capturable", "differentiable"],
    optional_keys: &["maximize", "decoupled_weight_decay"],

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }
});

impl Algorithm for RAdamConfig {
    type State = RAdamState;
    crate::dense_in_every_dtype!(RAdamState);

    fn init_state(&self, param: &ParamMeta<'_>) -> RAdamState {
        RAdamState {
            step: 0.0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }
}

impl RAdamConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut RAdamState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let step = state.step + 1.0;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;
        let rectification = (rho_t > 5.0).then(|| {
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt();
            (
                S::Math::from_f64(bias_correction2.sqrt()),
                S::Math::from_f64(rect),
            )
        });
        let h = RadamScalars {
            moments: Moments::new(
                self.lr,
                self.betas,
                self.eps,
                self.weight_decay,
                self.decoupled_weight_decay,
                self.maximize,
            ),
            bias_correction1: S::Math::from_f64(bias_correction1),
            lr: S::Math::from_f64(self.lr),
            rectification,
        };
        let slices = MomentSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<S>()?,
            second: state.exp_avg_sq.as_slice_mut::<S>()?,
        };
        kernels::radam(slices, &h)?;
        state.step = step;
        Ok(())
    }
}
