//! Lion: EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of
//! Optimization Algorithms"), as `lion-pytorch` 0.2.5 implements it.
//!
//! With gradient `g`, momentum `m`, weight decay `λ`:
//!
//! ```text
//! λ ← λ / lr₀              if decoupled_weight_decay (lr₀: the constructor's lr)
//! θ ← θ·(1 − lr·λ)
//! θ ← θ − lr · sgn(β₁·m + (1 − β₁)·g)
//! m ← β₂·m + (1 − β₂)·g
//! ```
//!
//! The same as optax's `lion` (`scale_by_lion` then `add_decayed_weights`
//! and `scale_by_learning_rate`): its update is `sign(β₁·m + (1−β₁)·g) + λ·θ`,
//! times `−lr`, and its `mu` decays with `β₂` after the update; optax adds
//! the decay to the update where lion-pytorch multiplies θ first, which
//! rounds the same product in another order. `sgn` is torch's: ±1, and 0
//! for ±0 and NaN.
//!
//! This is lion-pytorch's own PyTorch code (not its Triton kernel),
//! operation for operation. State: `exp_avg`, the reference's only key (no
//! `step`).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, LionScalars, LionSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{check_positive, py_float};

/// Lion over param groups.
pub type Lion = Optim<LionConfig>;

/// Lion's hyperparameters: lion-pytorch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Lion, LionConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64, -1.0], &[2])?;
/// let mut opt = Lion::new([p.clone()], LionConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![3.0f64, -0.5], &[2])?)?;
/// opt.step()?;
/// // Every coordinate moves by exactly lr, against its gradient's sign.
/// assert_eq!(p.to_vec::<f64>()?, [0.9, -0.9]);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LionConfig {
    /// Learning rate (default 1e-4; must be positive).
    pub lr: f64,
    /// The interpolation of the update (β₁) and the decay of the momentum (β₂), in [0, 1] (default (0.9, 0.99)).
    pub betas: (f64, f64),
    /// Weight decay, applied to θ before the update (default 0).
    pub weight_decay: f64,
    /// Divide `weight_decay` by the constructor's lr, so that the decay per
    /// step follows the schedule's lr relative to it (default false). As in
    /// lion-pytorch, an argument of the optimizer, not of a group: every
    /// group has the defaults', and it is not in the state_dict (a load
    /// keeps the optimizer's own).
    #[serde(skip_serializing)]
    pub decoupled_weight_decay: bool,
    /// The constructor's lr, which `decoupled_weight_decay` divides by
    /// (lion-pytorch's `_init_lr`): set when the optimizer is built, kept
    /// by a load, not in the state_dict.
    #[serde(skip_serializing)]
    pub init_lr: Option<f64>,
}

impl Default for LionConfig {
    fn default() -> Self {
        LionConfig {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            init_lr: None,
        }
    }
}

/// Lion's per-parameter state, under lion-pytorch's key.
#[derive(Clone, Debug, PartialEq)]
pub struct LionState {
    /// The momentum.
    pub exp_avg: Tensor,
}

crate::param_state!(LionState { exp_avg: tensor });

crate::hyperparameters!(LionConfig {
    name: "Lion",
    reference: "lion-pytorch 0.2.5",
    torch_flags: &[],
    optional_keys: &[],

    /// lion-pytorch's asserts (`lr > 0`, `0 <= beta <= 1`), as errors with a message.
    fn validate(&self) -> Result<()> {
        check_positive("lr", "Invalid learning rate", self.lr)?;
        for (i, beta) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..=1.0).contains(&beta) {
                return Err(crate::Error::hyper(
                    "betas",
                    format!("Invalid beta parameter at index {i}: {} (expected 0 <= beta <= 1)", py_float(beta)),
                ));
            }
        }
        Ok(())
    }

    fn inherit(&mut self, defaults: &Self) {
        // The optimizer's arguments: lion-pytorch divides every group's
        // weight decay by the constructor's lr.
        self.decoupled_weight_decay = defaults.decoupled_weight_decay;
        self.init_lr = Some(defaults.init_lr.unwrap_or(defaults.lr));
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.decoupled_weight_decay = live.decoupled_weight_decay;
        self.init_lr = live.init_lr;
    }
});

impl LionConfig {
    /// The weight decay per unit of lr that this step applies.
    fn weight_decay_now(&self) -> f64 {
        if self.decoupled_weight_decay {
            self.weight_decay / self.init_lr.unwrap_or(self.lr)
        } else {
            self.weight_decay
        }
    }
}

impl Algorithm for LionConfig {
    type State = LionState;

    fn init_state(&self, param: &ParamMeta<'_>) -> LionState {
        LionState {
            exp_avg: param.zeros_like(),
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut LionState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let h = LionScalars {
            decay: T::from_f64(1.0 - self.lr * self.weight_decay_now()),
            neg_lr: T::from_f64(-self.lr),
            beta1: T::from_f64(beta1),
            one_minus_beta1: T::from_f64(1.0 - beta1),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
        };
        let slices = LionSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<T>()?,
        };
        kernels::lion(slices, &h)
    }
}
