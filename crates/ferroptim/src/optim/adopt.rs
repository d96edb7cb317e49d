//! ADOPT (Taniguchi et al., 2024, "ADOPT: Modified Adam Can Converge with
//! Any β₂ with the Optimal Rate"), as pytorch-optimizer 4.1.0 implements it.
//!
//! ADOPT normalizes the gradient by the second moment of the *previous*
//! steps, before the momentum, and clips it. With group step `t`, gradient
//! `g` (negated if maximizing, plus `λ·θ` with coupled weight decay):
//!
//! ```text
//! θ ← θ·(1 − λ·lr)                    (decoupled decay; 1 − λ if fixed_decay)
//! t = 1:  v ← v + g²                  (nothing else moves)
//! t > 1:  n ← clip(g / max(√v, ε), ±c(t))      c(t) = t^0.25 (clip_lambda)
//!         m ← m + (1 − β₁)·(n − m)
//!         θ ← θ − lr·m
//!         v ← β₂·v + (1 − β₂)·g²
//! ```
//!
//! With `cautious` (Liang et al., 2024) the update `m` is zeroed where
//! `m·n ≤ 0` and scaled by `numel / (kept + 1)`; with `stable_adamw` it is
//! divided by `max(1, √mean(g² / max(v, 10⁻¹⁶)))` (`v` before its update).
//!
//! As in the reference, the step is counted per group (`param_groups[i]
//! ["step"]`, present from the first step on) and the state holds only
//! `exp_avg` and `exp_avg_sq`; `maximize` and `clip_lambda` are arguments
//! of the optimizer, not of a group, and not in the state_dict. The
//! reference negates (and decays) `p.grad` in place, which its caller can
//! see; ferroptim leaves the gradient alone.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::json::{is_false, is_zero};
use crate::kernels::{self, AdoptScalars, AdoptSlices, GradInputs};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{pto_betas, pto_learning_rate, pto_non_negative};

/// ADOPT over param groups.
pub type Adopt = Optim<AdoptConfig>;

/// ADOPT's hyperparameters: pytorch-optimizer's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adopt, AdoptConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Adopt::new([p.clone()], AdoptConfig { lr: 0.1, ..Default::default() })?;
/// for g in [2.0, 2.0] {
///     p.set_grad(Tensor::from_vec(vec![g], &[1])?)?;
///     opt.step()?;
/// }
/// // Step 1 only learns v = g² = 4; step 2 moves θ by lr·(1−β₁)·g/√v.
/// assert!((p.to_vec::<f64>()?[0] - (1.0 - 0.1 * 0.1 * 1.0)).abs() < 1e-15);
/// assert_eq!(opt.hyperparameter(0, "step"), Some(2.into()));
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdoptConfig {
    /// Learning rate (default 1e-3; 0 is allowed, as in the reference).
    pub lr: f64,
    /// The decays of the momentum (β₁) and the second moment (β₂), in [0, 1) (default (0.9, 0.9999)).
    pub betas: (f64, f64),
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decay θ directly (AdamW's decoupled decay) instead of adding `λ·θ` to the gradient (default false).
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `λ` per step, not `λ·lr` (default false).
    pub fixed_decay: bool,
    /// The floor of `√v` (default 1e-6).
    pub eps: f64,
    /// Cautious masking of the update (default false; in a group only when set, as in the reference).
    #[serde(skip_serializing_if = "is_false")]
    pub cautious: bool,
    /// StableAdamW's update scale (default false; in a group only when set).
    #[serde(skip_serializing_if = "is_false")]
    pub stable_adamw: bool,
    /// The group's step count (in a group from its first step on, as in the reference).
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u64,
    /// Ascend instead of descend (default false). An argument of the
    /// optimizer: every group has the defaults', and a load keeps it.
    #[serde(skip_serializing)]
    pub maximize: bool,
    /// The clip of the normalized gradient: pytorch-optimizer's
    /// `clip_lambda`, a function of the step whose default is `step ** 0.25`.
    /// Here the power law itself, `step ** p` with this `p` (default
    /// `Some(0.25)`), or `None` (JSON `null`) for no clipping. An argument
    /// of the optimizer, as `maximize`.
    #[serde(skip_serializing)]
    pub clip_lambda: Option<f64>,
}

impl Default for AdoptConfig {
    fn default() -> Self {
        AdoptConfig {
            lr: 1e-3,
            betas: (0.9, 0.9999),
            weight_decay: 0.0,
            weight_decouple: false,
            fixed_decay: false,
            eps: 1e-6,
            cautious: false,
            stable_adamw: false,
            step: 0,
            maximize: false,
            clip_lambda: Some(0.25),
        }
    }
}

/// ADOPT's per-parameter state, under pytorch-optimizer's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AdoptState {
    /// The momentum of the normalized gradient.
    pub exp_avg: Tensor,
    /// The second moment.
    pub exp_avg_sq: Tensor,
}

crate::param_state!(AdoptState {
    exp_avg: tensor,
    exp_avg_sq: tensor
});

crate::hyperparameters!(AdoptConfig {
    name: "ADOPT",
    reference: "pytorch-optimizer 4.1.0",
    keys_when_set: &["cautious", "stable_adamw", "step"],
    torch_flags: &["foreach"],
    optional_keys: &[],

    /// pytorch-optimizer's checks, in its order and with its messages.
    fn validate(&self) -> Result<()> {
        pto_learning_rate(self.lr)?;
        pto_betas(&[self.betas.0, self.betas.1])?;
        pto_non_negative("weight_decay", self.weight_decay)?;
        pto_non_negative("eps", self.eps)
    }

    fn inherit(&mut self, defaults: &Self) {
        self.keep_unsaved(defaults);
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.maximize = live.maximize;
        self.clip_lambda = live.clip_lambda;
    }
});

impl Algorithm for AdoptConfig {
    type State = AdoptState;

    fn begin_step(&mut self) {
        // Saturating: a step count read from a checkpoint may be anything.
        self.step = self.step.saturating_add(1);
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> AdoptState {
        AdoptState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut AdoptState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let step = self.step.max(1);
        let h = AdoptScalars {
            inputs: GradInputs::new(
                self.lr,
                self.weight_decay,
                self.weight_decouple,
                self.fixed_decay,
                self.maximize,
            ),
            first: step == 1,
            eps: T::from_f64(self.eps),
            clip: T::from_f64(
                self.clip_lambda
                    .map_or(f64::INFINITY, |p| (step as f64).powf(p)),
            ),
            one_minus_beta1: T::from_f64(1.0 - beta1),
            neg_lr: T::from_f64(-self.lr),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            cautious: self.cautious,
            stable_adamw: self.stable_adamw,
        };
        let slices = AdoptSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<T>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
        };
        kernels::adopt(slices, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{optim, GroupSpec, Optimizer, Param, SparseGrad};
    use serde_json::json;

    fn two_groups(config: &str) -> (Box<dyn Optimizer>, Param, Param) {
        let (a, b) = (Param::zeros::<f64>(&[2]), Param::zeros::<f64>(&[2]));
        let groups = vec![GroupSpec::new([a.clone()]), GroupSpec::new([b.clone()])];
        (optim::build("adopt", config, groups).unwrap(), a, b)
    }

    #[test]
    fn the_step_is_counted_per_group_from_the_first_step_on() {
        let (mut opt, a, _) = two_groups("{}");
        // As in the reference, a group holds `step` only once it has stepped.
        let before = opt.state_dict();
        assert!(before.param_groups.iter().all(|g| !g.contains_key("step")));
        assert!(!opt.defaults_json().contains_key("step"));
        a.set_grad(Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        opt.step().unwrap();
        // Every group counts its steps, with or without gradients.
        for g in 0..2 {
            assert_eq!(opt.hyperparameter(g, "step"), Some(json!(2)));
        }
        // A state_dict saved before the first step loads, and restarts the count.
        opt.load_state_dict(&before).unwrap();
        assert_eq!(opt.hyperparameter(0, "step"), None);
    }

    #[test]
    fn a_refused_step_counts_nothing() {
        let (mut opt, a, _) = two_groups("{}");
        let rows = Tensor::from_vec(vec![1.0f64], &[1]).unwrap();
        a.set_sparse_grad(SparseGrad::new(vec![0], rows).unwrap())
            .unwrap();
        assert!(opt.step().is_err());
        assert_eq!(opt.hyperparameter(0, "step"), None);
        assert_eq!(opt.hyperparameter(1, "step"), None);
    }

    #[test]
    fn optimizer_arguments_stay_out_of_the_state_dict_and_survive_a_load() {
        let config = r#"{"maximize": true, "clip_lambda": null, "cautious": true}"#;
        let (mut opt, a, _) = two_groups(config);
        a.set_grad(Tensor::from_vec(vec![1.0f64, -1.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        let sd = opt.state_dict();
        let group = &sd.param_groups[0];
        assert!(!group.contains_key("maximize") && !group.contains_key("clip_lambda"));
        assert_eq!(group["cautious"], json!(true));
        assert!(!group.contains_key("stable_adamw"));
        // An optimizer built without them takes `cautious` (a group key) from
        // the file, and keeps its own optimizer-level arguments.
        let (mut plain, _, _) = two_groups("{}");
        plain.load_state_dict(&sd).unwrap();
        assert_eq!(plain.hyperparameter(0, "cautious"), Some(json!(true)));
        assert_eq!(plain.state_dict(), sd);
        let (mut live, _, _) = two_groups(config);
        live.load_state_dict(&plain.state_dict()).unwrap();
        assert_eq!(live.state_dict(), sd);
    }

    #[test]
    fn a_hostile_step_count_does_not_overflow() {
        let (mut opt, a, _) = two_groups("{}");
        let mut sd = opt.state_dict();
        sd.param_groups[0].insert("step".into(), json!(u64::MAX));
        opt.load_state_dict(&sd).unwrap();
        a.set_grad(Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        assert_eq!(opt.hyperparameter(0, "step"), Some(json!(u64::MAX)));
    }

    #[test]
    fn maximize_ascends() {
        let p = Param::from_vec(vec![1.0f64], &[1]).unwrap();
        let config = AdoptConfig {
            lr: 0.1,
            maximize: true,
            ..Default::default()
        };
        let mut opt = Adopt::new([p.clone()], config).unwrap();
        for _ in 0..2 {
            p.set_grad(Tensor::from_vec(vec![2.0f64], &[1]).unwrap())
                .unwrap();
            opt.step().unwrap();
        }
        assert!(p.to_vec::<f64>().unwrap()[0] > 1.0);
        // Every group inherits the optimizer's argument.
        let q = Param::zeros::<f64>(&[1]);
        opt.add_param_group(GroupSpec::new([q])).unwrap();
        assert!(opt.param_groups()[1].options.maximize);
    }
}
