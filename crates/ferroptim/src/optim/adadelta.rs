//! Adadelta (Zeiler, 2012; `torch.optim.Adadelta`).
//!
//! ```text
//! g ← ±g + λ·θ
//! v ← ρ·v + (1 − ρ)·g²
//! Δ ← √(a + ε) / √(v + ε) · g
//! a ← ρ·a + (1 − ρ)·Δ²
//! θ ← θ − lr·Δ
//! ```
//!
//! State: `step`, `square_avg` (v), `acc_delta` (a).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{self, AdadeltaScalars, AdadeltaSlices, AdaptiveScalars};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::{check_non_negative, py_float};

/// Adadelta over param groups.
pub type Adadelta = Optim<AdadeltaConfig>;

/// Adadelta's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adadelta, AdadeltaConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Adadelta::new([p.clone()], AdadeltaConfig::default())?;
/// p.set_grad(Tensor::from_vec(vec![1.0f64], &[1])?)?;
/// opt.step()?;
/// assert!(p.to_vec::<f64>()?[0] < 1.0);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdadeltaConfig {
    /// Scale of the update (default 1.0).
    pub lr: f64,
    /// Decay rate of the running averages (default 0.9).
    pub rho: f64,
    /// Added inside the square roots (default 1e-6).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        AdadeltaConfig {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Adadelta's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdadeltaState {
    /// Steps taken.
    pub step: f64,
    /// Running average of squared gradients.
    pub square_avg: Tensor,
    /// Running average of squared updates.
    pub acc_delta: Tensor,
}

crate::param_state!(AdadeltaState {
    step: step,
    square_avg: tensor,
    acc_delta: tensor,
});

crate::hyperparameters!(AdadeltaConfig {
    name: "Adadelta",
    torch_flags: &["foreach", "capturable", "differentiable"],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        if !(0.0..=1.0).contains(&self.rho) {
            return Err(Error::hyper(
                "rho",
                format!("Invalid rho value: {}", py_float(self.rho)),
            ));
        }
        check_non_negative("eps", "Invalid epsilon value", self.eps)?;
        check_non_negative(
            "weight_decay",
            "Invalid weight_decay value",
            self.weight_decay,
        )
    }
});

impl Algorithm for AdadeltaConfig {
    crate::dense_in_every_dtype!(AdadeltaState);
    type State = AdadeltaState;

    fn init_state(&self, param: &ParamMeta<'_>) -> AdadeltaState {
        AdadeltaState {
            step: 0.0,
            square_avg: param.zeros_like(),
            acc_delta: param.zeros_like(),
        }
    }
}

impl AdadeltaConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut AdadeltaState,
    ) -> Result<()> {
        let h = AdadeltaScalars {
            adaptive: AdaptiveScalars::new(-self.lr, self.weight_decay, self.eps, self.maximize),
            rho: S::Math::from_f64(self.rho),
            one_minus_rho: S::Math::from_f64(1.0 - self.rho),
        };
        let slices = AdadeltaSlices {
            param,
            grad,
            square_avg: state.square_avg.as_slice_mut::<S>()?,
            acc_delta: state.acc_delta.as_slice_mut::<S>()?,
        };
        kernels::adadelta(slices, &h)?;
        state.step += 1.0;
        Ok(())
    }
}
