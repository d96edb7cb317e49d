//! Adamax: Adam with the infinity norm (Kingma & Ba, 2015, §7.1; `torch.optim.Adamax`).
//!
//! ```text
//! g ← ±g + λ·θ
//! m ← lerp(m, g, 1 − β₁)
//! u ← max(β₂·u, |g| + ε)
//! θ ← θ − lr/(1 − β₁ᵗ) · m / u
//! ```
//!
//! State: `step`, `exp_avg`, `exp_inf`. No square root, so it matches torch to the bit.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, AdamaxScalars, MomentSlices, Moments};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_adam_like;

/// Adamax over param groups.
pub type Adamax = Optim<AdamaxConfig>;

/// Adamax's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adamax, AdamaxConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Adamax::new([p.clone()], AdamaxConfig::default())?;
/// p.set_grad(Tensor::from_vec(vec![0.5f64], &[1])?)?;
/// opt.step()?;
/// assert!((p.to_vec::<f64>()?[0] - (1.0 - 2e-3)).abs() < 1e-9); // first step ≈ lr
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamaxConfig {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Decay rates of the first moment and the infinity norm (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to `|g|` for stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        AdamaxConfig {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Adamax's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamaxState {
    /// Steps taken.
    pub step: f64,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Exponentially weighted infinity norm.
    pub exp_inf: Tensor,
}

crate::param_state!(AdamaxState {
    step: step,
    exp_avg: tensor,
    exp_inf: tensor,
});

crate::hyperparameters!(AdamaxConfig {
    name: "Adamax",
    torch_flags: &["foreach", "differentiable", "capturable"],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }
});

impl Algorithm for AdamaxConfig {
    type State = AdamaxState;
    crate::dense_in_every_dtype!(AdamaxState);

    fn init_state(&self, param: &ParamMeta<'_>) -> AdamaxState {
        AdamaxState {
            step: 0.0,
            exp_avg: param.zeros_like(),
            exp_inf: param.zeros_like(),
        }
    }
}

impl AdamaxConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut AdamaxState,
    ) -> Result<()> {
        let beta1 = self.betas.0;
        let step = state.step + 1.0;
        let clr = self.lr / (1.0 - beta1.powf(step));
        let h = AdamaxScalars {
            moments: Moments::new(
                self.lr,
                self.betas,
                self.eps,
                self.weight_decay,
                false,
                self.maximize,
            ),
            neg_lr: S::Math::from_f64(-clr),
        };
        let slices = MomentSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<S>()?,
            second: state.exp_inf.as_slice_mut::<S>()?,
        };
        kernels::adamax(slices, &h)?;
        state.step = step;
        Ok(())
    }
}
