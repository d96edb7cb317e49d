//! SGD's kernels: without momentum, and with a momentum buffer.

use super::{run, signed_decayed, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

/// The scalars of one SGD step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars<T> {
    /// `-lr`.
    pub neg_lr: T,
    /// The L2 penalty, `None` when `weight_decay == 0`.
    pub weight_decay: Option<T>,
    /// The momentum factor (used only by [`sgd_momentum`]).
    pub momentum: T,
    /// `1 - dampening`.
    pub one_minus_dampening: T,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// The buffer's first step: `b ← g` (torch's `clone` of the gradient).
    pub first: bool,
    /// LARS's per-tensor trust ratio, multiplying the decayed gradient
    /// (`None` for SGD).
    pub trust_ratio: Option<T>,
}

impl<T: Element> SgdScalars<T> {
    /// Rounds torch's Python-float arguments to `T`; a zero `weight_decay` means none.
    pub fn new(
        neg_lr: f64,
        weight_decay: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        maximize: bool,
    ) -> Self {
        SgdScalars {
            neg_lr: T::from_f64(neg_lr),
            weight_decay: (weight_decay != 0.0).then(|| T::from_f64(weight_decay)),
            momentum: T::from_f64(momentum),
            one_minus_dampening: T::from_f64(1.0 - dampening),
            nesterov,
            maximize,
            first: false,
            trust_ratio: None,
        }
    }

    /// The gradient the update uses: `±g + λ·p`, times LARS's trust ratio.
    #[inline(always)]
    fn direction(&self, g: T, p: T) -> T {
        let d = signed_decayed(g, p, self.maximize, self.weight_decay);
        match self.trust_ratio {
            Some(t) => d * t,
            None => d,
        }
    }
}

slices!(
    /// SGD's slices without momentum.
    SgdSlices, "sgd" {
        /// The gradient.
        grad: read,
    }
);

slices!(
    /// SGD's slices with momentum.
    SgdMomentumSlices, "sgd_momentum" {
        /// The gradient.
        grad: read,
        /// The momentum buffer.
        momentum_buffer: write,
    }
);

/// SGD without momentum: `p ← p − lr·(±g + λ·p)`.
pub fn sgd<T: Element>(slices: SgdSlices<'_, T>, h: &SgdScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<SgdSlices<'_, T>> for SgdScalars<T> {
    #[inline(always)]
    fn run(&self, s: SgdSlices<'_, T>) {
        for (p, &g) in s.param.iter_mut().zip(s.grad) {
            let d = self.direction(g, *p);
            *p = d.mul_add(self.neg_lr, *p);
        }
    }
}

/// SGD with momentum: `b ← μ·b + (1−τ)·g` (or `b ← g` on the buffer's first
/// step, `h.first`), then `p ← p − lr·(g + μ·b)` with Nesterov, `p ← p − lr·b` without.
pub fn sgd_momentum<T: Element>(slices: SgdMomentumSlices<'_, T>, h: &SgdScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<SgdMomentumSlices<'_, T>> for SgdScalars<T> {
    #[inline(always)]
    fn run(&self, s: SgdMomentumSlices<'_, T>) {
        for ((p, &g), b) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.momentum_buffer.iter_mut())
        {
            let d = self.direction(g, *p);
            *b = if self.first {
                d
            } else {
                d.mul_add(self.one_minus_dampening, *b * self.momentum)
            };
            let d = if self.nesterov {
                b.mul_add(self.momentum, d)
            } else {
                *b
            };
            *p = d.mul_add(self.neg_lr, *p);
        }
    }
}
