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
//!
//! Sparse gradients (embedding rows) are taken as torch 2.15 takes them:
//! with any momentum, dampening, nesterov and maximize, but not with weight
//! decay (torch fails inside the step, `add(sparse, dense) is not
//! supported`; here it is a typed error before anything changes). Without
//! momentum only the gradient's rows change, added entry by entry as torch
//! adds a sparse tensor to a dense one, so the bits are torch's. With
//! momentum the buffer is kept dense: torch keeps it as an uncoalesced
//! sparse tensor whose entries it scales and adds one by one, so the same
//! sums are rounded in another order (differences of an ulp or so).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{self, FusedSgdScalars, SgdMomentumSlices, SgdScalars, SgdSlices};
use crate::optimizer::Optim;
use crate::param::SparseGrad;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::{check_non_negative, py_float};

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
    /// torch's `fused=True` (default `None`, torch's single-tensor path):
    /// its fused CPU kernel's arithmetic, computed in `f32` for the 16-bit
    /// dtypes with one rounding per stored value (see [`kernels::sgd_fused`]).
    /// As torch, it takes no sparse gradients.
    pub fused: Option<bool>,
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
            fused: None,
        }
    }
}

/// SGD's per-parameter state: torch's `momentum_buffer`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SgdState {
    /// The momentum buffer; `None` until the first step with momentum.
    pub momentum_buffer: Option<Tensor>,
}

crate::param_state!(SgdState {
    momentum_buffer: optional_tensor,
});

crate::hyperparameters!(SgdConfig {
    name: "SGD",
    torch_flags: &["foreach", "differentiable"],
    optional_keys: &["nesterov", "maximize", "fused"],

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
});

impl SgdConfig {
    /// One dense update in any storage type; with `grad_scale` (fused
    /// only) the gradient divided by it first.
    fn dense_scaled<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        state: &mut SgdState,
        grad_scale: Option<f32>,
    ) -> Result<()> {
        let h = SgdScalars::<S::Math>::new(
            -self.lr,
            self.weight_decay,
            self.momentum,
            self.dampening,
            self.nesterov,
            self.maximize,
        );
        let arithmetic = match (self.fused == Some(true), grad_scale) {
            (true, grad_scale) => Arithmetic::Fused { grad_scale },
            (false, None) => Arithmetic::SingleTensor,
            (false, Some(_)) => return Err(Error::GradScalingUnsupported { optimizer: "SGD" }),
        };
        step(
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

impl Algorithm for SgdConfig {
    type State = SgdState;
    crate::dense_in_every_dtype!(SgdState, fused);

    fn init_state(&self, _param: &ParamMeta<'_>) -> SgdState {
        SgdState::default()
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
        state: &mut SgdState,
        index: usize,
    ) -> Result<()> {
        self.check_grad(true, index)?;
        let width = shape.get(1..).map_or(1, |s| s.iter().product());
        if self.momentum == 0.0 {
            let values = grad.values().as_slice::<T>()?;
            let neg_lr = T::from_f64(-self.lr);
            let rows = grad.indices();
            return kernels::sgd_sparse(param, rows, values, width, neg_lr, self.maximize);
        }
        // The momentum buffer is dense: run the dense update on the
        // coalesced gradient, zero outside its rows.
        let (rows, values) = grad.coalesced::<T>()?;
        let mut dense = vec![T::ZERO; param.len()];
        for (k, &r) in rows.iter().enumerate() {
            let row = dense
                .get_mut(r * width..(r + 1) * width)
                .ok_or(Error::LengthMismatch {
                    kernel: "sgd_sparse",
                    name: "row index",
                    expected: param.len() / width.max(1),
                    found: r + 1,
                })?;
            row.copy_from_slice(&values[k * width..(k + 1) * width]);
        }
        self.update(param, &dense, shape, state)
    }
}

/// Whose arithmetic an SGD step follows.
#[derive(Clone, Copy, Debug)]
pub(super) enum Arithmetic {
    /// torch's single-tensor path.
    SingleTensor,
    /// torch's fused kernel, the gradient divided by AMP's `grad_scale` first.
    Fused {
        /// The factor the gradient is scaled by.
        grad_scale: Option<f32>,
    },
}

/// SGD's step with scalars `h` (LARS's too, with its trust ratio): without
/// momentum, or with a buffer created from the first step's gradient; by
/// torch's single-tensor arithmetic, or by its fused kernel's.
pub(super) fn step<S: Storage>(
    mut h: SgdScalars<S::Math>,
    momentum: bool,
    arithmetic: Arithmetic,
    param: &mut [S],
    grad: &[S],
    shape: &[usize],
    state: &mut SgdState,
) -> Result<()> {
    let run =
        |h: &SgdScalars<S::Math>, param, grad, buffer: Option<&mut [S]>| match (arithmetic, buffer)
        {
            (Arithmetic::Fused { grad_scale }, buffer) => {
                let scale = grad_scale.map(|s| S::Math::from_f64(f64::from(s)));
                kernels::sgd_fused(param, grad, buffer, &FusedSgdScalars(*h, scale))
            }
            (Arithmetic::SingleTensor, None) => kernels::sgd(SgdSlices { param, grad }, h),
            (Arithmetic::SingleTensor, Some(momentum_buffer)) => kernels::sgd_momentum(
                SgdMomentumSlices {
                    param,
                    grad,
                    momentum_buffer,
                },
                h,
            ),
        };
    if !momentum {
        return run(&h, param, grad, None);
    }
    match &mut state.momentum_buffer {
        Some(buf) => run(&h, param, grad, Some(buf.as_slice_mut::<S>()?)),
        None => {
            let mut buf = vec![S::default(); param.len()];
            h.first = true;
            run(&h, param, grad, Some(&mut buf))?;
            state.momentum_buffer = Some(Tensor::from_vec(buf, shape)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hyperparameters;
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
