//! Lion's kernel: the sign of an interpolated momentum, and a momentum
//! buffer with its own decay, in one pass.

use super::{run, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

/// The scalars of one Lion step, rounded to the parameter's dtype as torch
/// rounds a Python float that meets a tensor.
#[derive(Clone, Copy, Debug)]
pub struct LionScalars<T> {
    /// `1 − lr·λ` (the step weight decay; exactly 1 without decay).
    pub decay: T,
    /// `−lr`.
    pub neg_lr: T,
    /// `β₁` and `1 − β₁`.
    pub beta1: T,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
}

slices!(
    /// Lion's slices.
    LionSlices, "lion" {
        /// The gradient.
        grad: read,
        /// The momentum (`exp_avg`).
        exp_avg: write,
    }
);

/// `θ ← θ·(1 − lr·λ)`, `θ ← θ − lr·sgn(β₁·m + (1−β₁)·g)`, `m ← β₂·m + (1−β₂)·g`.
pub fn lion<T: Element>(slices: LionSlices<'_, T>, h: &LionScalars<T>) -> Result<()> {
    run(slices, h)
}

/// torch's `sgn` of a real number: ±1, and 0 for ±0 and NaN.
#[inline(always)]
fn sgn<T: Element>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else {
        T::ZERO
    }
}

impl<T: Element> Loop<LionSlices<'_, T>> for LionScalars<T> {
    #[inline(always)]
    fn run(&self, s: LionSlices<'_, T>) {
        for ((p, &g), m) in s.param.iter_mut().zip(s.grad).zip(s.exp_avg.iter_mut()) {
            // torch: p.mul_(1 − lr·wd); exp_avg.clone().mul_(β₁).add(g, alpha=1−β₁).sgn_();
            // p.add_(update, alpha=−lr); exp_avg.mul_(β₂).add_(g, alpha=1−β₂).
            let decayed = *p * self.decay;
            let update = sgn(g.mul_add(self.one_minus_beta1, *m * self.beta1));
            *p = update.mul_add(self.neg_lr, decayed);
            *m = g.mul_add(self.one_minus_beta2, *m * self.beta2);
        }
    }
}
