//! NAdam: Adam with Nesterov momentum (Dozat, 2016; `torch.optim.NAdam`).
//!
//! With `μ_t = β₁·(1 − ½·0.96^(t·ψ))` (ψ = `momentum_decay`) and
//! `Π_t = μ_1⋯μ_t`:
//!
//! ```text
//! θ ← θ·(1 − lr·λ)                  if decoupled_weight_decay
//! g ← ±g + λ·θ                      otherwise
//! m ← lerp(m, g, 1 − β₁)
//! v ← β₂·v + (1 − β₂)·g²
//! d ← √(v / (1 − β₂ᵗ)) + ε
//! θ ← θ − lr·(1 − μ_t)/(1 − Π_t) · g/d − lr·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/d
//! ```
//!
//! State: `step`, `mu_product` (Π_t, a float32 scalar as in torch, so it is
//! rounded to float32 at every step exactly as there), `exp_avg`, `exp_avg_sq`.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, MomentSlices, Moments, NadamScalars};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::{check_adam_like, check_non_negative};

/// NAdam over param groups.
pub type NAdam = Optim<NAdamConfig>;

/// NAdam's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{NAdam, NAdamConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = NAdam::new([p.clone()], NAdamConfig::default())?;
/// p.set_grad(Tensor::from_vec(vec![0.5f64], &[1])?)?;
/// opt.step()?;
/// assert!(p.to_vec::<f64>()?[0] < 1.0);
/// assert!(opt.state(&p).unwrap().mu_product < 1.0);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NAdamConfig {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Decay rates of the moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0): an L2 penalty, or decoupled as in AdamW.
    pub weight_decay: f64,
    /// ψ, the decay of the momentum schedule (default 4e-3).
    pub momentum_decay: f64,
    /// Apply weight decay to the parameter directly (default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        NAdamConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// NAdam's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct NAdamState {
    /// Steps taken.
    pub step: f64,
    /// Π_t, the product of the momentum schedule (float32, as in torch).
    pub mu_product: f32,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Second moment average.
    pub exp_avg_sq: Tensor,
}

crate::param_state!(NAdamState {
    step: step,
    mu_product: scalar_f32,
    exp_avg: tensor,
    exp_avg_sq: tensor,
});

crate::hyperparameters!(NAdamConfig {
    name: "NAdam",
    torch_flags: &["foreach", "capturable", "differentiable"],
    optional_keys: &["maximize", "decoupled_weight_decay"],

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)?;
        check_non_negative(
            "momentum_decay",
            "Invalid momentum_decay value",
            self.momentum_decay,
        )
    }
});

impl Algorithm for NAdamConfig {
    type State = NAdamState;
    crate::dense_in_every_dtype!(NAdamState);

    fn init_state(&self, param: &ParamMeta<'_>) -> NAdamState {
        NAdamState {
            step: 0.0,
            mu_product: 1.0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }
}

impl NAdamConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut NAdamState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let step = state.step + 1.0;
        let bias_correction2 = 1.0 - beta2.powf(step);
        let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(step * self.momentum_decay));
        let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((step + 1.0) * self.momentum_decay));
        // torch: `mu_product *= mu` on a float32 scalar tensor.
        let mu_product = state.mu_product * mu as f32;
        let mu_product_next = f64::from(mu_product) * mu_next;
        let h = NadamScalars {
            moments: Moments::new(
                self.lr,
                self.betas,
                self.eps,
                self.weight_decay,
                self.decoupled_weight_decay,
                self.maximize,
            ),
            bias_correction2: S::Math::from_f64(bias_correction2),
            grad_coef: S::Math::from_f64(-self.lr * (1.0 - mu) / (1.0 - f64::from(mu_product))),
            exp_avg_coef: S::Math::from_f64((-self.lr * mu_next) / (1.0 - mu_product_next)),
        };
        let slices = MomentSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<S>()?,
            second: state.exp_avg_sq.as_slice_mut::<S>()?,
        };
        kernels::nadam(slices, &h)?;
        state.step = step;
        state.mu_product = mu_product;
        Ok(())
    }
}
