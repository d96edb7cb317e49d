//! RMSprop (Hinton's lecture 6e; centered variant from Graves, 2013; `torch.optim.RMSprop`).
//!
//! ```text
//! g ← ±g + λ·θ
//! v ← α·v + (1 − α)·g²
//! d ← √(v − ḡ²) + ε  with ḡ ← lerp(ḡ, g, 1 − α)   if centered
//! d ← √v + ε                                      otherwise
//! b ← μ·b + g/d,  θ ← θ − lr·b                     if momentum > 0
//! θ ← θ − lr·g/d                                   otherwise
//! ```
//!
//! State: `step`, `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg` (centered).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, AdaptiveScalars, RmspropScalars, RmspropSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_non_negative;

/// RMSprop over param groups.
pub type Rmsprop = Optim<RmspropConfig>;

/// RMSprop's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Rmsprop, RmspropConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Rmsprop::new([p.clone()], RmspropConfig { centered: true, momentum: 0.9, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![1.0f64], &[1])?)?;
/// opt.step()?;
/// assert!(p.to_vec::<f64>()?[0] < 1.0);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmspropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the second moment (default false).
    pub centered: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        RmspropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// RMSprop's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct RmspropState {
    /// Steps taken.
    pub step: f64,
    /// Running average of squared gradients.
    pub square_avg: Tensor,
    /// Momentum buffer (momentum > 0 only).
    pub momentum_buffer: Option<Tensor>,
    /// Running average of gradients (centered only).
    pub grad_avg: Option<Tensor>,
}

crate::param_state!(RmspropState {
    step: step,
    square_avg: tensor,
    momentum_buffer: optional_tensor,
    grad_avg: optional_tensor,
});

crate::hyperparameters!(RmspropConfig {
    name: "RMSprop",
    torch_flags: &["capturable", "foreach", "differentiable"],
    optional_keys: &["momentum", "centered", "maximize"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("eps", "Invalid epsilon value", self.eps)?;
        check_non_negative("momentum", "Invalid momentum value", self.momentum)?;
        check_non_negative(
            "weight_decay",
            "Invalid weight_decay value",
            self.weight_decay,
        )?;
        check_non_negative("alpha", "Invalid alpha value", self.alpha)
    }
});

impl Algorithm for RmspropConfig {
    crate::dense_in_every_dtype!(RmspropState);
    type State = RmspropState;

    fn init_state(&self, param: &ParamMeta<'_>) -> RmspropState {
        RmspropState {
            step: 0.0,
            square_avg: param.zeros_like(),
            momentum_buffer: (self.momentum > 0.0).then(|| param.zeros_like()),
            grad_avg: self.centered.then(|| param.zeros_like()),
        }
    }
}

impl RmspropConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        s: &mut RmspropState,
    ) -> Result<()> {
        // Options switched on after the first step start their buffers from zero.
        if self.momentum > 0.0 && s.momentum_buffer.is_none() {
            s.momentum_buffer = Some(Tensor::zeros(S::DTYPE, shape));
        }
        if self.centered && s.grad_avg.is_none() {
            s.grad_avg = Some(Tensor::zeros(S::DTYPE, shape));
        }
        let h = RmspropScalars {
            adaptive: AdaptiveScalars::new(-self.lr, self.weight_decay, self.eps, self.maximize),
            alpha: S::Math::from_f64(self.alpha),
            one_minus_alpha: S::Math::from_f64(1.0 - self.alpha),
            momentum: S::Math::from_f64(self.momentum),
        };
        let slices = RmspropSlices {
            param,
            grad,
            square_avg: s.square_avg.as_slice_mut::<S>()?,
            grad_avg: match (&mut s.grad_avg, self.centered) {
                (Some(t), true) => Some(t.as_slice_mut::<S>()?),
                _ => None,
            },
            momentum_buffer: match (&mut s.momentum_buffer, self.momentum > 0.0) {
                (Some(t), true) => Some(t.as_slice_mut::<S>()?),
                _ => None,
            },
        };
        kernels::rmsprop(slices, &h)?;
        s.step += 1.0;
        Ok(())
    }
}
