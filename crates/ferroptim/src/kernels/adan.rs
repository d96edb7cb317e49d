//! Adan's kernel, as pytorch-optimizer 4.1.0 runs it: three moments (of
//! the gradient, of its difference from the last one, and of the square of
//! the corrected gradient) in one pass, in the reference's order of
//! operations. Its foreach and per-parameter paths do the same arithmetic.

use super::{lerp, run, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

slices!(
    /// Adan's slices.
    AdanSlices, "adan" {
        /// The gradient.
        grad: read,
        /// The first moment `m`.
        exp_avg: write,
        /// The second moment `n` (of the corrected gradient).
        exp_avg_sq: write,
        /// The moment `v` of the gradient differences.
        exp_avg_diff: write,
        /// The last step's gradient, negated (as the reference keeps it).
        previous_grad: write,
    }
);

/// The scalars of one Adan step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdanScalars<T> {
    /// The gradients' clip factor from their global norm (`max_grad_norm`), if any.
    pub grad_scale: Option<T>,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// On a parameter's first step: `previous_grad` starts as the raw
    /// gradient times this (the negated clip factor, −1 without clipping).
    pub first: Option<T>,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `β₃`.
    pub beta3: T,
    /// `1 − β₃`.
    pub one_minus_beta3: T,
    /// `√(1 − β₃ᵗ)`.
    pub bias_correction3_sqrt: T,
    /// `ε`.
    pub eps: T,
    /// `1 − lr·λ` (decoupled weight decay), if any.
    pub decay: Option<T>,
    /// `1 + lr·λ`, the divisor of the proximal (coupled) weight decay, if any.
    pub proximal: Option<T>,
    /// `−lr / (1 − β₁ᵗ)`.
    pub neg_step_size: T,
    /// `−lr·β₂ / (1 − β₂ᵗ)`.
    pub neg_diff_step_size: T,
}

/// One Adan step:
///
/// ```text
/// g ← ±g·c;  d ← g − g_prev
/// m ← lerp(m, g, 1−β₁);  v ← lerp(v, d, 1−β₂)
/// ĝ ← g + β₂·d;  n ← β₃·n + (1−β₃)·ĝ²;  den ← √n / √(1−β₃ᵗ) + ε
/// θ ← θ·(1 − lr·λ);  θ ← θ − s₁·m/den − s₂·v/den;  (or θ ← θ / (1 + lr·λ) after, coupled)
/// ```
pub fn adan<T: Element>(slices: AdanSlices<'_, T>, h: &AdanScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<AdanSlices<'_, T>> for AdanScalars<T> {
    #[inline(always)]
    fn run(&self, s: AdanSlices<'_, T>) {
        let moments = s.exp_avg.iter_mut().zip(s.exp_avg_sq.iter_mut());
        let diffs = s.exp_avg_diff.iter_mut().zip(s.previous_grad.iter_mut());
        let each = s.param.iter_mut().zip(s.grad).zip(moments.zip(diffs));
        for ((p, &raw), ((m, n), (v, prev))) in each {
            if let Some(first) = self.first {
                *prev = raw * first;
            }
            let g = if self.maximize { -raw } else { raw };
            let g = self.grad_scale.map_or(g, |c| g * c);
            // grad_diff = previous_grad + g, in place in previous_grad.
            let diff = *prev + g;
            *m = lerp(*m, g, self.one_minus_beta1);
            *v = lerp(*v, diff, self.one_minus_beta2);
            let corrected = diff * self.beta2 + g;
            *n = (self.one_minus_beta3 * corrected).mul_add(corrected, *n * self.beta3);
            let den = n.sqrt() / self.bias_correction3_sqrt + self.eps;
            let x = self.decay.map_or(*p, |d| *p * d);
            let x = x + (self.neg_step_size * *m) / den;
            let x = x + (self.neg_diff_step_size * *v) / den;
            *p = self.proximal.map_or(x, |q| x / q);
            *prev = -g;
        }
    }
}
