//! Prodigy: Adam with a learned step size `d` (Mishchenko & Defazio, 2023,
//! "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"), as
//! prodigyopt 1.1.2 implements it.
//!
//! With the first group's `d`, `β₁`, `β₂`, `β₃ = √β₂` unless set, step `k`
//! and the largest lr of any group, `dlr = d·lr·√(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹)`
//! (the bias correction only with `use_bias_correction`), each parameter
//! with a gradient `g` (plus `λ·θ` for coupled decay), in a group of
//! nonzero lr:
//!
//! ```text
//! r ← β₃·r + (d/d₀)·dlr·gᵀ(θ₀ − θ)          summed over every parameter (r: d_numerator)
//! m ← β₁·m + d(1 − β₁)·g;   v ← β₂·v + d²(1 − β₂)·g²
//! s ← β₃·s + (d/d₀)·dlr·g                    ((d/d₀)·d with safeguard_warmup)
//! d̂ ← d_coef·r / Σ‖s‖₁;  d ← max(d, d̂) while d = d₀;  d_max ← max(d_max, d̂);  d ← min(d_max, d·growth_rate)
//! θ ← θ − λ·dlr·θ (decoupled);  θ ← θ − dlr·m / (√v + d·ε)    (β₁ = 0: dlr·d·g in place of dlr·m)
//! ```
//!
//! `s` and `θ₀` (`p0`) hold every `slice_p`-th element of the flattened
//! parameter; `p0` is a 0-d zero for a parameter that was all zeros. The
//! D estimate couples every parameter of every group, so a step is two
//! passes (see [`Algorithm::GATHERS`]): the moments, `s` and the sums, then
//! the new `d` and the parameter update. While `Σ‖s‖₁ = 0` (no gradient
//! yet, or only groups of lr 0) the step stops after the first pass, as in
//! the reference: the moments move, `d`, `k` and the steps do not.
//!
//! As the reference, a group of lr 0 takes no part in the estimate, and
//! still takes the second pass with the step's `dlr`: with `β₁ > 0` only
//! its decoupled decay moves it, with `β₁ = 0` its gradient over `d·ε`
//! does. Other differences from the reference: a group whose lr is neither
//! the largest nor 0 is an error before anything changes (the reference
//! raises halfway through its first pass); coupled weight decay is not
//! written back into the gradient (the reference adds `λ·θ` to `p.grad`);
//! `fsdp_in_use` (sharded parameters over `torch.distributed`) is refused,
//! and so is a `slice_p` below 1 (the reference fails at its first step, or
//! reads the tensor backwards).

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Hyperparameters, Totals};
use crate::error::{Error, Result};
use crate::group::ParamGroup;
use crate::kernels::{
    self, py_max, py_min, ProdigyApplyScalars, ProdigyApplySlices, ProdigyGatherScalars,
    ProdigyGatherSlices,
};
use crate::optimizer::Optim;
use crate::slot::{ParamMeta, ParamSlot};
use crate::state::{ParamState, ParamStateDict, StateEntries, StateValue};
use crate::tensor::{numel, Element, Tensor};
use crate::validate::{check_positive, check_unit_interval};

/// Prodigy over param groups.
pub type Prodigy = Optim<ProdigyConfig>;

/// Prodigy's hyperparameters: prodigyopt's arguments and defaults, and the
/// D estimate it keeps in every group (`d`, `d_max`, `d_numerator`, `k`,
/// and `d_denom`, `d_hat` from the first full step on).
///
/// ```
/// use ferroptim::{optim::{Prodigy, ProdigyConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64, -2.0], &[2])?;
/// let mut opt = Prodigy::new([p.clone()], ProdigyConfig::default())?;
/// for _ in 0..50 {
///     let v = p.to_vec::<f64>()?;
///     p.set_grad(Tensor::from_vec(v.iter().map(|x| 2.0 * x).collect(), &[2])?)?; // ∇‖θ‖²
///     opt.step()?;
/// }
/// // d grew from d0 = 1e-6 by many orders of magnitude, on its own.
/// assert!(opt.param_groups()[0].options.d() > 1e-3);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProdigyConfig {
    /// A multiplier of the learned step size (default 1; a group may have
    /// 0, and otherwise the largest lr of any group).
    pub lr: f64,
    /// The decays of the moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// The decay of the D estimate (default `None`: `√β₂`).
    pub beta3: Option<f64>,
    /// `ε`, times `d`, added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// The step size `d` (default `None`: `d0`).
    pub d: Option<f64>,
    /// The initial estimate of `d` (default 1e-6).
    pub d0: f64,
    /// The largest estimate so far (default `None`: `d0`).
    pub d_max: Option<f64>,
    /// The D estimate's numerator `r` (default 0).
    pub d_numerator: f64,
    /// The multiplier of the estimate (default 1).
    pub d_coef: f64,
    /// The group's step count (default 0).
    pub k: u64,
    /// The most `d` may grow by per step (default ∞).
    pub growth_rate: f64,
    /// Adam's bias correction of the step (default false).
    pub use_bias_correction: bool,
    /// AdamW's decoupled weight decay instead of an L2 term (default true).
    pub decouple: bool,
    /// Leave lr out of `s` during warm-up (default false).
    pub safeguard_warmup: bool,
    /// Sharded parameters (`torch.distributed`): must be false.
    pub fsdp_in_use: bool,
    /// Keep the estimate's state on every `slice_p`-th element (default 1).
    pub slice_p: usize,
    /// The last step's denominator `Σ‖s‖₁` (from the first full step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_denom: Option<f64>,
    /// The last step's estimate `d̂` (from the first full step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_hat: Option<f64>,
    /// What the current step read from every group; not an argument, never saved.
    #[serde(skip)]
    pub shared: SharedStep,
}

/// What a Prodigy step reads once from every group (the first group's
/// settings, the largest lr) and each group's passes use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SharedStep {
    /// The step size as the step began.
    pub d: f64,
    /// The step size after the estimate (the second pass's).
    pub new_d: f64,
    /// `d·lr·bias_correction`.
    pub dlr: f64,
    /// The first group's `β₁`, `β₂`, `β₃`.
    pub betas: (f64, f64, f64),
    /// The first group's `decouple`.
    pub decouple: bool,
    /// The first group's `d_numerator`, decayed by `β₃`.
    pub d_numerator: f64,
}

impl Default for ProdigyConfig {
    fn default() -> Self {
        ProdigyConfig {
            lr: 1.0,
            betas: (0.9, 0.999),
            beta3: None,
            eps: 1e-8,
            weight_decay: 0.0,
            d: None,
            d0: 1e-6,
            d_max: None,
            d_numerator: 0.0,
            d_coef: 1.0,
            k: 0,
            growth_rate: f64::INFINITY,
            use_bias_correction: false,
            decouple: true,
            safeguard_warmup: false,
            fsdp_in_use: false,
            slice_p: 1,
            d_denom: None,
            d_hat: None,
            shared: SharedStep::default(),
        }
    }
}

impl ProdigyConfig {
    /// The step size `d`.
    pub fn d(&self) -> f64 {
        self.d.unwrap_or(self.d0)
    }

    /// The largest estimate so far.
    pub fn d_max(&self) -> f64 {
        self.d_max.unwrap_or(self.d0)
    }
}

/// Prodigy's per-parameter state, under prodigyopt's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct ProdigyState {
    /// The number of steps taken (a Python int; 0 after a step that stopped early).
    pub step: f64,
    /// The D estimate's sum of gradients, on every `slice_p`-th element (1-D).
    pub s: Tensor,
    /// The parameter's first values on those elements (1-D), or a 0-d zero.
    pub p0: Tensor,
    /// The first moment (absent when `β₁ = 0`).
    pub exp_avg: Option<Tensor>,
    /// The second moment.
    pub exp_avg_sq: Tensor,
}

impl ParamState for ProdigyState {
    fn to_entries(&self) -> ParamStateDict {
        let mut entries = ParamStateDict::new();
        entries.insert("step".into(), StateValue::Int(self.step as i64));
        entries.insert("s".into(), StateValue::Tensor(self.s.clone()));
        entries.insert("p0".into(), StateValue::Tensor(self.p0.clone()));
        if let Some(m) = &self.exp_avg {
            entries.insert("exp_avg".into(), StateValue::Tensor(m.clone()));
        }
        entries.insert(
            "exp_avg_sq".into(),
            StateValue::Tensor(self.exp_avg_sq.clone()),
        );
        entries
    }

    fn from_entries(mut entries: StateEntries<'_>) -> Result<Self> {
        let state = ProdigyState {
            step: entries.step("step")?,
            s: entries.flat_tensor("s", false)?,
            p0: entries.flat_tensor("p0", true)?,
            exp_avg: entries.optional_tensor("exp_avg")?,
            exp_avg_sq: entries.tensor("exp_avg_sq")?,
        };
        entries.finish()?;
        Ok(state)
    }
}

crate::hyperparameters!(ProdigyConfig {
    name: "Prodigy",
    reference: "prodigyopt 1.1.2",
    keys_when_set: &["d_denom", "d_hat"],
    torch_flags: &[],
    optional_keys: &[],

    /// prodigyopt's checks, in its order and with its messages, then
    /// ferroptim's own: `slice_p` of at least 1, no `fsdp_in_use`.
    fn validate(&self) -> Result<()> {
        check_positive("d0", "Invalid d0 value", self.d0)?;
        check_positive("lr", "Invalid learning rate", self.lr)?;
        check_positive("eps", "Invalid epsilon value", self.eps)?;
        check_unit_interval("betas", "Invalid beta parameter at index 0", self.betas.0)?;
        check_unit_interval("betas", "Invalid beta parameter at index 1", self.betas.1)?;
        if self.slice_p == 0 {
            return Err(Error::hyper(
                "slice_p",
                "slice_p must be at least 1: the D estimate reads every slice_p-th element".into(),
            ));
        }
        if self.fsdp_in_use {
            return Err(Error::hyper(
                "fsdp_in_use",
                "fsdp_in_use is not supported: ferroptim's Prodigy sums its D estimate in one \
                 process, over the parameters it holds"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A group may also have an lr of 0 (it then takes no part in the estimate).
    fn validate_group(&self) -> Result<()> {
        if self.lr == 0.0 {
            let mut checked = self.clone();
            checked.lr = 1.0;
            return checked.validate();
        }
        self.validate()
    }

    fn resolve(&mut self) {
        self.d = Some(self.d());
        self.d_max = Some(self.d_max());
    }
});

impl ProdigyConfig {
    /// How many elements of a parameter of `numel` the estimate keeps.
    fn sliced(&self, numel: usize) -> usize {
        numel.div_ceil(self.slice_p.max(1))
    }
}

impl Algorithm for ProdigyConfig {
    type State = ProdigyState;
    const GATHERS: bool = true;

    /// The first group's settings and the largest lr, as the reference
    /// reads them; every group's lr must be that or 0.
    fn begin_gather<P: ParamSlot>(groups: &mut [ParamGroup<Self, P>]) -> Result<()> {
        let Some(first) = groups.first().map(|g| &g.options) else {
            return Ok(());
        };
        let lr = groups.iter().map(|g| g.options.lr).fold(first.lr, py_max);
        if let Some(group) = groups
            .iter()
            .position(|g| !(g.options.lr == lr || g.options.lr == 0.0))
        {
            return Err(Error::MixedGroupLr {
                optimizer: Self::NAME,
                group,
                lr: groups[group].options.lr,
                max: lr,
            });
        }
        let (beta1, beta2) = first.betas;
        let beta3 = first.beta3.unwrap_or_else(|| beta2.sqrt());
        let k = (first.k as f64) + 1.0;
        let bias_correction = if first.use_bias_correction {
            (1.0 - beta2.powf(k)).powf(0.5) / (1.0 - beta1.powf(k))
        } else {
            1.0
        };
        let d = first.d();
        let shared = SharedStep {
            d,
            new_d: d,
            dlr: d * lr * bias_correction,
            betas: (beta1, beta2, beta3),
            decouple: first.decouple,
            d_numerator: first.d_numerator * beta3,
        };
        for group in groups.iter_mut() {
            group.options.shared = shared;
        }
        Ok(())
    }

    fn init_state_from<T: Element>(&self, values: &[T], param: &ParamMeta<'_>) -> ProdigyState {
        let k = self.slice_p.max(1);
        let p0 = if values.iter().any(|&x| x != T::ZERO) {
            let sliced: Vec<T> = values.iter().step_by(k).copied().collect();
            let len = sliced.len();
            Tensor::from_vec(sliced, &[len]).unwrap_or_else(|_| Tensor::scalar(T::ZERO))
        } else {
            Tensor::scalar(T::ZERO)
        };
        ProdigyState {
            p0,
            ..self.init_state(param)
        }
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> ProdigyState {
        let sliced = self.sliced(numel(param.shape()));
        ProdigyState {
            step: 0.0,
            s: Tensor::zeros(param.dtype(), &[sliced]),
            p0: Tensor::zeros(param.dtype(), &[]),
            exp_avg: (self.shared.betas.0 > 0.0).then(|| param.zeros_like()),
            exp_avg_sq: param.zeros_like(),
        }
    }

    /// `s` and `p0` against `slice_p`, for the parameter's number of
    /// elements (`exp_avg_sq` has its shape).
    fn check_state(&self, state: &ProdigyState, index: usize) -> Result<()> {
        let numel = state.exp_avg_sq.numel();
        let sliced = self.sliced(numel);
        for (key, t, or_scalar) in [("s", &state.s, false), ("p0", &state.p0, true)] {
            if !(t.shape() == [sliced] || (or_scalar && t.shape().is_empty())) {
                return Err(Error::state(
                    format!("state[{index}].{key}"),
                    format!(
                        "has shape {:?}, expected [{sliced}]: one element in every slice_p = {} \
                         of the parameter's {numel}",
                        t.shape(),
                        self.slice_p,
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The moments, `s`, and this parameter's share of the estimate.
    fn gather<T: Element>(
        &self,
        param: &[T],
        grad: &[T],
        state: &mut ProdigyState,
    ) -> Result<Totals> {
        let sh = self.shared;
        let (beta1, beta2, beta3) = sh.betas;
        if beta1 > 0.0 && state.exp_avg.is_none() {
            // A state saved with β₁ = 0 (the reference would fail on the key).
            state.exp_avg = Some(state.exp_avg_sq.zeros_like());
        }
        // The reference's `if group_lr > 0.0` (a NaN lr takes no part either).
        if self.lr.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Ok([0.0; 2]);
        }
        let (d, dlr) = (sh.d, sh.dlr);
        let d_over_d0 = d / self.d0;
        let coupled = self.weight_decay != 0.0 && !sh.decouple;
        let h = ProdigyGatherScalars {
            l2: coupled.then(|| T::from_f64(self.weight_decay)),
            beta1: T::from_f64(beta1),
            exp_avg_weight: T::from_f64(d * (1.0 - beta1)),
            beta2: T::from_f64(beta2),
            exp_avg_sq_weight: T::from_f64(d * d * (1.0 - beta2)),
            beta3: T::from_f64(beta3),
            s_weight: T::from_f64(if self.safeguard_warmup {
                d_over_d0 * d
            } else {
                d_over_d0 * dlr
            }),
        };
        let scalar_p0 = state.p0.shape().is_empty();
        let p0_fill = if scalar_p0 {
            state.p0.as_slice::<T>()?[0]
        } else {
            T::ZERO
        };
        let slices = ProdigyGatherSlices {
            param,
            grad,
            exp_avg: match (&mut state.exp_avg, beta1 > 0.0) {
                (Some(m), true) => Some(m.as_slice_mut::<T>()?),
                _ => None,
            },
            exp_avg_sq: state.exp_avg_sq.as_slice_mut::<T>()?,
            s: state.s.as_slice_mut::<T>()?,
            p0: if scalar_p0 {
                None
            } else {
                Some(state.p0.as_slice::<T>()?)
            },
            p0_fill,
            slice_p: self.slice_p.max(1),
        };
        let (dot, abs) = kernels::prodigy_gather(slices, &h)?;
        Ok([d_over_d0 * dlr * dot, abs])
    }

    /// The new `d` from the totals, written to every group as the reference does.
    fn end_gather<P: ParamSlot>(groups: &mut [ParamGroup<Self, P>], totals: Totals) -> bool {
        let (Some(first), Some(last)) = (groups.first(), groups.last()) else {
            return false;
        };
        let d_denom = totals[1];
        if d_denom == 0.0 {
            return false;
        }
        let first = &first.options;
        let sh = first.shared;
        let d_numerator = sh.d_numerator + totals[0];
        let d_hat = first.d_coef * d_numerator / d_denom;
        let mut d = sh.d;
        // The reference compares with the last group's d0 (its loop variable).
        if d == last.options.d0 {
            d = py_max(d, d_hat);
        }
        let d_max = py_max(first.d_max(), d_hat);
        let d = py_min(d_max, d * first.growth_rate);
        for group in groups.iter_mut() {
            let o = &mut group.options;
            o.d_numerator = d_numerator;
            o.d_denom = Some(d_denom);
            o.d = Some(d);
            o.d_max = Some(d_max);
            o.d_hat = Some(d_hat);
            // Saturating: a count read from a checkpoint may be anything.
            o.k = o.k.saturating_add(1);
            o.shared.new_d = d;
        }
        true
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut ProdigyState,
    ) -> Result<()> {
        let sh = self.shared;
        let (d, dlr) = (sh.new_d, sh.dlr);
        let wd = self.weight_decay;
        let with_exp_avg = sh.betas.0 > 0.0;
        let h = ProdigyApplyScalars {
            l2: (wd != 0.0 && !sh.decouple).then(|| T::from_f64(wd)),
            decay: (wd != 0.0 && sh.decouple).then(|| T::from_f64(-wd * dlr)),
            d_eps: T::from_f64(d * self.eps),
            neg_step_size: T::from_f64(if with_exp_avg { -dlr } else { -dlr * d }),
        };
        let slices = ProdigyApplySlices {
            param,
            grad,
            exp_avg: match (&mut state.exp_avg, with_exp_avg) {
                (Some(m), true) => Some(m.as_slice_mut::<T>()?),
                _ => None,
            },
            exp_avg_sq: state.exp_avg_sq.as_slice::<T>()?,
        };
        kernels::prodigy_apply(slices, &h)?;
        state.step += 1.0;
        Ok(())
    }
}
