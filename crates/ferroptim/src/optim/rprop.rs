//! Rprop: resilient backpropagation (Riedmiller & Braun, 1993; `torch.optim.Rprop`).
//!
//! Per element, with `s = sign(g·g_prev)`:
//!
//! ```text
//! Δ ← clamp(Δ·η⁺, Δ_min, Δ_max)    if s > 0
//! Δ ← clamp(Δ·η⁻, Δ_min, Δ_max)    if s < 0, and g ← 0 (no move now, no flip next step)
//! θ ← θ − sign(g)·Δ
//! g_prev ← g
//! ```
//!
//! State: `step`, `prev` (the last gradient used) and `step_size` (Δ, which
//! starts at `lr`: as in torch, `lr` is read only when a parameter's state is
//! created). Only signs, products and clamps: it matches torch to the bit.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{self, RpropScalars, RpropSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::{check_non_negative, py_float};

/// Rprop over param groups.
pub type Rprop = Optim<RpropConfig>;

/// Rprop's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Rprop, RpropConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![0.0f64], &[1])?;
/// let mut opt = Rprop::new([p.clone()], RpropConfig { lr: 0.1, ..Default::default() })?;
/// for _ in 0..2 {
///     p.set_grad(Tensor::from_vec(vec![5.0f64], &[1])?)?;
///     opt.step()?;
/// }
/// // Steps of 0.1, then 0.1·1.2: only the gradient's sign matters.
/// assert!((p.to_vec::<f64>()?[0] + 0.22).abs() < 1e-12);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpropConfig {
    /// The initial step size (default 1e-2).
    pub lr: f64,
    /// (η⁻, η⁺): the step-size factors after a sign change and while the sign holds (default (0.5, 1.2)).
    pub etas: (f64, f64),
    /// (Δ_min, Δ_max): the bounds of the step size (default (1e-6, 50)).
    pub step_sizes: (f64, f64),
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for RpropConfig {
    fn default() -> Self {
        RpropConfig {
            lr: 1e-2,
            etas: (0.5, 1.2),
            step_sizes: (1e-6, 50.0),
            maximize: false,
        }
    }
}

/// Rprop's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct RpropState {
    /// Steps taken.
    pub step: f64,
    /// The gradient of the last step (zero where its sign flipped).
    pub prev: Tensor,
    /// The per-element step sizes Δ.
    pub step_size: Tensor,
}

crate::param_state!(RpropState {
    step: step,
    prev: tensor,
    step_size: tensor,
});

crate::hyperparameters!(RpropConfig {
    name: "Rprop",
    torch_flags: &["foreach", "differentiable", "capturable"],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        let (minus, plus) = self.etas;
        if !(0.0 < minus && minus < 1.0 && 1.0 < plus) {
            return Err(Error::hyper(
                "etas",
                format!(
                    "Invalid eta values: {}, {}",
                    py_float(minus),
                    py_float(plus)
                ),
            ));
        }
        Ok(())
    }
});

impl Algorithm for RpropConfig {
    type State = RpropState;
    crate::dense_in_every_dtype!(RpropState);

    fn init_state(&self, param: &ParamMeta<'_>) -> RpropState {
        let step_size = Tensor::full(param.dtype(), param.shape(), self.lr);
        RpropState {
            step: 0.0,
            prev: param.zeros_like(),
            step_size,
        }
    }
}

impl RpropConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut RpropState,
    ) -> Result<()> {
        let h = RpropScalars {
            etaminus: S::Math::from_f64(self.etas.0),
            etaplus: S::Math::from_f64(self.etas.1),
            step_size_min: S::Math::from_f64(self.step_sizes.0),
            step_size_max: S::Math::from_f64(self.step_sizes.1),
            maximize: self.maximize,
        };
        let slices = RpropSlices {
            param,
            grad,
            prev: state.prev.as_slice_mut::<S>()?,
            step_size: state.step_size.as_slice_mut::<S>()?,
        };
        kernels::rprop(slices, &h)?;
        state.step += 1.0;
        Ok(())
    }
}
