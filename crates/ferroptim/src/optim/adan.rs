//! Adan: adaptive Nesterov momentum (Xie et al., 2022, "Adan: Adaptive
//! Nesterov Momentum Algorithm for Faster Optimizing Deep Models"), as
//! pytorch-optimizer 4.1.0's `Adan` implements it.
//!
//! With group step `t`, gradient `g` (clipped by the global norm when
//! `max_grad_norm > 0`, negated if maximizing) and the last one `g'`:
//!
//! ```text
//! d ← g − g'                        (g' = −c·g on a parameter's first step: the reference's)
//! m ← (1 − β₁)·m + β₁·g             (lerp towards g by 1 − β₁)
//! v ← (1 − β₂)·v + β₂·d
//! n ← β₃·n + (1 − β₃)·(g + β₂·d)²
//! θ ← θ − lr·(m/(1 − β₁ᵗ) + β₂·v/(1 − β₂ᵗ)) / (√n/√(1 − β₃ᵗ) + ε)
//! ```
//!
//! Weight decay is decoupled (`θ·(1 − lr·λ)` first) with
//! `weight_decouple`, and otherwise the paper's proximal form
//! (`θ / (1 + lr·λ)` last), not an L2 term in the gradient.
//!
//! As in the reference, `previous_grad` holds the last gradient negated,
//! and starts as `−c·g` with the raw gradient and the clip factor `c`
//! (`−g` without clipping), before the sign of `maximize`: so the first
//! difference is 0, or `−2g` when maximizing. The reference fails on a 0-d
//! parameter when clipping (its factor has shape `[1]`); ferroptim does not.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::json::is_zero;
use crate::kernels::{self, AdanScalars, AdanSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{pto_betas, pto_learning_rate, pto_non_negative};

/// Adan over param groups.
pub type Adan = Optim<AdanConfig>;

/// Adan's hyperparameters: pytorch-optimizer's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adan, AdanConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Adan::new([p.clone()], AdanConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![2.0], &[1])?)?;
/// opt.step()?;
/// // Step 1: d = 0, so θ moves by lr·m̂/n̂^½ = lr·sign(g).
/// assert!((p.to_vec::<f64>()?[0] - 0.9).abs() < 1e-7);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdanConfig {
    /// Learning rate (default 1e-3; 0 is allowed, as in the reference).
    pub lr: f64,
    /// The decays of `m`, `v` (in [0, 1)) and `n` (in [0, 1]) (default (0.98, 0.92, 0.99)).
    pub betas: (f64, f64, f64),
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decoupled weight decay instead of the proximal one (default false).
    pub weight_decouple: bool,
    /// Clip the gradients to this global norm (default 0: no clipping).
    /// The defaults' is used, as in the reference.
    pub max_grad_norm: f64,
    /// The reference's choice of path (default `None`). Its two give the
    /// same numbers; ferroptim has one. Kept for the state_dict.
    pub foreach: Option<bool>,
    /// `ε` (default 1e-8).
    pub eps: f64,
    /// The group's step count (in a group from its first step on, as in the reference).
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u64,
    /// Ascend instead of descend (default false). An argument of the
    /// optimizer: every group has the defaults', and a load keeps it.
    #[serde(skip_serializing)]
    pub maximize: bool,
    /// This step's clip factor from the global norm, set by the step; not
    /// an argument, never saved.
    #[serde(skip)]
    pub grad_scale: Option<f32>,
}

impl Default for AdanConfig {
    fn default() -> Self {
        AdanConfig {
            lr: 1e-3,
            betas: (0.98, 0.92, 0.99),
            weight_decay: 0.0,
            weight_decouple: false,
            max_grad_norm: 0.0,
            foreach: None,
            eps: 1e-8,
            step: 0,
            maximize: false,
            grad_scale: None,
        }
    }
}

/// Adan's per-parameter state, under pytorch-optimizer's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdanState {
    /// The first moment `m`.
    pub exp_avg: Tensor,
    /// The moment `n` of the corrected gradient's square.
    pub exp_avg_sq: Tensor,
    /// The moment `v` of the gradient differences.
    pub exp_avg_diff: Tensor,
    /// The last gradient, negated.
    pub previous_grad: Tensor,
    /// Whether `previous_grad` is still to be set from the first gradient
    /// (a fresh state; a loaded one has it).
    pub fresh: bool,
}

crate::param_state!(AdanState {
    exp_avg: tensor,
    exp_avg_sq: tensor,
    exp_avg_diff: tensor,
    previous_grad: tensor,
} skip { fresh });

crate::hyperparameters!(AdanConfig {
    name: "Adan",
    reference: "pytorch-optimizer 4.1.0",
    keys_when_set: &["step"],
    torch_flags: &[],
    optional_keys: &[],

    /// pytorch-optimizer's checks, in its order and with its messages.
    fn validate(&self) -> Result<()> {
        pto_learning_rate(self.lr)?;
        pto_betas(&[self.betas.0, self.betas.1, self.betas.2])?;
        pto_non_negative("weight_decay", self.weight_decay)?;
        pto_non_negative("max_grad_norm", self.max_grad_norm)?;
        pto_non_negative("eps", self.eps)
    }

    fn inherit(&mut self, defaults: &Self) {
        self.keep_unsaved(defaults);
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.maximize = live.maximize;
    }
});

impl Algorithm for AdanConfig {
    type State = AdanState;

    fn needs_global_grad_norm(&self) -> bool {
        self.max_grad_norm != 0.0
    }

    /// The defaults' clip factor (`global_clip_factor`).
    fn set_global_grad_norm(&mut self, defaults: &Self, sq_norm: f32) {
        let (max, eps) = (defaults.max_grad_norm, defaults.eps);
        self.grad_scale = Some(kernels::reduce::global_clip_factor(sq_norm, max, eps));
    }

    fn begin_step(&mut self) {
        // Saturating: a step count read from a checkpoint may be anything.
        self.step = self.step.saturating_add(1);
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> AdanState {
        AdanState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            exp_avg_diff: param.zeros_like(),
            previous_grad: param.zeros_like(),
            fresh: true,
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut AdanState,
    ) -> Result<()> {
        let (beta1, beta2, beta3) = self.betas;
        let t = self.step.max(1) as f64;
        let debias = |beta: f64| 1.0 - beta.powf(t);
        let scale = self
            .grad_scale
            .filter(|_| self.max_grad_norm != 0.0)
            .map(f64::from);
        let (lr, wd) = (self.lr, self.weight_decay);
        let decay = wd != 0.0;
        let h = AdanScalars {
            grad_scale: scale.map(T::from_f64),
            maximize: self.maximize,
            first: state.fresh.then(|| T::from_f64(-scale.unwrap_or(1.0))),
            one_minus_beta1: T::from_f64(1.0 - beta1),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            beta3: T::from_f64(beta3),
            one_minus_beta3: T::from_f64(1.0 - beta3),
            bias_correction3_sqrt: T::from_f64(debias(beta3).sqrt()),
            eps: T::from_f64(self.eps),
            decay: (decay && self.weight_decouple).then(|| T::from_f64(1.0 - lr * wd)),
            proximal: (decay && !self.weight_decouple).then(|| T::from_f64(1.0 + lr * wd)),
            neg_step_size: T::from_f64(-(lr / debias(beta1))),
            neg_diff_step_size: T::from_f64(-(lr * beta2 / debias(beta2))),
        };
        let slices = AdanSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<T>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
            exp_avg_diff: state.exp_avg_diff.as_slice_mut::<T>()?,
            previous_grad: state.previous_grad.as_slice_mut::<T>()?,
        };
        kernels::adan(slices, &h)?;
        state.fresh = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{optim, GroupSpec, Optimizer, Param, StateValue};

    fn build(config: &str) -> (Box<dyn Optimizer>, Param) {
        let p = Param::from_vec(vec![1.0f64, -2.0], &[2]).unwrap();
        let opt = optim::build("adan", config, vec![GroupSpec::new([p.clone()])]).unwrap();
        (opt, p)
    }

    fn state(opt: &dyn Optimizer, key: &str) -> Vec<f64> {
        match &opt.state_dict().state[&0][key] {
            StateValue::Tensor(t) => t.to_f64_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_previous_gradient_is_kept_negated_and_the_first_difference_is_zero() {
        let (mut opt, p) = build("{}");
        p.set_grad(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        assert_eq!(state(&*opt, "previous_grad"), vec![-3.0, -4.0]);
        assert_eq!(state(&*opt, "exp_avg_diff"), vec![0.0, 0.0]);
        // A loaded state is not fresh: its previous gradient is used.
        let sd = opt.state_dict();
        let (mut resumed, q) = build("{}");
        resumed.load_state_dict(&sd).unwrap();
        q.set_grad(Tensor::from_vec(vec![1.0f64, 1.0], &[2]).unwrap())
            .unwrap();
        resumed.step().unwrap();
        let diff = state(&*resumed, "exp_avg_diff");
        assert!((diff[0] - 0.08 * (1.0 - 3.0)).abs() < 1e-15, "{diff:?}");
    }

    #[test]
    fn max_grad_norm_clips_by_the_global_norm() {
        let (mut opt, p) = build(r#"{"max_grad_norm": 1.0}"#);
        p.set_grad(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        let c = f64::from((1.0f32 / (5.0f32 + 1e-8)) * 1.0);
        assert_eq!(state(&*opt, "previous_grad"), vec![-3.0 * c, -4.0 * c]);
        assert!(!opt.state_dict().param_groups[0].contains_key("grad_scale"));
    }

    #[test]
    fn maximizing_starts_from_a_difference_of_minus_two_g() {
        let (mut opt, p) = build(r#"{"maximize": true}"#);
        p.set_grad(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        // previous_grad = −g (raw), then g ← −g: d = −2g, v = (1−β₂)·d.
        let diff = state(&*opt, "exp_avg_diff");
        assert!((diff[0] - 0.08 * -6.0).abs() < 1e-15, "{diff:?}");
        assert!(p.to_vec::<f64>().unwrap()[0] > 1.0);
    }
}
