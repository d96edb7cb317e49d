//! Adagrad (Duchi et al., 2011; `torch.optim.Adagrad`).
//!
//! ```text
//! g ← ±g + λ·θ
//! s ← s + g²
//! θ ← θ − lr/(1 + (t − 1)·lr_decay) · g / (√s + ε)
//! ```
//!
//! As torch, the constructor creates every parameter's state at once
//! (`step` = 0, `sum` = `initial_accumulator_value`).
//!
//! Sparse gradients ([`SparseGrad`](crate::SparseGrad), e.g. from an
//! embedding) are taken as in torch: they are coalesced and only their rows
//! of `sum` and of the parameter change. `weight_decay` needs dense
//! gradients; torch raises mid-step, here the step is refused before anything
//! changes.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, AdagradSlices, AdaptiveScalars};
use crate::optimizer::Optim;
use crate::param::SparseGrad;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_non_negative;

/// Adagrad over param groups.
pub type Adagrad = Optim<AdagradConfig>;

/// Adagrad's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adagrad, AdagradConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Adagrad::new([p.clone()], AdagradConfig { lr: 0.5, ..Default::default() })?;
/// assert_eq!(opt.state_dict().state.len(), 1, "state exists before the first step, as in torch");
/// p.set_grad(Tensor::from_vec(vec![2.0f64], &[1])?)?;
/// opt.step()?;
/// assert!((p.to_vec::<f64>()?[0] - 0.5).abs() < 1e-9); // g/√(g²) = 1
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdagradConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay per step (default 0).
    pub lr_decay: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Starting value of the sum of squares (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (default 1e-10).
    pub eps: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// torch's `fused=True` (default `None`, torch's single-tensor path):
    /// its fused CPU kernel's arithmetic, computed in `f32` for the 16-bit
    /// dtypes with one rounding per stored value (see
    /// [`kernels::adagrad_fused`]). As torch, it takes no sparse gradients.
    pub fused: Option<bool>,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
            fused: None,
        }
    }
}

/// Adagrad's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradState {
    /// Steps taken.
    pub step: f64,
    /// Sum of squared gradients.
    pub sum: Tensor,
}

crate::param_state!(AdagradState {
    step: step,
    sum: tensor,
});

crate::hyperparameters!(AdagradConfig {
    name: "Adagrad",
    torch_flags: &["foreach", "differentiable"],
    optional_keys: &["maximize", "fused"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("lr_decay", "Invalid lr_decay value", self.lr_decay)?;
        check_non_negative(
            "weight_decay",
            "Invalid weight_decay value",
            self.weight_decay,
        )?;
        check_non_negative(
            "initial_accumulator_value",
            "Invalid initial_accumulator_value value",
            self.initial_accumulator_value,
        )?;
        check_non_negative("eps", "Invalid epsilon value", self.eps)
    }
});

impl Algorithm for AdagradConfig {
    const EAGER_STATE: bool = true;
    type State = AdagradState;
    crate::dense_in_every_dtype!(AdagradState, fused);

    fn init_state(&self, param: &ParamMeta<'_>) -> AdagradState {
        let sum = Tensor::full(param.dtype(), param.shape(), self.initial_accumulator_value);
        AdagradState { step: 0.0, sum }
    }

    fn check_grad(&self, sparse: bool, param: usize) -> Result<()> {
        crate::algorithm::sparse_without_weight_decay::<Self>(
            sparse,
            self.weight_decay,
            self.fused,
            param,
        )
    }

    fn update_sparse<T: Element>(
        &self,
        param: &mut [T],
        shape: &[usize],
        grad: &SparseGrad,
        state: &mut AdagradState,
        _index: usize,
    ) -> Result<()> {
        let (rows, values) = grad.coalesced::<T>()?;
        let (rows, values) = (&rows[..], &values[..]);
        let step = state.step + 1.0;
        let clr = self.lr / (1.0 + (step - 1.0) * self.lr_decay);
        let h = AdaptiveScalars::<T>::new(-clr, 0.0, self.eps, self.maximize);
        let width = shape.get(1..).map_or(1, |s| s.iter().product());
        let sum = state.sum.as_slice_mut::<T>()?;
        kernels::adagrad_sparse(param, sum, rows, values, width, shape.len() > 1, &h)?;
        state.step = step;
        Ok(())
    }
}

impl AdagradConfig {
    /// One dense update in any storage type; with `grad_scale` (fused
    /// only) the gradient divided by it first.
    fn dense_scaled<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut AdagradState,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        let step = state.step + 1.0;
        let fused = self.fused == Some(true);
        // torch's Python computes the decayed rate in two roundings; its
        // fused C++ kernel's compiler fuses the multiply-add.
        let clr = if fused {
            self.lr / (step - 1.0).mul_add(self.lr_decay, 1.0)
        } else {
            self.lr / (1.0 + (step - 1.0) * self.lr_decay)
        };
        let h = AdaptiveScalars::<S::Math>::new(-clr, self.weight_decay, self.eps, self.maximize);
        let slices = AdagradSlices {
            param,
            grad,
            sum: state.sum.as_slice_mut::<S>()?,
        };
        let scale = grad_scale.map(|s| S::Math::from_f64(f64::from(s)));
        match (fused, scale) {
            (true, scale) => {
                kernels::adagrad_fused(slices, &kernels::FusedAdagradScalars(h, scale))?
            }
            (false, None) => kernels::adagrad(slices, &h)?,
            (false, Some(_)) => {
                return Err(crate::Error::GradScalingUnsupported {
                    optimizer: "Adagrad",
                })
            }
        }
        state.step = step;
        Ok(())
    }
}
