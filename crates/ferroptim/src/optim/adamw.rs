//! AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019; `torch.optim.AdamW`).
//!
//! ```text
//! θ ← θ·(1 − lr·λ)
//! then Adam's update of θ with the gradient g (without the L2 term)
//! ```
//!
//! As in torch 2.15, where `AdamW` is `Adam(decoupled_weight_decay=True)`
//! with `weight_decay` defaulting to 1e-2: the update is [`Adam`](super::Adam)'s,
//! and the state (`step`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`) too.

use serde::{Deserialize, Serialize};

use super::{AdamConfig, AdamState};
use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::Storage;

/// AdamW over param groups.
pub type AdamW = Optim<AdamWConfig>;

/// AdamW's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{AdamW, AdamWConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = AdamW::new([p.clone()], AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![0.0f64], &[1])?)?;
/// opt.step()?;
/// // A zero gradient: only the decay moves the weight, by lr·λ·θ.
/// assert!((p.to_vec::<f64>()?[0] - 0.95).abs() < 1e-12);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay λ (default 1e-2).
    pub weight_decay: f64,
    /// Use AMSGrad's running maximum of `v` (default false).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// Always true: torch keeps the key in AdamW's groups and forces it on load.
    pub decoupled_weight_decay: bool,
    /// torch's `fused=True` (default `None`): see [`AdamConfig::fused`].
    pub fused: Option<bool>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: true,
            fused: None,
        }
    }
}

impl AdamWConfig {
    /// The same hyperparameters as Adam's.
    pub fn to_adam(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
            maximize: self.maximize,
            decoupled_weight_decay: true,
            fused: self.fused,
        }
    }
}

crate::hyperparameters!(AdamWConfig {
    name: "AdamW",
    torch_flags: AdamConfig::TORCH_FLAGS,
    optional_keys: AdamConfig::OPTIONAL_KEYS,

    fn validate(&self) -> Result<()> {
        if !self.decoupled_weight_decay {
            return Err(Error::hyper(
                "decoupled_weight_decay",
                "AdamW always decouples weight decay; use Adam for an L2 penalty".into(),
            ));
        }
        self.to_adam().validate()
    }
});

impl Algorithm for AdamWConfig {
    type State = AdamState;
    crate::dense_in_every_dtype!(AdamState, fused);

    fn init_state(&self, param: &ParamMeta<'_>) -> AdamState {
        self.to_adam().init_state(param)
    }
}

impl AdamWConfig {
    fn dense_scaled<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        state: &mut AdamState,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        self.to_adam()
            .dense_scaled(param, grad, shape, state, grad_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hyperparameters;
    use crate::{Optimizer, Param};

    #[test]
    fn adamw_is_adam_with_decoupled_decay_and_refuses_coupled_decay() {
        assert!(AdamWConfig::default().validate().is_ok());
        let coupled = AdamWConfig {
            decoupled_weight_decay: false,
            ..Default::default()
        };
        assert!(coupled.validate().is_err());
        let p = Param::zeros::<f32>(&[2]);
        let opt = AdamW::new([p], AdamWConfig::default()).unwrap();
        assert_eq!(
            opt.hyperparameter(0, "weight_decay"),
            Some(serde_json::json!(0.01))
        );
        assert_eq!(opt.name(), "AdamW");
    }
}
