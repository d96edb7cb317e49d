//! SparseAdam: Adam masked to the rows of sparse gradients (`torch.optim.SparseAdam`).
//!
//! For the rows `r` present in the coalesced gradient, and only for them:
//!
//! ```text
//! g ← ±g
//! m_r ← m_r + (1 − β₁)·(g − m_r)
//! v_r ← v_r + (1 − β₂)·(g² − v_r)
//! θ_r ← θ_r − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m_r / (√v_r + ε)
//! ```
//!
//! As in torch, `t` counts the steps in which the parameter had a gradient,
//! even one with no rows; rows absent from a gradient keep their moments
//! (they do not decay). Only sparse gradients are taken: a dense one is
//! refused before the step changes anything. State: `step` (an integer, as
//! torch keeps it here), `exp_avg`, `exp_avg_sq`.

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Hyperparameters};
use crate::error::{Error, Result};
use crate::kernels::{self, SparseAdamScalars};
use crate::optimizer::Optim;
use crate::param::SparseGrad;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{check_positive, check_unit_interval};

/// SparseAdam over param groups.
pub type SparseAdam = Optim<SparseAdamConfig>;

/// SparseAdam's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{SparseAdam, SparseAdamConfig}, Optimizer, Param, SparseGrad, Tensor};
/// let embedding = Param::zeros::<f32>(&[4, 2]);
/// let mut opt = SparseAdam::new([embedding.clone()], SparseAdamConfig { lr: 0.1, ..Default::default() })?;
/// let rows = Tensor::from_vec(vec![1.0f32, -1.0], &[1, 2])?;
/// embedding.set_sparse_grad(SparseGrad::new(vec![2], rows)?)?;
/// opt.step()?;
/// let w = embedding.to_vec::<f32>()?;
/// assert_eq!(&w[..4], &[0.0; 4], "rows 0 and 1 have no gradient and do not move");
/// assert!((w[4] + 0.1).abs() < 1e-6 && (w[5] - 0.1).abs() < 1e-6);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SparseAdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for SparseAdamConfig {
    fn default() -> Self {
        SparseAdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            maximize: false,
        }
    }
}

/// SparseAdam's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseAdamState {
    /// Steps taken (an integer in torch's state_dict).
    pub step: f64,
    /// First moment average.
    pub exp_avg: Tensor,
    /// Second moment average.
    pub exp_avg_sq: Tensor,
}

crate::param_state!(SparseAdamState {
    step: int_step,
    exp_avg: tensor,
    exp_avg_sq: tensor,
});

crate::hyperparameters!(SparseAdamConfig {
    name: "SparseAdam",
    torch_flags: &[],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_positive("lr", "Invalid learning rate", self.lr)?;
        check_positive("eps", "Invalid epsilon value", self.eps)?;
        check_unit_interval("betas", "Invalid beta parameter at index 0", self.betas.0)?;
        check_unit_interval("betas", "Invalid beta parameter at index 1", self.betas.1)
    }
});

impl Algorithm for SparseAdamConfig {
    type State = SparseAdamState;

    fn init_state(&self, param: &ParamMeta<'_>) -> SparseAdamState {
        SparseAdamState {
            step: 0.0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }

    fn update<T: Element>(
        &self,
        _: &mut [T],
        _: &[T],
        _: &[usize],
        _: &mut SparseAdamState,
    ) -> Result<()> {
        // Never reached: check_grad refuses dense gradients before a step starts.
        Err(Error::DenseGradUnsupported {
            optimizer: Self::NAME,
            param: 0,
        })
    }

    fn check_grad(&self, sparse: bool, param: usize) -> Result<()> {
        if sparse {
            Ok(())
        } else {
            Err(Error::DenseGradUnsupported {
                optimizer: Self::NAME,
                param,
            })
        }
    }

    fn update_sparse<T: Element>(
        &self,
        param: &mut [T],
        shape: &[usize],
        grad: &SparseGrad,
        state: &mut SparseAdamState,
        _index: usize,
    ) -> Result<()> {
        let (rows, values) = grad.coalesced::<T>()?;
        let (rows, values) = (&rows[..], &values[..]);
        state.step += 1.0;
        if values.is_empty() {
            return Ok(()); // torch: "Skip update for empty grad", after counting the step
        }
        let (beta1, beta2) = self.betas;
        let bias_correction1 = 1.0 - beta1.powf(state.step);
        let bias_correction2 = 1.0 - beta2.powf(state.step);
        let step_size = self.lr * bias_correction2.sqrt() / bias_correction1;
        let h = SparseAdamScalars {
            one_minus_beta1: T::from_f64(1.0 - beta1),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            eps: T::from_f64(self.eps),
            neg_step_size: T::from_f64(-step_size),
            maximize: self.maximize,
        };
        let width = shape.get(1..).map_or(1, |s| s.iter().product());
        let (m, v) = (
            state.exp_avg.as_slice_mut::<T>()?,
            state.exp_avg_sq.as_slice_mut::<T>()?,
        );
        kernels::sparse_adam(param, m, v, rows, values, width, &h)
    }
}
