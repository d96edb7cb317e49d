//! LARS: layer-wise adaptive rate scaling (You et al., 2017, "Large Batch
//! Training of Convolutional Networks"), with LARC's clipping, as timm
//! 1.0.31's `Lars` implements it.
//!
//! SGD whose gradient is rescaled per tensor by a trust ratio. With
//! `‖θ‖`, `‖g‖` the tensor's norms, trust coefficient `η`, weight decay `λ`:
//!
//! ```text
//! if λ ≠ 0 or always_adapt:
//!     r ← η·‖θ‖ / (‖g‖ + λ·‖θ‖ + ε)     (1 if ‖θ‖ = 0 or ‖g‖ = 0)
//!     r ← min(r / lr, 1)                 (trust_clip: LARC)
//!     g ← (g + λ·θ)·r
//! b ← μ·b + (1 − τ)·g                    (b ← g on its first step)
//! θ ← θ − lr·(g + μ·b)  with Nesterov,   θ ← θ − lr·b  without (θ − lr·g without momentum)
//! ```
//!
//! As in timm, weight decay is applied only inside the adaptation. The
//! step is SGD's kernel with the trust ratio (see [`Sgd`](super::Sgd));
//! the norms are summed in `f64` and rounded once, where torch sums in its
//! vectorised order, so a trust ratio can be an ulp apart. State: torch's
//! `momentum_buffer`, only with momentum.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{reduce::sum_sq_pair, SgdScalars};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::Element;
use crate::validate::check_non_negative;

use super::SgdState;

/// LARS over param groups.
pub type Lars = Optim<LarsConfig>;

/// LARS's hyperparameters: timm's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Lars, LarsConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![3.0f64, 4.0], &[2])?; // ‖θ‖ = 5
/// let config = LarsConfig { lr: 1.0, always_adapt: true, trust_coeff: 0.1, ..Default::default() };
/// let mut opt = Lars::new([p.clone()], config)?;
/// p.set_grad(Tensor::from_vec(vec![0.0, 10.0], &[2])?)?; // ‖g‖ = 10
/// opt.step()?;
/// // r = 0.1·5/10 = 0.05: the step is lr·r·g.
/// let v = p.to_vec::<f64>()?;
/// assert_eq!(v[0], 3.0);
/// assert!((v[1] - (4.0 - 0.5)).abs() < 1e-8); // ε = 1e-8 in the denominator
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LarsConfig {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Dampening of the momentum (default 0).
    pub dampening: f64,
    /// L2 penalty, applied inside the adaptation (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// The trust coefficient η (default 0.001).
    pub trust_coeff: f64,
    /// Added to the trust ratio's denominator (default 1e-8).
    pub eps: f64,
    /// LARC: clip the trust ratio at `lr`, i.e. `min(r/lr, 1)` (default false).
    pub trust_clip: bool,
    /// Adapt even without weight decay (default false: only when `weight_decay ≠ 0`).
    pub always_adapt: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        LarsConfig {
            lr: 1.0,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            trust_coeff: 0.001,
            eps: 1e-8,
            trust_clip: false,
            always_adapt: false,
        }
    }
}

crate::hyperparameters!(LarsConfig {
    name: "Lars",
    reference: "timm 1.0.31",
    torch_flags: &["foreach"],
    optional_keys: &["nesterov", "foreach"],

    /// timm's checks, in its order and with its messages; NaN fails too.
    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("momentum", "Invalid momentum value", self.momentum)?;
        check_non_negative("weight_decay", "Invalid weight_decay value", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::hyper(
                "nesterov",
                "Nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(())
    }
});

impl LarsConfig {
    /// The trust ratio of a tensor, in timm's tensor arithmetic (every
    /// operation rounded to `T`).
    fn trust_ratio<T: Element>(&self, param: &[T], grad: &[T]) -> T {
        let (w_sq, g_sq) = sum_sq_pair(param, grad);
        let (w_norm, g_norm) = (T::from_f64(w_sq.sqrt()), T::from_f64(g_sq.sqrt()));
        let ratio = T::from_f64(self.trust_coeff) * w_norm
            / (g_norm + w_norm * T::from_f64(self.weight_decay) + T::from_f64(self.eps));
        // torch.where(w > 0, torch.where(g > 0, ratio, 1), 1)
        let ratio = if w_norm > T::ZERO && g_norm > T::ZERO {
            ratio
        } else {
            T::ONE
        };
        if self.trust_clip {
            // torch.clamp(ratio / lr, max=1.0): NaN stays.
            let clipped = ratio / T::from_f64(self.lr);
            if clipped > T::ONE {
                T::ONE
            } else {
                clipped
            }
        } else {
            ratio
        }
    }
}

impl Algorithm for LarsConfig {
    type State = SgdState;

    fn init_state(&self, _param: &ParamMeta<'_>) -> SgdState {
        SgdState::default()
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut SgdState,
    ) -> Result<()> {
        let mut h = SgdScalars::<T>::new(
            -self.lr,
            0.0,
            self.momentum,
            self.dampening,
            self.nesterov,
            false,
        );
        if self.weight_decay != 0.0 || self.always_adapt {
            // g.add(p, alpha=λ) even when λ = 0, then times the ratio.
            h.weight_decay = Some(T::from_f64(self.weight_decay));
            h.trust_ratio = Some(self.trust_ratio(param, grad));
        }
        let arithmetic = super::sgd::Arithmetic::SingleTensor;
        super::sgd::step(
            h,
            self.momentum != 0.0,
            arithmetic,
            param,
            grad,
            shape,
            state,
        )
    }
}
