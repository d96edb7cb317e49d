//! Adam (Kingma & Ba, 2015), with AMSGrad and decoupled weight decay (`torch.optim.Adam`).
//!
//! With gradient `g`, step `t`, weight decay `λ`:
//!
//! ```text
//! g ← ±g                               (− when maximize)
//! θ ← θ·(1 − lr·λ)        if decoupled_weight_decay (AdamW)
//! g ← g + λ·θ             otherwise
//! m ← lerp(m, g, 1 − β₁)               = β₁·m + (1 − β₁)·g
//! v ← β₂·v + (1 − β₂)·g²
//! v̂ ← max(v̂, v)           if amsgrad, and v̂ replaces v below
//! θ ← θ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! This is torch's single-tensor CPU path, operation for operation; the bias
//! corrections and step size are computed in `f64` as torch does in Python.
//! State: `step` (written as torch's 0-d float32 tensor), `exp_avg`,
//! `exp_avg_sq`, and `max_exp_avg_sq` with amsgrad.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, AdamScalars, AdamSlices, Moments};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_adam_like;

/// Adam over param groups: `Adam::new(params, AdamConfig { .. })`.
pub type Adam = Optim<AdamConfig>;

/// Adam's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adam, AdamConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64, -1.0], &[2])?;
/// let mut opt = Adam::new([p.clone()], AdamConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![3.0f64, -0.5], &[2])?)?;
/// opt.step()?;
/// // Adam's first step moves every coordinate by about lr, against its gradient's sign.
/// let v = p.to_vec::<f64>()?;
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 0.9).abs() < 1e-6);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0): an L2 penalty, or decoupled as AdamW.
    pub weight_decay: f64,
    /// Use AMSGrad's running maximum of `v` (default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// Apply weight decay to the parameter directly, as AdamW (default false).
    pub decoupled_weight_decay: bool,
    /// torch's `fused=True` (default `None`, torch's single-tensor path):
    /// its fused CPU kernel's arithmetic, computed in `f32` for the 16-bit
    /// dtypes with one rounding per stored value (see [`kernels::adam_fused`]).
    pub fused: Option<bool>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
            fused: None,
        }
    }
}

/// Adam's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    /// Steps taken (torch keeps it as a float32 tensor).
    pub step: f64,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Second moment average.
    pub exp_avg_sq: Tensor,
    /// Running maximum of `exp_avg_sq` (amsgrad only).
    pub max_exp_avg_sq: Option<Tensor>,
}

crate::param_state!(AdamState {
    step: step,
    exp_avg: tensor,
    exp_avg_sq: tensor,
    max_exp_avg_sq: optional_tensor,
});

crate::hyperparameters!(AdamConfig {
    name: "Adam",
    torch_flags: &["foreach", "capturable", "differentiable"],
    optional_keys: &["amsgrad", "maximize", "decoupled_weight_decay", "fused"],

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }
});

impl Algorithm for AdamConfig {
    type State = AdamState;
    crate::dense_in_every_dtype!(AdamState, fused);

    fn init_state(&self, param: &ParamMeta<'_>) -> AdamState {
        AdamState {
            step: 0.0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            max_exp_avg_sq: self.amsgrad.then(|| param.zeros_like()),
        }
    }
}

impl AdamConfig {
    /// One dense update in any storage type: the scalars in the type the
    /// step computes in (`f32` for the 16-bit types, as torch's `opmath`);
    /// with `grad_scale` (fused only) the gradient divided by it first.
    pub(crate) fn dense_scaled<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        state: &mut AdamState,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        type M<S> = <S as Storage>::Math;
        let (beta1, beta2) = self.betas;
        let step = state.step + 1.0;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = self.lr / bias_correction1;
        let h = AdamScalars {
            moments: Moments::new(
                self.lr,
                self.betas,
                self.eps,
                self.weight_decay,
                self.decoupled_weight_decay,
                self.maximize,
            ),
            bias_correction2_sqrt: M::<S>::from_f64(bias_correction2.powf(0.5)),
            neg_step_size: M::<S>::from_f64(-step_size),
        };
        if self.amsgrad && state.max_exp_avg_sq.is_none() {
            // amsgrad switched on after the first step: start the maximum from zero.
            state.max_exp_avg_sq = Some(Tensor::zeros(S::DTYPE, shape));
        }
        let max = match (&mut state.max_exp_avg_sq, self.amsgrad) {
            (Some(max), true) => Some(max.as_slice_mut::<S>()?),
            _ => None,
        };
        let slices = AdamSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<S>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<S>()?,
            max_exp_avg_sq: max,
        };
        let scale = grad_scale.map(|s| M::<S>::from_f64(f64::from(s)));
        match (self.fused == Some(true), scale) {
            (true, scale) => kernels::adam_fused(slices, &kernels::FusedAdamScalars(h, scale))?,
            (false, None) => kernels::adam(slices, &h)?,
            (false, Some(_)) => {
                return Err(crate::Error::GradScalingUnsupported { optimizer: "Adam" })
            }
        }
        state.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ParamState, StateEntries, StateValue};
    use crate::Hyperparameters;

    #[test]
    fn validation_follows_torch() {
        let bad = [
            (
                AdamConfig {
                    lr: -1e-3,
                    ..Default::default()
                },
                "Invalid learning rate: -0.001",
            ),
            (
                AdamConfig {
                    eps: -1e-8,
                    ..Default::default()
                },
                "Invalid epsilon value: -1e-08",
            ),
            (
                AdamConfig {
                    betas: (1.0, 0.0),
                    ..Default::default()
                },
                "Invalid beta parameter at index 0: 1.0",
            ),
            (
                AdamConfig {
                    betas: (0.9, f64::NAN),
                    ..Default::default()
                },
                "Invalid beta parameter at index 1: nan",
            ),
            (
                AdamConfig {
                    weight_decay: -1.0,
                    ..Default::default()
                },
                "Invalid weight_decay value: -1.0",
            ),
        ];
        for (config, message) in bad {
            assert_eq!(config.validate().unwrap_err().to_string(), message);
        }
        AdamConfig::default().validate().unwrap();
    }

    #[test]
    fn state_dict_entries_round_trip() {
        let param = ParamMeta::new(&[2], crate::Dtype::F32);
        let state = AdamState {
            step: 3.0,
            ..AdamConfig {
                amsgrad: true,
                ..Default::default()
            }
            .init_state(&param)
        };
        let entries = state.to_entries();
        assert_eq!(entries["step"], StateValue::Tensor(Tensor::scalar(3.0f32)));
        let back = AdamState::from_entries(StateEntries::new(0, &[2], crate::Dtype::F32, &entries))
            .unwrap();
        assert_eq!(back, state);
    }
}
