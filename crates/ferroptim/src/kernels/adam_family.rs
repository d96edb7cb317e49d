//! The kernels of Adam and its relatives: Adam (AMSGrad, AdamW), Adamax,
//! NAdam and RAdam. They share their moment updates and the scalars those
//! take ([`Moments`], one constructor for all four).

use super::{lerp, run_split, signed_decayed, slices, tail_constant, Loop};
use crate::error::Result;
use crate::tensor::{Element, Storage};

/// The scalars every Adam-family step shares, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct Moments<T> {
    /// `1 − β₁`, the weight of `exp_avg.lerp_(grad, 1 − β₁)`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// The L2 penalty added to the gradient, `None` when off or decoupled.
    pub weight_decay: Option<T>,
    /// `1 − lr·λ`, the decoupled (AdamW) decay factor, `None` when off or coupled.
    pub decay: Option<T>,
    /// `ε`.
    pub eps: T,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Whether these are the scalars of torch's scalar loop (the last
    /// elements of a 16-bit tensor, see [`add_alpha`](super::add_alpha)).
    pub tail: bool,
}

impl<T: Element> Moments<T> {
    /// torch's Python floats rounded to `T`. Weight decay `λ` is applied as
    /// torch's Adam family applies it: decoupled, `θ ← θ·(1 − lr·λ)`
    /// (AdamW's `param.mul_(1 − lr·λ)`); else an L2 penalty added to the
    /// gradient; neither when `λ = 0`.
    pub fn new(
        lr: f64,
        (beta1, beta2): (f64, f64),
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
        maximize: bool,
    ) -> Self {
        let (decay, weight_decay) = match (weight_decay != 0.0, decoupled) {
            (false, _) => (None, None),
            (true, true) => (Some(T::from_f64(1.0 - lr * weight_decay)), None),
            (true, false) => (None, Some(T::from_f64(weight_decay))),
        };
        Moments {
            one_minus_beta1: T::from_f64(1.0 - beta1),
            beta2: T::from_f64(beta2),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            weight_decay,
            decay,
            eps: T::from_f64(eps),
            maximize,
            tail: false,
        }
    }

    /// The start of every update of one element: the parameter after any
    /// decoupled decay, and the gradient after sign and L2 penalty, each a
    /// tensor of the parameter's dtype `S` in torch.
    #[inline(always)]
    fn inputs<S: Storage<Math = T>>(&self, p: T, g: T) -> (T, T) {
        let p = self.decay.map_or(p, |decay| S::round(p * decay));
        let g = signed_decayed::<S>(g, p, self.maximize, self.weight_decay, self.tail);
        (p, g)
    }

    /// Every element of `s` through Adam's inputs and moment updates, then
    /// `finish(θ, g, m, v)` for the new parameter (NAdam's and RAdam's updates).
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: MomentSlices<'_, S>, finish: impl Fn(T, T, T, T) -> T) {
        let moments = s.exp_avg.iter_mut().zip(s.second.iter_mut());
        for ((p, &g), (m, v)) in s.param.iter_mut().zip(s.grad).zip(moments) {
            let (x, g) = self.inputs::<S>(p.load(), g.load());
            self.update::<S>(m, v, g);
            *p = S::store(finish(x, g, m.load(), v.load()));
        }
    }

    /// These scalars with `tail` set.
    #[inline(always)]
    fn with_tail(&self, tail: bool) -> Self {
        Moments { tail, ..*self }
    }

    /// Adam's moment updates of one element, in torch's order:
    /// `m ← lerp(m, g, 1−β₁)`, then `v ← β₂·v + (1−β₂)·g²`
    /// (`exp_avg_sq.mul_(β₂).addcmul_(g, g, 1−β₂)`: torch's addcmul fuses
    /// the last multiply-add; in a 16-bit dtype `β₂·v` is rounded first).
    #[inline(always)]
    fn update<S: Storage<Math = T>>(&self, m: &mut S, v: &mut S, g: T) {
        *m = S::store(lerp(m.load(), g, self.one_minus_beta1));
        let decayed = S::round(v.load() * self.beta2);
        *v = S::store((self.one_minus_beta2 * g).mul_add(g, decayed));
    }
}

slices!(
    /// Adam's slices.
    AdamSlices, "adam" {
        /// The gradient.
        grad: read,
        /// The first moment.
        exp_avg: write,
        /// The second moment.
        exp_avg_sq: write,
        /// The running maximum of the second moment (AMSGrad).
        max_exp_avg_sq: optional,
    }
);

/// The scalars of one Adam step.
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars<T> {
    /// The shared ones.
    pub moments: Moments<T>,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: T,
    /// `−lr / (1 − β₁ᵗ)`.
    pub neg_step_size: T,
}

/// One Adam step:
/// `m ← lerp(m, g, 1−β₁)`, `v ← β₂·v + (1−β₂)·g²`, `v̂ ← max(v̂, v)` (AMSGrad),
/// `p ← p − (lr/(1−β₁ᵗ))·m / (√v / √(1−β₂ᵗ) + ε)`.
///
/// In a 16-bit dtype each of torch's tensor operations is rounded: `√v`,
/// its quotient by `√(1−β₂ᵗ)`, and the sum with `ε` (itself rounded to the
/// dtype; `denom`), then `addcdiv`.
pub fn adam<S: Storage>(slices: AdamSlices<'_, S>, h: &AdamScalars<S::Math>) -> Result<()> {
    let tail = AdamScalars {
        moments: h.moments.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<AdamSlices<'_, S>> for AdamScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AdamSlices<'_, S>) {
        tail_constant!(self.moments.tail, each(s))
    }
}

impl<T: Element> AdamScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: AdamSlices<'_, S>) {
        // One plain zipped loop with AMSGrad's maximum and one without, so
        // that each vectorises (an index per slice, or the Option matched per
        // element, kept the 16-bit loop scalar).
        let elements = s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.exp_avg.iter_mut().zip(s.exp_avg_sq.iter_mut()));
        match s.max_exp_avg_sq {
            Some(max) => {
                for (((p, g), (m, v)), max) in elements.zip(max.iter_mut()) {
                    self.element(p, *g, m, v, Some(max));
                }
            }
            None => {
                for ((p, g), (m, v)) in elements {
                    self.element(p, *g, m, v, None);
                }
            }
        }
    }

    /// Adam on one element stored as `S`; `max` with AMSGrad.
    #[inline(always)]
    fn element<S: Storage<Math = T>>(
        &self,
        p: &mut S,
        g: S,
        m: &mut S,
        v: &mut S,
        max: Option<&mut S>,
    ) {
        let h = &self.moments;
        let (x, g) = h.inputs::<S>(p.load(), g.load());
        h.update::<S>(m, v, g);
        let (m, v) = (m.load(), v.load());
        let v = match max {
            Some(max) => {
                // Exact: the larger of two values of the dtype.
                *max = S::store(max.load().nan_max(v));
                max.load()
            }
            None => v,
        };
        // `add_(eps)`: a Python scalar added to a 16-bit tensor is first
        // rounded to its dtype.
        let eps = S::round(h.eps);
        let denom = S::round(S::round(S::round(v.sqrt()) / self.bias_correction2_sqrt) + eps);
        *p = S::store(x + (self.neg_step_size * m) / denom);
    }
}

/// The scalars of one step of torch's fused CPU Adam (`fused=True`), and
/// AMP's `grad_scale` (each gradient is divided by it first).
#[derive(Clone, Copy, Debug)]
pub struct FusedAdamScalars<T>(pub AdamScalars<T>, pub Option<T>);

/// The block of torch's fused CPU Adam whose multiple its last elements
/// are not: its explicit vector loop takes whole `Vectorized<scalar_t>`s,
/// and GCC vectorises its scalar remainder again, 256 bits at a time (8
/// `f32`, 4 `f64`), so only the last `n % block` elements run as scalar
/// code, where the compiler fuses `β₂·v + (1−β₂)·g²` the other way
/// (measured element by element on torch 2.15's AVX-512 build).
pub fn fused_block(dtype: crate::Dtype) -> usize {
    32 / dtype.size().max(4)
}

/// One step of torch's fused CPU Adam (`_fused_adam_`/`_fused_adamw_`,
/// `aten/src/ATen/native/cpu/FusedAdamKernel.cpp`): every value loaded into
/// the type torch computes in (`float` for the 16-bit types), the whole
/// update computed there, and each stored value rounded once — the moments
/// that the parameter's update reads are the unrounded ones. Its arithmetic
/// is not the single-tensor path's: the L2 penalty and `β₂·v + (1−β₂)·g²`
/// are written as separate multiplies and adds, which the compiler fuses
/// differently in the vector loop (`fma((1−β₂)·g, g, β₂·v)`) and in the
/// scalar loop over the last `n % block` elements (`fma(v, β₂, (1−β₂)·g·g)`,
/// measured on the fixtures; [`fused_block`]).
pub fn adam_fused<S: Storage>(
    slices: AdamSlices<'_, S>,
    h: &FusedAdamScalars<S::Math>,
) -> Result<()> {
    let mut tail = *h;
    tail.0.moments.tail = true;
    super::run_blocks(slices, fused_block(S::DTYPE), h, &tail)
}

impl<S: Storage> Loop<AdamSlices<'_, S>> for FusedAdamScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AdamSlices<'_, S>) {
        tail_constant!(self.0.moments.tail, each(s))
    }
}

impl<T: Element> FusedAdamScalars<T> {
    /// The same two loops as [`AdamScalars`]'s: written out, not passed a
    /// closure (one capturing the scalars kept the bf16 loop scalar,
    /// 14 -> 125 ms on 1 x 10M).
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: AdamSlices<'_, S>) {
        let elements = s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.exp_avg.iter_mut().zip(s.exp_avg_sq.iter_mut()));
        match s.max_exp_avg_sq {
            Some(max) => {
                for (((p, g), (m, v)), max) in elements.zip(max.iter_mut()) {
                    self.element(p, *g, m, v, Some(max));
                }
            }
            None => {
                for ((p, g), (m, v)) in elements {
                    self.element(p, *g, m, v, None);
                }
            }
        }
    }

    #[inline(always)]
    fn element<S: Storage<Math = T>>(
        &self,
        p: &mut S,
        g: S,
        m: &mut S,
        v: &mut S,
        max: Option<&mut S>,
    ) {
        let h = &self.0.moments;
        let mut x = p.load();
        let g = super::fused_grad(g.load(), x, self.1, h.maximize, h.weight_decay);
        if let Some(decay) = h.decay {
            x = x * decay;
        }
        let m_new = lerp(m.load(), g, h.one_minus_beta1);
        let v_new = if h.tail {
            v.load().mul_add(h.beta2, (h.one_minus_beta2 * g) * g)
        } else {
            (h.one_minus_beta2 * g).mul_add(g, v.load() * h.beta2)
        };
        *m = S::store(m_new);
        *v = S::store(v_new);
        let v_max = match max {
            Some(max) => {
                let larger = max.load().nan_max(v_new);
                *max = S::store(larger);
                larger
            }
            None => v_new,
        };
        let denom = v_max.sqrt() / self.0.bias_correction2_sqrt + h.eps;
        *p = S::store(x + (self.0.neg_step_size * m_new) / denom);
    }
}

slices!(
    /// The slices of Adamax, NAdam and RAdam: two moments.
    MomentSlices, "moments" {
        /// The gradient.
        grad: read,
        /// The first moment (`exp_avg`).
        exp_avg: write,
        /// The second moment (`exp_avg_sq`; Adamax's `exp_inf`).
        second: write,
    }
);

/// The scalars of one Adamax step.
#[derive(Clone, Copy, Debug)]
pub struct AdamaxScalars<T> {
    /// The shared ones (Adamax's weight decay is an L2 penalty).
    pub moments: Moments<T>,
    /// `−lr / (1 − β₁ᵗ)`.
    pub neg_lr: T,
}

/// One Adamax step: `m ← lerp(m, g, 1−β₁)`, `u ← max(β₂·u, |g| + ε)`,
/// `θ ← θ − (lr/(1−β₁ᵗ))·m/u`. In 16 bits torch rounds `β₂·u` and
/// `|g| + ε` (`ε` rounded to the dtype first).
pub fn adamax<S: Storage>(slices: MomentSlices<'_, S>, h: &AdamaxScalars<S::Math>) -> Result<()> {
    let tail = AdamaxScalars {
        moments: h.moments.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<MomentSlices<'_, S>> for AdamaxScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: MomentSlices<'_, S>) {
        tail_constant!(self.moments.tail, each(s))
    }
}

impl<T: Element> AdamaxScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: MomentSlices<'_, S>) {
        let h = &self.moments;
        let eps = S::round(h.eps);
        for (((p, &g), m), u) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.exp_avg.iter_mut())
            .zip(s.second.iter_mut())
        {
            let (x, g) = h.inputs::<S>(p.load(), g.load());
            *m = S::store(lerp(m.load(), g, h.one_minus_beta1));
            *u = S::store(S::round(u.load() * h.beta2).nan_max(S::round(g.abs() + eps)));
            *p = S::store(x + (self.neg_lr * m.load()) / u.load());
        }
    }
}

/// The scalars of one NAdam step.
#[derive(Clone, Copy, Debug)]
pub struct NadamScalars<T> {
    /// The shared ones.
    pub moments: Moments<T>,
    /// `1 − β₂ᵗ`.
    pub bias_correction2: T,
    /// `−lr·(1 − μ_t)/(1 − Π_t)`, the weight of `g/d`.
    pub grad_coef: T,
    /// `−lr·μ_{t+1}/(1 − Π_t·μ_{t+1})`, the weight of `m/d`.
    pub exp_avg_coef: T,
}

/// One NAdam step, in torch's order: Adam's moment updates, then
/// `d = √(v/(1−β₂ᵗ)) + ε` and two `addcdiv`s (not fused), `g/d` then `m/d`.
/// In 16 bits torch rounds the quotient, the root, `d`, and the parameter
/// between the two `addcdiv`s.
pub fn nadam<S: Storage>(slices: MomentSlices<'_, S>, h: &NadamScalars<S::Math>) -> Result<()> {
    let tail = NadamScalars {
        moments: h.moments.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<MomentSlices<'_, S>> for NadamScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: MomentSlices<'_, S>) {
        tail_constant!(self.moments.tail, each(s))
    }
}

impl<T: Element> NadamScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: MomentSlices<'_, S>) {
        let eps = S::round(self.moments.eps);
        self.moments.each(s, |x, g, m, v| {
            let denom = S::round(S::round(S::round(v / self.bias_correction2).sqrt()) + eps);
            let x = S::round(x + (self.grad_coef * g) / denom);
            x + (self.exp_avg_coef * m) / denom
        });
    }
}

/// The scalars of one RAdam step.
#[derive(Clone, Copy, Debug)]
pub struct RadamScalars<T> {
    /// The shared ones.
    pub moments: Moments<T>,
    /// `1 − β₁ᵗ`.
    pub bias_correction1: T,
    /// `lr`.
    pub lr: T,
    /// `(√(1 − β₂ᵗ), r_t)` when the variance is tractable (ρ_t > 5), else `None`.
    pub rectification: Option<(T, T)>,
}

/// One RAdam step, in torch's order: Adam's moment updates, `m̂ = m/(1−β₁ᵗ)`,
/// then `θ ← θ − ((m̂·lr)·((1/(√v + ε))·√(1−β₂ᵗ)))·r_t` when rectified
/// (`bc2**0.5 / denom` is a reciprocal times a scalar in torch) and
/// `θ ← θ − m̂·lr` otherwise.
///
/// In 16 bits torch rounds every tensor it makes on the way: `m̂`, `m̂·lr`,
/// `√v`, `√v + ε`, its reciprocal, times `√(1−β₂ᵗ)`, the product, and
/// times `r_t`.
pub fn radam<S: Storage>(slices: MomentSlices<'_, S>, h: &RadamScalars<S::Math>) -> Result<()> {
    let tail = RadamScalars {
        moments: h.moments.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<MomentSlices<'_, S>> for RadamScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: MomentSlices<'_, S>) {
        tail_constant!(self.moments.tail, each(s))
    }
}

impl<T: Element> RadamScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: MomentSlices<'_, S>) {
        let eps = S::round(self.moments.eps);
        let r = S::round;
        self.moments.each(s, |x, _, m, v| {
            let corrected = r(r(m / self.bias_correction1) * self.lr);
            match self.rectification {
                Some((sqrt_bc2, rect)) => {
                    let adaptive = r(r(T::ONE / r(r(v.sqrt()) + eps)) * sqrt_bc2);
                    x - r(r(corrected * adaptive) * rect)
                }
                None => x - corrected,
            }
        });
    }
}
