//! The kernels of Schedule-Free SGD and AdamW (schedulefree 1.4.1): one
//! pass that moves the point `y` where gradients are taken and the
//! iterate `z` of the base method, and the switch of `y` to the average
//! `x` and back (`eval()` / `train()`).

use super::{lerp, run, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

/// The scalars every Schedule-Free step shares, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleFreeScalars<T> {
    /// The L2 penalty `λ`, taken at `y` (`None` when 0).
    pub weight_decay: Option<T>,
    /// `c_{k+1}`, the weight of `z` in the new average.
    pub ckp1: T,
    /// `lr·(β₁·(1 − c_{k+1}) − 1)`, the weight of the (normalized) gradient in `y`.
    pub y_coef: T,
    /// `−lr`.
    pub neg_lr: T,
}

impl<T: Element> ScheduleFreeScalars<T> {
    /// `g ← g + λ·y`, `y ← lerp(y, z, c)`, `y ← y + y_coef·g`, `z ← z − lr·g`
    /// (the reference's foreach order; `add(alpha)` fused).
    #[inline(always)]
    fn apply(&self, y: &mut T, z: &mut T, g: T) {
        let g = match self.weight_decay {
            Some(wd) => y.mul_add(wd, g),
            None => g,
        };
        *y = g.mul_add(self.y_coef, lerp(*y, *z, self.ckp1));
        *z = g.mul_add(self.neg_lr, *z);
    }
}

slices!(
    /// Schedule-Free SGD's slices.
    SgdScheduleFreeSlices, "sgd_schedule_free" {
        /// The gradient.
        grad: read,
        /// The base iterate `z`.
        z: write,
    }
);

/// One Schedule-Free SGD step (see [`ScheduleFreeScalars::apply`]).
pub fn sgd_schedule_free<T: Element>(
    slices: SgdScheduleFreeSlices<'_, T>,
    h: &ScheduleFreeScalars<T>,
) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<SgdScheduleFreeSlices<'_, T>> for ScheduleFreeScalars<T> {
    #[inline(always)]
    fn run(&self, s: SgdScheduleFreeSlices<'_, T>) {
        for ((y, &g), z) in s.param.iter_mut().zip(s.grad).zip(s.z.iter_mut()) {
            self.apply(y, z, g);
        }
    }
}

slices!(
    /// Schedule-Free AdamW's slices.
    AdamWScheduleFreeSlices, "adamw_schedule_free" {
        /// The gradient.
        grad: read,
        /// The base iterate `z`.
        z: write,
        /// The second moment.
        exp_avg_sq: write,
    }
);

/// The scalars of one Schedule-Free AdamW step.
#[derive(Clone, Copy, Debug)]
pub struct AdamWScheduleFreeScalars<T> {
    /// What Schedule-Free SGD takes too, applied to the normalized gradient.
    pub schedule: ScheduleFreeScalars<T>,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `1 − β₂ᵏ⁺¹`.
    pub bias_correction2: T,
    /// `ε`.
    pub eps: T,
}

/// One Schedule-Free AdamW step: `v ← β₂·v + (1−β₂)·g²`, then the
/// Schedule-Free step with `g / (√(v/(1−β₂ᵏ⁺¹)) + ε)`.
pub fn adamw_schedule_free<T: Element>(
    slices: AdamWScheduleFreeSlices<'_, T>,
    h: &AdamWScheduleFreeScalars<T>,
) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<AdamWScheduleFreeSlices<'_, T>> for AdamWScheduleFreeScalars<T> {
    #[inline(always)]
    fn run(&self, s: AdamWScheduleFreeSlices<'_, T>) {
        let state = s.z.iter_mut().zip(s.exp_avg_sq.iter_mut());
        for ((y, &g), (z, v)) in s.param.iter_mut().zip(s.grad).zip(state) {
            *v = (self.one_minus_beta2 * g).mul_add(g, *v * self.beta2);
            let denom = (*v / self.bias_correction2).sqrt() + self.eps;
            self.schedule.apply(y, z, g / denom);
        }
    }
}

/// `θ ← lerp(θ, z, w)`: `eval()` with `w = 1 − 1/β₁` (from `y` to the
/// average `x`), `train()` with `w = 1 − β₁` (back to `y`).
pub fn switch_mode<T: Element>(param: &mut [T], z: &[T], weight: f64) {
    let w = T::from_f64(weight);
    for (p, &z) in param.iter_mut().zip(z) {
        *p = lerp(*p, z, w);
    }
}
