//! SGD: stochastic gradient descent, with momentum, dampening, Nesterov and weight decay
//! (`torch.optim.SGD`).
//!
//! With gradient `g`, weight decay `λ`, momentum `μ`, dampening `τ`:
//!
//! ```text
//! g ← ±g + λ·θ                        (− when maximize)
//! b ← g                 on the first step with momentum
//! b ← μ·b + (1 − τ)·g   afterwards
//! g ← g + μ·b  (nesterov)   or   g ← b
//! θ ← θ − lr·g
//! ```
//!
//! As torch, the state (`momentum_buffer`) exists only when `momentum != 0`,
//! and the buffer starts as a copy of the first gradient.

use serde::{Deserialize, Serialize};

use crate::error::{check_non_negative, py_float, Error, Result};
use crate::kernels::{self, SgdScalars};
use crate::optimizer::{Algorithm, Hyperparameters, Optim, ParamState};
use crate::slot::ParamMeta;
use crate::state::{ParamStateDict, StateEntries, StateValue};
use crate::tensor::{Element, Tensor};

/// SGD over param groups: `Sgd::new(params, SgdConfig { .. })`.
#[doc(alias = "SGD")]
pub type Sgd = Optim<SgdConfig>;

/// SGD's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Sgd, SgdConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Sgd::new([p.clone()], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![2.0f64], &[1])?)?;
/// opt.step()?;
/// assert_eq!(p.to_vec::<f64>()?, vec![1.0 - 0.1 * 2.0]);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Dampening of the momentum (default 0).
    pub dampening: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

/// SGD's per-parameter state: torch's `momentum_buffer`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SgdState {
    /// The momentum buffer; `None` until the first step with momentum.
    pub momentum_buffer: Option<Tensor>,
}

impl ParamState for SgdState {
    fn to_entries(&self) -> ParamStateDict {
        let mut entries = ParamStateDict::new();
        if let Some(buf) = &self.momentum_buffer {
            entries.insert("momentum_buffer".into(), StateValue::Tensor(buf.clone()));
        }
        entries
    }

    fn from_entries(mut entries: StateEntries<'_>) -> Result<Self> {
        let momentum_buffer = entries.optional_tensor("momentum_buffer")?;
        entries.finish()?;
        Ok(SgdState { momentum_buffer })
    }
}

impl Hyperparameters for SgdConfig {
    const NAME: &'static str = "SGD";
    const TORCH_FLAGS: &'static [&'static str] = &["foreach", "differentiable", "fused"];
    const OPTIONAL_KEYS: &'static [&'static str] = &["nesterov", "maximize"];

    fn validate(&self) -> Result<()> {
        // torch's checks, in torch's order. torch lets a NaN through `lr < 0.0`; we don't.
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("momentum", "Invalid momentum value", self.momentum)?;
        check_non_negative(
            "weight_decay",
            "Invalid weight_decay value",
            self.weight_decay,
        )?;
        if !self.dampening.is_finite() {
            let message = format!("Invalid dampening value: {}", py_float(self.dampening));
            return Err(Error::hyper("dampening", message));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::hyper(
                "nesterov",
                "Nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

impl Algorithm for SgdConfig {
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
        let h = SgdScalars {
            neg_lr: T::from_f64(-self.lr),
            weight_decay: (self.weight_decay != 0.0).then(|| T::from_f64(self.weight_decay)),
            momentum: T::from_f64(self.momentum),
            one_minus_dampening: T::from_f64(1.0 - self.dampening),
            nesterov: self.nesterov,
            maximize: self.maximize,
        };
        if self.momentum == 0.0 {
            return kernels::sgd(param, grad, &h);
        }
        match &mut state.momentum_buffer {
            Some(buf) => kernels::sgd_momentum(param, grad, buf.as_slice_mut::<T>()?, false, &h),
            None => {
                let mut buf = vec![T::ZERO; param.len()];
                kernels::sgd_momentum(param, grad, &mut buf, true, &h)?;
                state.momentum_buffer = Some(Tensor::from_vec(buf, shape)?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, Param};

    #[test]
    fn validation_follows_torch() {
        let bad = [
            (
                SgdConfig {
                    lr: -0.1,
                    ..Default::default()
                },
                "Invalid learning rate: -0.1",
            ),
            (
                SgdConfig {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "Invalid learning rate: nan",
            ),
            (
                SgdConfig {
                    momentum: -0.5,
                    ..Default::default()
                },
                "Invalid momentum value: -0.5",
            ),
            (
                SgdConfig {
                    weight_decay: -1.0,
                    ..Default::default()
                },
                "Invalid weight_decay value: -1.0",
            ),
            (
                SgdConfig {
                    nesterov: true,
                    ..Default::default()
                },
                "Nesterov momentum requires",
            ),
        ];
        for (config, message) in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
        }
        SgdConfig {
            nesterov: true,
            momentum: 0.9,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn no_state_without_momentum() {
        let p = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let mut opt = Sgd::new([p.clone()], SgdConfig::default()).unwrap();
        p.set_grad(Tensor::from_vec(vec![1.0f32, 1.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        assert!(opt.state_dict().state.is_empty());
        opt.param_groups_mut()[0].options.momentum = 0.5;
        opt.step().unwrap();
        let buf = opt.state(&p).unwrap().momentum_buffer.as_ref().unwrap();
        assert_eq!(
            buf.as_slice::<f32>().unwrap(),
            &[1.0, 1.0],
            "the buffer starts as the gradient"
        );
    }
}
