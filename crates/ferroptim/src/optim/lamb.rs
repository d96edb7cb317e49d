//! LAMB: layer-wise adaptive moments (You et al., 2020, "Large Batch
//! Optimization for Deep Learning: Training BERT in 76 minutes"), as
//! pytorch-optimizer 4.1.0's `Lamb` implements it.
//!
//! Adam's update, rescaled per tensor by a trust ratio. With group step
//! `t`, gradient `g`, decay `λ`:
//!
//! ```text
//! g ← g·min(max_grad_norm / (‖g‖_global + ε), 1)      (pre_norm)
//! θ ← θ·(1 − λ·lr)                                     (weight_decouple, the default)
//! m ← β₁·m + β₃·g      β₃ = 1 − β₁ (1 without grad_averaging)
//! v ← β₂·v + (1 − β₂)·g²
//! u ← m / (√v + ε)  (+ λ·θ when coupled)
//! r ← min(‖θ‖, 10) / (‖u‖ + ε)     (1 if a norm is 0, or with adam)
//! θ ← θ − s·r·u        s = lr / (1 − β₁ᵗ)  (lr with adam_debias)
//! ```
//!
//! With `rectify`, `s` carries RAdam's rectification `r_t` and `u` is the
//! rectified parameter `θ − s·m/(√v + ε)` (the reference measures the norm
//! of that, not of the step, and ignores a coupled weight decay); before the
//! variance is tractable (`n_sma < n_sma_threshold`) nothing moves but the
//! moments and the decay, or with `degenerated_to_sgd` the step is SGD's
//! on `m`. The state holds the last `weight_norm`, `adam_norm` and
//! `trust_ratio`, as in the reference.
//!
//! Differences from timm 1.0.31's `Lamb`, which the reference is not: timm
//! clips the gradients by the global norm always (`max_grad_norm` 1.0) and
//! as one tensor op, bias-corrects both moments inside the update, applies
//! the weight decay inside `u` (`u + λθ`, no decoupled form), clamps no
//! norm, and has `trust_clip` (LARC) and `always_adapt` (the ratio also
//! without decay); its trust ratio is 1 for parameters without weight decay.
//! ferroptim follows pytorch-optimizer's, as the issue asks.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::json::{is_false, is_zero};
use crate::kernels::{self, LambApplySlices, LambPath, LambScalars, LambSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::state::StateScalar;
use crate::tensor::{Element, Tensor};
use crate::validate::{pto_betas, pto_learning_rate, pto_non_negative};

/// LAMB over param groups.
pub type Lamb = Optim<LambConfig>;

/// LAMB's hyperparameters: pytorch-optimizer's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Lamb, LambConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![3.0f64, 4.0], &[2])?; // ‖θ‖ = 5
/// let mut opt = Lamb::new([p.clone()], LambConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![1.0, 0.0], &[2])?)?;
/// opt.step()?;
/// // Step 1: s = lr/(1 − β₁) = 1 and r = ‖θ‖/‖u‖, so the step s·r·u has
/// // the parameter's norm, 5, along g.
/// let v = p.to_vec::<f64>()?;
/// assert!((v[0] - (3.0 - 5.0)).abs() < 1e-4 && v[1] == 4.0);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LambConfig {
    /// Learning rate (default 1e-3; 0 is allowed, as in the reference).
    pub lr: f64,
    /// The decays of the two moments, in [0, 1) (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Decay θ directly (default true) instead of adding `λ·θ` to the update.
    pub weight_decouple: bool,
    /// With `weight_decouple`, decay by `λ` per step, not `λ·lr` (default false).
    pub fixed_decay: bool,
    /// RAdam's rectification of the step (default false).
    pub rectify: bool,
    /// The gradient's weight in the first moment is `1 − β₁` (default true), else 1.
    pub grad_averaging: bool,
    /// The norm the gradients are scaled to with `pre_norm` (default 1; 0
    /// for no scaling). The defaults' is used, as in the reference.
    pub max_grad_norm: f64,
    /// A trust ratio of 1 for every tensor: plain Adam (default false).
    pub adam: bool,
    /// Added to `√v` and to `‖u‖` (default 1e-6).
    pub eps: f64,
    /// The reference's choice of path (default `None`: its foreach path,
    /// unless `rectify`); `Some(false)` takes its per-parameter path. The
    /// two round differently, and ferroptim has both.
    pub foreach: Option<bool>,
    /// No bias correction of the step (default false; in a group only when set).
    #[serde(skip_serializing_if = "is_false")]
    pub adam_debias: bool,
    /// The group's step count (in a group from its first step on, as in the reference).
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u64,
    /// Scale the gradients by their global norm first (default false). An
    /// argument of the optimizer: every group has the defaults', and a load
    /// keeps it.
    #[serde(skip_serializing)]
    pub pre_norm: bool,
    /// With `rectify`, take SGD's step before the variance is tractable
    /// (default false). An argument of the optimizer, as `pre_norm`.
    #[serde(skip_serializing)]
    pub degenerated_to_sgd: bool,
    /// With `rectify`, the length of the moving average from which the
    /// variance is tractable (default 5; at least 4, where the rectification
    /// has a real value). An argument of the optimizer.
    #[serde(skip_serializing)]
    pub n_sma_threshold: u32,
    /// Ascend instead of descend (default false). An argument of the optimizer.
    #[serde(skip_serializing)]
    pub maximize: bool,
    /// This step's gradient scale from the global norm, set by the step
    /// (`pre_norm`); not an argument, never saved.
    #[serde(skip)]
    pub grad_scale: Option<f32>,
}

impl Default for LambConfig {
    fn default() -> Self {
        LambConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            weight_decay: 0.0,
            weight_decouple: true,
            fixed_decay: false,
            rectify: false,
            grad_averaging: true,
            max_grad_norm: 1.0,
            adam: false,
            eps: 1e-6,
            foreach: None,
            adam_debias: false,
            step: 0,
            pre_norm: false,
            degenerated_to_sgd: false,
            n_sma_threshold: 5,
            maximize: false,
            grad_scale: None,
        }
    }
}

/// LAMB's per-parameter state, under pytorch-optimizer's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct LambState {
    /// The first moment.
    pub exp_avg: Tensor,
    /// The second moment.
    pub exp_avg_sq: Tensor,
    /// The last step's `min(‖θ‖, 10)` (a 0-d tensor); none before a step moved θ.
    pub weight_norm: Option<StateScalar>,
    /// The last step's `‖u‖` (a 0-d tensor).
    pub adam_norm: Option<StateScalar>,
    /// The last step's trust ratio: a 0-d tensor, or the float 1.0 where
    /// the per-parameter path found a norm of 0.
    pub trust_ratio: Option<StateScalar>,
}

crate::param_state!(LambState {
    exp_avg: tensor,
    exp_avg_sq: tensor,
    weight_norm: optional_scalar,
    adam_norm: optional_scalar,
    trust_ratio: optional_scalar,
});

crate::hyperparameters!(LambConfig {
    name: "Lamb",
    reference: "pytorch-optimizer 4.1.0",
    keys_when_set: &["adam_debias", "step"],
    torch_flags: &[],
    optional_keys: &[],

    /// pytorch-optimizer's checks, in its order and with its messages, and
    /// one it lacks: a `n_sma_threshold` below 4 fails its step with a
    /// `math domain error` once `n_sma` lands in `[threshold, 4)`.
    fn validate(&self) -> Result<()> {
        pto_learning_rate(self.lr)?;
        pto_betas(&[self.betas.0, self.betas.1])?;
        pto_non_negative("weight_decay", self.weight_decay)?;
        pto_non_negative("max_grad_norm", self.max_grad_norm)?;
        pto_non_negative("eps", self.eps)?;
        if self.n_sma_threshold < 4 {
            return Err(Error::hyper(
                "n_sma_threshold",
                format!(
                    "n_sma_threshold must be at least 4, found {}: below it the \
                     rectification sqrt((n_sma - 4)·…) has no real value",
                    self.n_sma_threshold
                ),
            ));
        }
        Ok(())
    }

    fn inherit(&mut self, defaults: &Self) {
        self.keep_unsaved(defaults);
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.pre_norm = live.pre_norm;
        self.degenerated_to_sgd = live.degenerated_to_sgd;
        self.n_sma_threshold = live.n_sma_threshold;
        self.maximize = live.maximize;
    }
});

impl LambConfig {
    /// The step size `s` and whether the step moves θ along `m` at all, on
    /// which path: pytorch-optimizer's `get_rectify_step_size` and
    /// `apply_adam_debias`, in its Python float arithmetic.
    fn step_size(&self, step: u64) -> (f64, LambPath, bool) {
        let (beta1, beta2) = self.betas;
        let t = step as f64;
        let mut step_size = self.lr;
        let path = if self.rectify {
            let n_sma_max = 2.0 / (1.0 - beta2) - 1.0;
            let beta2_t = beta2.powf(t);
            let n_sma = n_sma_max - 2.0 * t * beta2_t / (1.0 - beta2_t);
            let (rt, path) = if n_sma >= f64::from(self.n_sma_threshold) {
                let r = (1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0) / n_sma
                    * n_sma_max
                    / (n_sma_max - 2.0);
                (r.sqrt(), LambPath::Rectified)
            } else if self.degenerated_to_sgd {
                (1.0, LambPath::Degenerated)
            } else {
                (-1.0, LambPath::Degenerated)
            };
            step_size *= rt;
            path
        } else if self.foreach == Some(false) {
            LambPath::PerParam
        } else {
            LambPath::Foreach
        };
        if !self.adam_debias {
            step_size /= 1.0 - beta1.powf(t);
        }
        // `if group['rectify'] and step_size <= 0: return` (NaN goes on).
        let moves = !(self.rectify && step_size <= 0.0);
        (step_size, path, moves)
    }
}

impl Algorithm for LambConfig {
    type State = LambState;

    fn needs_global_grad_norm(&self) -> bool {
        self.pre_norm && self.max_grad_norm != 0.0
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

    fn init_state(&self, param: &ParamMeta<'_>) -> LambState {
        LambState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            weight_norm: None,
            adam_norm: None,
            trust_ratio: None,
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut LambState,
    ) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let (step_size, path, moves) = self.step_size(self.step.max(1));
        let wd = self.weight_decay;
        let rate = if self.fixed_decay { 1.0 } else { self.lr };
        let coupled = !self.weight_decouple && wd > 0.0;
        let h = LambScalars {
            grad_scale: self
                .grad_scale
                .filter(|_| self.pre_norm)
                .map(|s| T::from_f64(f64::from(s))),
            maximize: self.maximize,
            decay: (self.weight_decouple && wd != 0.0).then(|| T::from_f64(1.0 - wd * rate)),
            l2: (coupled && matches!(path, LambPath::Foreach | LambPath::PerParam))
                .then(|| T::from_f64(wd)),
            beta1: T::from_f64(beta1),
            beta3: T::from_f64(if self.grad_averaging {
                1.0 - beta1
            } else {
                1.0
            }),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            eps: T::from_f64(self.eps),
            neg_step_size: T::from_f64(-step_size),
            path,
        };
        let mut slices = LambSlices {
            param,
            grad,
            exp_avg: state.exp_avg.as_slice_mut::<T>()?,
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
        };
        let trust = kernels::lamb_moments(&mut slices, &h, moves)?;
        let ratio = trust.and_then(|t| t.ratio).filter(|_| !self.adam);
        let apply = LambApplySlices {
            param: slices.param,
            exp_avg: slices.exp_avg,
            exp_avg_sq: slices.exp_avg_sq,
        };
        kernels::lamb_apply(apply, &h, ratio, moves)?;
        if let Some(t) = trust {
            state.weight_norm = Some(StateScalar::tensor(t.weight_norm));
            state.adam_norm = Some(StateScalar::tensor(t.adam_norm));
            state.trust_ratio = Some(match (t.ratio, path) {
                (Some(r), _) => StateScalar::tensor(r),
                (None, LambPath::Foreach) => StateScalar::tensor(T::ONE),
                (None, _) => StateScalar::Float(1.0),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{optim, GroupSpec, Optimizer, Param, StateValue};
    use serde_json::json;

    fn two_groups(config: &str) -> (Box<dyn Optimizer>, Param, Param) {
        let a = Param::from_vec(vec![1.0f64, -2.0], &[2]).unwrap();
        let b = Param::from_vec(vec![0.5f64, 3.0], &[2]).unwrap();
        let groups = vec![GroupSpec::new([a.clone()]), GroupSpec::new([b.clone()])];
        (optim::build("lamb", config, groups).unwrap(), a, b)
    }

    fn set(p: &Param, g: [f64; 2]) {
        p.set_grad(Tensor::from_vec(g.to_vec(), &[2]).unwrap())
            .unwrap();
    }

    #[test]
    fn pre_norm_scales_every_gradient_by_the_global_norm() {
        // ‖g‖_global = 10: with max_grad_norm 1 every gradient is divided by
        // ~10, and Adam's first step is scale-free, but its state is not.
        let (mut opt, a, b) = two_groups(r#"{"pre_norm": true}"#);
        set(&a, [6.0, 0.0]);
        set(&b, [0.0, 8.0]);
        opt.step().unwrap();
        let sd = opt.state_dict();
        let m = |i: usize| match &sd.state[&i]["exp_avg"] {
            StateValue::Tensor(t) => t.to_f64_vec(),
            other => panic!("{other:?}"),
        };
        let scale = f64::from((1.0f32 / (10.0f32 + 1e-6)) * 1.0);
        let beta3 = 1.0 - 0.9;
        assert_eq!(m(0), vec![(6.0 * scale) * beta3, 0.0]);
        assert_eq!(m(1), vec![0.0, (8.0 * scale) * beta3]);
        // Off by default: the moments see the raw gradients.
        let (mut plain, a, b) = two_groups("{}");
        set(&a, [6.0, 0.0]);
        set(&b, [0.0, 8.0]);
        plain.step().unwrap();
        let StateValue::Tensor(t) = &plain.state_dict().state[&0]["exp_avg"] else {
            unreachable!()
        };
        assert_eq!(t.to_f64_vec()[0], 6.0 * beta3);
    }

    #[test]
    fn the_norms_are_state_and_the_per_parameter_path_keeps_a_float() {
        for (config, float) in [("{}", false), (r#"{"foreach": false}"#, true)] {
            let (mut opt, a, b) = two_groups(config);
            set(&a, [1.0, 1.0]);
            set(&b, [0.0, 0.0]); // ‖u‖ = 0: a ratio of 1
            opt.step().unwrap();
            let sd = opt.state_dict();
            assert!(matches!(sd.state[&0]["trust_ratio"], StateValue::Tensor(_)));
            let one = &sd.state[&1]["trust_ratio"];
            assert_eq!(
                matches!(one, StateValue::Float(x) if *x == 1.0),
                float,
                "{one:?}"
            );
            // Both forms load back.
            let (mut other, _, _) = two_groups(config);
            other.load_state_dict(&sd).unwrap();
            assert_eq!(other.state_dict(), sd);
        }
    }

    #[test]
    fn rectify_moves_nothing_until_the_variance_is_tractable() {
        let (mut opt, a, _) = two_groups(r#"{"rectify": true, "lr": 0.1}"#);
        for _ in 0..5 {
            set(&a, [1.0, 1.0]);
            opt.step().unwrap();
        }
        // β₂ = 0.999: n_sma < 5 for the first steps; no norms are recorded.
        assert_eq!(a.to_vec::<f64>().unwrap(), vec![1.0, -2.0]);
        assert!(!opt.state_dict().state[&0].contains_key("trust_ratio"));
        let (mut sgd, a, _) = two_groups(r#"{"rectify": true, "degenerated_to_sgd": true}"#);
        set(&a, [1.0, 1.0]);
        sgd.step().unwrap();
        assert!(a.to_vec::<f64>().unwrap()[0] < 1.0);
    }

    #[test]
    fn optimizer_arguments_stay_out_of_the_state_dict() {
        let config =
            r#"{"pre_norm": true, "maximize": true, "n_sma_threshold": 6, "adam_debias": true}"#;
        let (mut opt, a, _) = two_groups(config);
        set(&a, [1.0, 1.0]);
        opt.step().unwrap();
        let sd = opt.state_dict();
        let group = &sd.param_groups[0];
        for key in [
            "pre_norm",
            "maximize",
            "n_sma_threshold",
            "degenerated_to_sgd",
            "grad_scale",
        ] {
            assert!(!group.contains_key(key), "{key}");
        }
        assert_eq!(group["adam_debias"], json!(true));
        assert_eq!(group["foreach"], json!(null));
        let (mut live, _, _) = two_groups(config);
        live.load_state_dict(&sd).unwrap();
        assert_eq!(live.state_dict(), sd);
    }

    #[test]
    fn a_threshold_below_four_is_refused() {
        let err = Lamb::new(
            [Param::zeros::<f64>(&[1])],
            LambConfig {
                n_sma_threshold: 3,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("n_sma_threshold"), "{err}");
    }
}
