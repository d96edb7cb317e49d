//! The kernels of the adaptive-rate optimizers that keep averages of
//! squares: Adadelta, Adagrad and RMSprop. They share [`AdaptiveScalars`].

use super::{lerp, run, signed_decayed, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

/// The scalars shared by the adaptive kernels, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveScalars<T> {
    /// The step's learning rate, negated (after any decay or bias correction).
    pub neg_lr: T,
    /// The L2 penalty, `None` when `weight_decay == 0`.
    pub weight_decay: Option<T>,
    /// `ε`.
    pub eps: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl<T: Element> AdaptiveScalars<T> {
    /// Rounds torch's Python-float scalars to `T`; a zero `weight_decay` means none.
    pub fn new(neg_lr: f64, weight_decay: f64, eps: f64, maximize: bool) -> Self {
        AdaptiveScalars {
            neg_lr: T::from_f64(neg_lr),
            weight_decay: (weight_decay != 0.0).then(|| T::from_f64(weight_decay)),
            eps: T::from_f64(eps),
            maximize,
        }
    }

    #[inline(always)]
    fn grad(&self, g: T, p: T) -> T {
        signed_decayed::<T>(g, p, self.maximize, self.weight_decay, false)
    }
}

slices!(
    /// Adadelta's slices.
    AdadeltaSlices, "adadelta" {
        /// The gradient.
        grad: read,
        /// The average of squared gradients.
        square_avg: write,
        /// The average of squared updates.
        acc_delta: write,
    }
);

/// The scalars of one Adadelta step.
#[derive(Clone, Copy, Debug)]
pub struct AdadeltaScalars<T> {
    /// The shared ones (`neg_lr` is `−lr`).
    pub adaptive: AdaptiveScalars<T>,
    /// `ρ`.
    pub rho: T,
    /// `1 − ρ`.
    pub one_minus_rho: T,
}

/// One Adadelta step: `v ← ρ·v + (1−ρ)·g²`, `Δ ← √(a + ε)/√(v + ε)·g`,
/// `a ← ρ·a + (1−ρ)·Δ²`, `θ ← θ − lr·Δ`.
pub fn adadelta<T: Element>(slices: AdadeltaSlices<'_, T>, h: &AdadeltaScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<AdadeltaSlices<'_, T>> for AdadeltaScalars<T> {
    #[inline(always)]
    fn run(&self, s: AdadeltaSlices<'_, T>) {
        let (h, rho, one_minus_rho) = (&self.adaptive, self.rho, self.one_minus_rho);
        for (((p, &g), v), a) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.square_avg.iter_mut())
            .zip(s.acc_delta.iter_mut())
        {
            let g = h.grad(g, *p);
            *v = (one_minus_rho * g).mul_add(g, *v * rho);
            let std = (*v + h.eps).sqrt();
            let delta = ((*a + h.eps).sqrt() / std) * g;
            *a = (one_minus_rho * delta).mul_add(delta, *a * rho);
            *p = delta.mul_add(h.neg_lr, *p);
        }
    }
}

slices!(
    /// Adagrad's slices.
    AdagradSlices, "adagrad" {
        /// The gradient.
        grad: read,
        /// The sum of squared gradients.
        sum: write,
    }
);

/// One dense Adagrad step: `s ← s + g²`, `θ ← θ − clr·g/(√s + ε)` with
/// `clr = lr/(1 + (t−1)·lr_decay)` (`h.neg_lr` is `−clr`).
pub fn adagrad<T: Element>(slices: AdagradSlices<'_, T>, h: &AdaptiveScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<AdagradSlices<'_, T>> for AdaptiveScalars<T> {
    #[inline(always)]
    fn run(&self, s: AdagradSlices<'_, T>) {
        for ((p, &g), sum) in s.param.iter_mut().zip(s.grad).zip(s.sum.iter_mut()) {
            let g = self.grad(g, *p);
            *sum = g.mul_add(g, *sum);
            *p = *p + (self.neg_lr * g) / (sum.sqrt() + self.eps);
        }
    }
}

slices!(
    /// RMSprop's slices.
    RmspropSlices, "rmsprop" {
        /// The gradient.
        grad: read,
        /// The average of squared gradients.
        square_avg: write,
        /// The average of gradients, when centered.
        grad_avg: optional,
        /// The momentum buffer, when momentum > 0.
        momentum_buffer: optional,
    }
);

/// The scalars of one RMSprop step.
#[derive(Clone, Copy, Debug)]
pub struct RmspropScalars<T> {
    /// The shared ones (`neg_lr` is `−lr`).
    pub adaptive: AdaptiveScalars<T>,
    /// `α`.
    pub alpha: T,
    /// `1 − α`.
    pub one_minus_alpha: T,
    /// The momentum factor `μ` (used with a momentum buffer).
    pub momentum: T,
}

/// One RMSprop step: `v ← α·v + (1−α)·g²`; centered: `ḡ ← lerp(ḡ, g, 1−α)`,
/// `d ← √(v − ḡ²) + ε`, else `d ← √v + ε`; with momentum `b ← μ·b + g/d`,
/// `θ ← θ − lr·b`, else `θ ← θ − lr·g/d`.
pub fn rmsprop<T: Element>(slices: RmspropSlices<'_, T>, h: &RmspropScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<RmspropSlices<'_, T>> for RmspropScalars<T> {
    #[inline(always)]
    fn run(&self, s: RmspropSlices<'_, T>) {
        // One plain zipped loop per combination of buffers, so that each vectorises.
        let params = s.param.iter_mut().zip(s.grad).zip(s.square_avg.iter_mut());
        match (s.grad_avg, s.momentum_buffer) {
            (None, None) => {
                for ((p, &g), v) in params {
                    self.element(p, g, v, None, None);
                }
            }
            (Some(ga), None) => {
                for (((p, &g), v), a) in params.zip(ga.iter_mut()) {
                    self.element(p, g, v, Some(a), None);
                }
            }
            (None, Some(buf)) => {
                for (((p, &g), v), b) in params.zip(buf.iter_mut()) {
                    self.element(p, g, v, None, Some(b));
                }
            }
            (Some(ga), Some(buf)) => {
                for ((((p, &g), v), a), b) in params.zip(ga.iter_mut()).zip(buf.iter_mut()) {
                    self.element(p, g, v, Some(a), Some(b));
                }
            }
        }
    }
}

impl<T: Element> RmspropScalars<T> {
    /// RMSprop on one element; `grad_avg` when centered, `buffer` with momentum.
    #[inline(always)]
    fn element(
        &self,
        p: &mut T,
        g: T,
        v: &mut T,
        grad_avg: Option<&mut T>,
        buffer: Option<&mut T>,
    ) {
        let h = &self.adaptive;
        let g = h.grad(g, *p);
        *v = (self.one_minus_alpha * g).mul_add(g, *v * self.alpha);
        let avg = match grad_avg {
            Some(a) => {
                *a = lerp(*a, g, self.one_minus_alpha);
                (-*a).mul_add(*a, *v).sqrt()
            }
            None => v.sqrt(),
        } + h.eps;
        *p = match buffer {
            Some(b) => {
                *b = *b * self.momentum + g / avg;
                b.mul_add(h.neg_lr, *p)
            }
            None => *p + (h.neg_lr * g) / avg,
        };
    }
}
