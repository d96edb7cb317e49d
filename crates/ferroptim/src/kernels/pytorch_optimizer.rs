//! The kernels of ADOPT and AdEMAMix as pytorch-optimizer 4.1.0 runs them,
//! with the inputs and the two options they share:
//!
//! - [`GradInputs`]: `maximize_gradient` and `apply_weight_decay` (coupled,
//!   decoupled, or decoupled with a fixed rate);
//! - cautious masking (Liang et al., 2024, "Cautious Optimizers"): the
//!   update is kept only where it agrees in sign with the gradient, and
//!   rescaled by `n / (kept + 1)`;
//! - StableAdamW's scale (Wortsman et al., 2023): the update divided by
//!   `max(1, √mean(g² / max(v, 10⁻¹⁶)))`.
//!
//! Both options need a sum over the whole tensor before any element can be
//! updated, so with either a step is two passes: one that only reads (and
//! computes the new moments on the fly), then the update. Without them, one
//! pass. The per-tensor sums run on [`tree_sum`]'s blocks, so the bits do
//! not depend on the thread count.

use super::{lerp, run, slices, Loop, Slices};
use crate::error::Result;
use crate::parallel::tree_sum;
use crate::tensor::Element;

/// The gradient and parameter every pytorch-optimizer step starts from:
/// `g ← −g` if maximizing, then either `θ ← θ·(1 − λ·lr)` (decoupled; `1 − λ`
/// with `fixed_decay`) or `g ← g + λ·θ` (coupled), nothing when `λ = 0`.
#[derive(Clone, Copy, Debug)]
pub struct GradInputs<T> {
    /// Ascend instead of descend.
    pub maximize: bool,
    /// The coupled penalty `λ` (`None` when off or decoupled).
    pub l2: Option<T>,
    /// The decoupled factor (`None` when off or coupled).
    pub decay: Option<T>,
}

impl<T: Element> GradInputs<T> {
    /// pytorch-optimizer's `apply_weight_decay` arguments, its Python floats
    /// rounded to `T`.
    pub fn new(lr: f64, weight_decay: f64, decouple: bool, fixed: bool, maximize: bool) -> Self {
        let (l2, decay) = match (weight_decay != 0.0, decouple) {
            (false, _) => (None, None),
            (true, true) => {
                let rate = if fixed { 1.0 } else { lr };
                (None, Some(T::from_f64(1.0 - weight_decay * rate)))
            }
            (true, false) => (Some(T::from_f64(weight_decay)), None),
        };
        GradInputs {
            maximize,
            l2,
            decay,
        }
    }

    /// `(θ, g)` after sign and decay.
    #[inline(always)]
    fn apply(&self, p: T, g: T) -> (T, T) {
        let g = if self.maximize { -g } else { g };
        match (self.decay, self.l2) {
            (Some(decay), _) => (p * decay, g),
            // torch's grad.add_(p, alpha=λ): one fused multiply-add.
            (None, Some(l2)) => (p, p.mul_add(l2, g)),
            (None, None) => (p, g),
        }
    }
}

/// torch's `clamp_min`: NaN stays NaN.
#[inline(always)]
fn clamp_min<T: Element>(x: T, lo: T) -> T {
    if x < lo {
        lo
    } else {
        x
    }
}

/// What the two options need from a whole tensor: how many elements the
/// cautious mask keeps, and StableAdamW's sum of `g² / max(v, 10⁻¹⁶)`.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    kept: usize,
    ratio: f64,
}

impl std::ops::Add for Sums {
    type Output = Sums;

    fn add(self, other: Sums) -> Sums {
        Sums {
            kept: self.kept + other.kept,
            ratio: self.ratio + other.ratio,
        }
    }
}

impl Sums {
    /// One element: `u` the update the mask tests against `x`, `g` and `v`
    /// StableAdamW's gradient and second moment.
    #[inline(always)]
    fn of<T: Element>(u: T, x: T, g: T, v: T) -> Sums {
        Sums {
            kept: usize::from(u * x > T::ZERO),
            ratio: ((g * g) / clamp_min(v, T::from_f64(1e-16))).to_f64(),
        }
    }
}

/// The per-tensor scales of the two options, from a tensor's [`Sums`].
#[derive(Clone, Copy, Debug)]
struct Scales<T> {
    /// The cautious mask's weight of a kept element, `n / (kept + 1)`.
    mask: Option<T>,
    /// StableAdamW's divisor.
    rms: Option<T>,
}

impl<T: Element> Scales<T> {
    const NONE: Scales<T> = Scales {
        mask: None,
        rms: None,
    };

    fn new(sums: Sums, n: usize, cautious: bool, stable: bool) -> Self {
        // torch: mask.numel() / (mask.sum() + 1), i.e. reciprocal(sum + 1) * numel.
        let mask = cautious
            .then(|| T::from_f64(n as f64) * (T::ONE / (T::from_f64(sums.kept as f64) + T::ONE)));
        // torch: g.pow(2).div_(v.clip(min=1e-16)).mean().sqrt_().clip_(min=1.0).
        let rms = stable.then(|| {
            let r = T::from_f64(sums.ratio / n as f64).sqrt();
            clamp_min(r, T::ONE)
        });
        Scales { mask, rms }
    }
}

/// `u` kept where it agrees in sign with `x`, weighted by `w`
/// (`mask = (u·x > 0)`, `mask.mul_(w)`, `update.mul_(mask)`).
#[inline(always)]
fn masked<T: Element>(u: T, x: T, w: T) -> T {
    u * if u * x > T::ZERO { w } else { T::ZERO }
}

slices!(
    /// ADOPT's slices.
    AdoptSlices, "adopt" {
        /// The gradient.
        grad: read,
        /// The first moment (of the normalized gradient).
        exp_avg: write,
        /// The second moment.
        exp_avg_sq: write,
    }
);

/// The scalars of one ADOPT step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdoptScalars<T> {
    /// Sign and weight decay.
    pub inputs: GradInputs<T>,
    /// The group's first step: only `v ← v + g²`.
    pub first: bool,
    /// `ε`, the floor of `√v`.
    pub eps: T,
    /// The clip of the normalized gradient, `clip_lambda(step)` (∞ for
    /// none: clipping to ±∞ changes no value, NaN included).
    pub clip: T,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `−lr`.
    pub neg_lr: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// Cautious masking.
    pub cautious: bool,
    /// StableAdamW's scale (with `v` before this step's update).
    pub stable_adamw: bool,
}

impl<T: Element> AdoptScalars<T> {
    /// `g / max(√v, ε)`, clipped to `±clip`, and the new first moment.
    #[inline(always)]
    fn moments(&self, m: T, g: T, v: T) -> (T, T) {
        let normed = g / clamp_min(v.sqrt(), self.eps);
        // foreach maximum_(−c) then minimum_(c): NaN stays.
        let c = self.clip;
        let normed = if normed < -c {
            -c
        } else if normed > c {
            c
        } else {
            normed
        };
        (normed, lerp(m, normed, self.one_minus_beta1))
    }
}

/// One ADOPT step. On the group's first step `θ` is only decayed and
/// `v ← v + g²`; after it, `n = clip(g / max(√v, ε))`, `m ← lerp(m, n, 1−β₁)`,
/// `θ ← θ − lr·u` with `u = m` (masked, scaled by the options), then
/// `v ← β₂·v + (1−β₂)·g²`.
pub fn adopt<T: Element>(slices: AdoptSlices<'_, T>, h: &AdoptScalars<T>) -> Result<()> {
    let scales = if !h.first && (h.cautious || h.stable_adamw) {
        slices.check()?;
        let read = (
            &*slices.param,
            slices.grad,
            &*slices.exp_avg,
            &*slices.exp_avg_sq,
        );
        let sums = tree_sum(read, |(p, g, m, v)| {
            let mut sums = Sums::default();
            for (((&p, &g), &m), &v) in p.iter().zip(g).zip(m).zip(v) {
                let (_, g) = h.inputs.apply(p, g);
                let (normed, m) = h.moments(m, g, v);
                sums = sums + Sums::of(m, normed, g, v);
            }
            sums
        });
        Scales::new(sums, slices.param.len(), h.cautious, h.stable_adamw)
    } else {
        Scales::NONE
    };
    run(slices, &AdoptStep { h: *h, scales })
}

/// A step's scalars by value, so that they stay in registers (a load
/// through a reference held in a struct could alias the slices written).
struct AdoptStep<T> {
    h: AdoptScalars<T>,
    scales: Scales<T>,
}

impl<T: Element> Loop<AdoptSlices<'_, T>> for AdoptStep<T> {
    #[inline(always)]
    fn run(&self, s: AdoptSlices<'_, T>) {
        let h = self.h;
        if h.first {
            // exp_avg_sq.addcmul_(g, g); nothing else moves but the decay.
            for ((p, &g), v) in s.param.iter_mut().zip(s.grad).zip(s.exp_avg_sq.iter_mut()) {
                let (x, g) = h.inputs.apply(*p, g);
                *p = x;
                *v = g.mul_add(g, *v);
            }
            return;
        }
        // One loop per combination of the options, so that each is a
        // straight-line (vectorizable) body.
        match (self.scales.mask, self.scales.rms) {
            (None, None) => self.each(s, |m, _| m),
            (Some(w), None) => self.each(s, |m, n| masked(m, n, w)),
            (None, Some(rms)) => self.each(s, |m, _| m / rms),
            (Some(w), Some(rms)) => self.each(s, |m, n| masked(m, n, w) / rms),
        }
    }
}

impl<T: Element> AdoptStep<T> {
    /// Every element after the first step, with `update(m, n)` the update
    /// made of the new momentum and the normalized gradient.
    #[inline(always)]
    fn each(&self, s: AdoptSlices<'_, T>, update: impl Fn(T, T) -> T) {
        let h = self.h;
        let moments = s.exp_avg.iter_mut().zip(s.exp_avg_sq.iter_mut());
        for ((p, &g), (m, v)) in s.param.iter_mut().zip(s.grad).zip(moments) {
            let (x, g) = h.inputs.apply(*p, g);
            let (normed, new_m) = h.moments(*m, g, *v);
            *m = new_m;
            *p = update(new_m, normed).mul_add(h.neg_lr, x);
            *v = (h.one_minus_beta2 * g).mul_add(g, *v * h.beta2);
        }
    }
}

slices!(
    /// AdEMAMix's slices.
    AdemamixSlices, "ademamix" {
        /// The gradient.
        grad: read,
        /// The fast first moment.
        exp_avg: write,
        /// The second moment.
        exp_avg_sq: write,
        /// The slow first moment.
        exp_avg_slow: write,
    }
);

/// The scalars of one AdEMAMix step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdemamixScalars<T> {
    /// Sign and weight decay.
    pub inputs: GradInputs<T>,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `1 − β₃(t)`, the slow moment's weight (scheduled).
    pub one_minus_beta3: T,
    /// `1 − β₁ᵗ`.
    pub bias_correction1: T,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: T,
    /// `ε`.
    pub eps: T,
    /// `α(t)`, the slow moment's weight in the update (scheduled).
    pub alpha: T,
    /// `−lr`.
    pub neg_lr: T,
    /// Cautious masking.
    pub cautious: bool,
    /// StableAdamW's scale (with `v` after this step's update).
    pub stable_adamw: bool,
}

impl<T: Element> AdemamixScalars<T> {
    /// The three new moments.
    #[inline(always)]
    fn moments(&self, g: T, m: T, v: T, slow: T) -> (T, T, T) {
        (
            lerp(m, g, self.one_minus_beta1),
            (self.one_minus_beta2 * g).mul_add(g, v * self.beta2),
            lerp(slow, g, self.one_minus_beta3),
        )
    }
}

/// One AdEMAMix step: `m ← lerp(m, g, 1−β₁)`, `v ← β₂·v + (1−β₂)·g²`,
/// `s ← lerp(s, g, 1−β₃)`, then `θ ← θ − lr·(m/(1−β₁ᵗ) + α·s) / (√v/√(1−β₂ᵗ) + ε)`
/// (`m` masked, and the update scaled, by the options).
pub fn ademamix<T: Element>(slices: AdemamixSlices<'_, T>, h: &AdemamixScalars<T>) -> Result<()> {
    let scales = if h.cautious || h.stable_adamw {
        slices.check()?;
        let read = (
            &*slices.param,
            slices.grad,
            &*slices.exp_avg,
            &*slices.exp_avg_sq,
            &*slices.exp_avg_slow,
        );
        let sums = tree_sum(read, |(p, g, m, v, slow)| {
            let mut sums = Sums::default();
            let moments = m.iter().zip(v).zip(slow);
            for ((&p, &g), ((&m, &v), &slow)) in p.iter().zip(g).zip(moments) {
                let (_, g) = h.inputs.apply(p, g);
                let (m, v, _) = h.moments(g, m, v, slow);
                sums = sums + Sums::of(m, g, g, v);
            }
            sums
        });
        Scales::new(sums, slices.param.len(), h.cautious, h.stable_adamw)
    } else {
        Scales::NONE
    };
    run(slices, &AdemamixStep { h: *h, scales })
}

/// A step's scalars by value, so that they stay in registers (a load
/// through a reference held in a struct could alias the slices written).
struct AdemamixStep<T> {
    h: AdemamixScalars<T>,
    scales: Scales<T>,
}

impl<T: Element> Loop<AdemamixSlices<'_, T>> for AdemamixStep<T> {
    #[inline(always)]
    fn run(&self, s: AdemamixSlices<'_, T>) {
        let (h, mask) = (self.h, self.scales.mask);
        // One loop per combination of the options (straight-line bodies).
        match (mask, self.scales.rms) {
            (None, None) => self.each(s, |m, _| m, |u, d, x| x + (h.neg_lr * u) / d),
            (Some(w), None) => {
                self.each(s, |m, g| masked(m, g, w), |u, d, x| x + (h.neg_lr * u) / d)
            }
            (_, Some(rms)) => self.each(
                s,
                |m, g| mask.map_or(m, |w| masked(m, g, w)),
                |u, d, x| ((u / d) / rms).mul_add(h.neg_lr, x),
            ),
        }
    }
}

impl<T: Element> AdemamixStep<T> {
    /// Every element, with `fast(m, g)` the fast momentum's part of the
    /// update and `apply(u, d, θ)` the new parameter.
    #[inline(always)]
    fn each(
        &self,
        s: AdemamixSlices<'_, T>,
        fast: impl Fn(T, T) -> T,
        apply: impl Fn(T, T, T) -> T,
    ) {
        let h = self.h;
        let moments = s.exp_avg.iter_mut().zip(s.exp_avg_sq.iter_mut());
        let moments = moments.zip(s.exp_avg_slow.iter_mut());
        for ((p, &g), ((m, v), slow)) in s.param.iter_mut().zip(s.grad).zip(moments) {
            let (x, g) = h.inputs.apply(*p, g);
            (*m, *v, *slow) = h.moments(g, *m, *v, *slow);
            let denom = v.sqrt() / h.bias_correction2_sqrt + h.eps;
            // updates = m / bc1 (masked first), then add_(slow, alpha=α).
            let u = fast(*m, g) / h.bias_correction1;
            // With StableAdamW: update.div_(d).div_(rms), p.add_(update, alpha=−lr);
            // without: p.addcdiv_(update, d, value=−lr), not fused.
            *p = apply(slow.mul_add(h.alpha, u), denom, x);
        }
    }
}
