//! LAMB's kernel, as pytorch-optimizer 4.1.0 runs it: Adam's moments, then
//! an update scaled by the trust ratio `‖θ‖ / ‖u‖` of the whole tensor.
//!
//! The trust ratio needs both norms before any element moves, so a step is
//! two passes: the first updates the moments and sums `θ²` and `u²` (the
//! update is computed into a tile on the stack, never stored), the second
//! recomputes `u` from the new moments, identically, and applies it. The
//! sums are [`reduce`](super::reduce)'s, the same bits on any number of
//! threads.
//!
//! The reference has two paths with different arithmetic, and both are
//! here ([`LambPath`]): its `foreach` one (the default) and its
//! per-parameter one (`foreach=False`, and always with `rectify`).

use super::reduce::{add_squares, total, Pair, LANES, TILE};
use super::{run, simd, slices, Loop, Slices};
use crate::error::Result;
use crate::parallel::tree_sum;
use crate::tensor::Element;

slices!(
    /// LAMB's slices.
    LambSlices, "lamb" {
        /// The gradient.
        grad: read,
        /// The first moment.
        exp_avg: write,
        /// The second moment.
        exp_avg_sq: write,
    }
);

/// How the reference computes the update `u` and applies it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LambPath {
    /// `_step_foreach`: `u = (1/(√v + ε))·m`, then `θ ← θ − s·(u·r)`.
    Foreach,
    /// `update` without `rectify`: `u = m / (√v + ε)`, then `θ ← θ + (−s·r)·u`.
    PerParam,
    /// `update` with `rectify`, the variance tractable: its `u` is the
    /// rectified parameter `θ − s·m/(√v + ε)`, and `θ ← θ + (−s·r)·m/(√v + ε)`.
    Rectified,
    /// `update` with `rectify` before the variance is tractable, with
    /// `degenerated_to_sgd`: `u = θ − s·m` and `θ ← θ + (−s·r)·m`.
    Degenerated,
}

/// The scalars of one LAMB step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct LambScalars<T> {
    /// The gradients' scale from their global norm (`pre_norm`), if any.
    pub grad_scale: Option<T>,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// The decoupled factor `1 − λ·lr` (`1 − λ` with `fixed_decay`), if any.
    pub decay: Option<T>,
    /// The coupled penalty `λ`, added to `u` (not on the rectified paths), if any.
    pub l2: Option<T>,
    /// `β₁`.
    pub beta1: T,
    /// The gradient's weight in the first moment, `1 − β₁` (1 without `grad_averaging`).
    pub beta3: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `ε`.
    pub eps: T,
    /// The step size `s`, negated (its sign is `−lr`'s).
    pub neg_step_size: T,
    /// Which of the reference's paths.
    pub path: LambPath,
}

/// A tensor's two norms and its trust ratio, as the reference computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrustRatio<T> {
    /// `min(‖θ‖, 10)` (after the decoupled decay).
    pub weight_norm: T,
    /// `‖u‖`.
    pub adam_norm: T,
    /// `‖θ‖ / (‖u‖ + ε)`, or `None` where either norm is 0: the per-parameter
    /// path then keeps the Python float 1.0 (the foreach path a tensor of 1).
    pub ratio: Option<T>,
}

impl<T: Element> TrustRatio<T> {
    /// The reference's clamp of the weight norm.
    const CLAMP: f64 = 10.0;

    fn new(sums: Pair, eps: T) -> Self {
        let weight_norm = T::from_f64(sums.0.sqrt());
        // clamp_(min=0, max=10): NaN stays.
        let clamp = T::from_f64(Self::CLAMP);
        let weight_norm = if weight_norm > clamp {
            clamp
        } else {
            weight_norm
        };
        let adam_norm = T::from_f64(sums.1.sqrt());
        // foreach: where((w != 0) & (a != 0), ...); per parameter:
        // `1.0 if w == 0 or a == 0 else ...`: the same test.
        let ratio = (weight_norm != T::ZERO && adam_norm != T::ZERO)
            .then(|| weight_norm / (adam_norm + eps));
        TrustRatio {
            weight_norm,
            adam_norm,
            ratio,
        }
    }
}

impl<T: Element> LambScalars<T> {
    /// The new moments: `m·β₁ + β₃·g` and `v·β₂ + (1−β₂)·g²`.
    #[inline(always)]
    fn moments(&self, g: T, m: T, v: T) -> (T, T) {
        (
            g.mul_add(self.beta3, m * self.beta1),
            (self.one_minus_beta2 * g).mul_add(g, v * self.beta2),
        )
    }

    /// The update whose norm is measured, from the decayed `θ` and the new moments.
    #[inline(always)]
    fn update(&self, p: T, m: T, v: T) -> T {
        let u = match self.path {
            LambPath::Foreach => T::ONE / (v.sqrt() + self.eps) * m,
            LambPath::PerParam => m / (v.sqrt() + self.eps),
            // update = p.clone().addcdiv_(m, d, value=−s)
            LambPath::Rectified => p + (self.neg_step_size * m) / (v.sqrt() + self.eps),
            LambPath::Degenerated => m.mul_add(self.neg_step_size, p),
        };
        match self.l2 {
            Some(l2) => p.mul_add(l2, u),
            None => u,
        }
    }
}

/// One LAMB step's first pass: updates the moments and returns the norms.
/// `None` (no update measured) when `measure` is false: the rectified paths
/// with a step size of 0 or less stop after the moments and the decay.
pub fn lamb_moments<T: Element>(
    slices: &mut LambSlices<'_, T>,
    h: &LambScalars<T>,
    measure: bool,
) -> Result<Option<TrustRatio<T>>> {
    slices.check()?;
    let h = *h;
    let data = (
        &*slices.param,
        slices.grad,
        &mut *slices.exp_avg,
        &mut *slices.exp_avg_sq,
    );
    let sums = tree_sum(data, |(p, g, m, v)| moments_serial(p, g, m, v, h));
    Ok(measure.then(|| TrustRatio::new(sums, h.eps)))
}

simd! {
fn moments_serial<T: Element>(p: &[T], g: &[T], m: &mut [T], v: &mut [T], h: LambScalars<T>) -> Pair {
    // One loop per update formula, so that each vectorises (a loop that
    // picks its formula per element stays scalar: perf showed `vsqrtss`).
    let eps = h.eps;
    match (h.path, h.l2) {
        (LambPath::Foreach, None) => {
            moments_tiles(p, g, m, v, &h, |_, m, v| T::ONE / (v.sqrt() + eps) * m)
        }
        (LambPath::PerParam, None) => moments_tiles(p, g, m, v, &h, |_, m, v| m / (v.sqrt() + eps)),
        _ => moments_tiles(p, g, m, v, &h, |p, m, v| h.update(p, m, v)),
    }
}}

/// The first pass over tiles: new moments, and the squares of `θ` and of
/// `update(θ, m, v)` summed into lanes.
#[inline(always)]
fn moments_tiles<T: Element>(
    p: &[T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    h: &LambScalars<T>,
    update: impl Fn(T, T, T) -> T,
) -> Pair {
    // The scale, sign and decay as factors (exact: `x·1 = x`, `x·(−s) = −(x·s)`).
    let scale = h.grad_scale.unwrap_or(T::ONE);
    let scale = if h.maximize { -scale } else { scale };
    let decay = h.decay.unwrap_or(T::ONE);
    let (mut p_lanes, mut u_lanes) = ([0.0; LANES], [0.0; LANES]);
    let (mut x, mut u) = ([T::ZERO; TILE], [T::ZERO; TILE]);
    let tiles = p
        .chunks(TILE)
        .zip(g.chunks(TILE))
        .zip(m.chunks_mut(TILE).zip(v.chunks_mut(TILE)));
    for ((p, g), (m, v)) in tiles {
        let n = p.len();
        let each = x.iter_mut().zip(u.iter_mut()).zip(p.iter().zip(g));
        for (((x, u), (&p, &g)), (m, v)) in each.zip(m.iter_mut().zip(v.iter_mut())) {
            let (p, g) = (p * decay, g * scale);
            (*m, *v) = h.moments(g, *m, *v);
            *x = p;
            *u = update(p, *m, *v);
        }
        add_squares(&mut p_lanes, &x[..n]);
        add_squares(&mut u_lanes, &u[..n]);
    }
    Pair(total(p_lanes), total(u_lanes))
}

slices!(
    /// The slices of LAMB's second pass.
    LambApplySlices, "lamb" {
        /// The first moment, as the first pass left it.
        exp_avg: read,
        /// The second moment, as the first pass left it.
        exp_avg_sq: read,
    }
);

/// One LAMB step's second pass: `θ` decayed, then moved by the update
/// scaled by `ratio` (`None` for a ratio of 1: `adam`, or a zero norm) on
/// the reference's path. Without `moves` only the decay is applied (the
/// rectified paths before the variance is tractable).
pub fn lamb_apply<T: Element>(
    slices: LambApplySlices<'_, T>,
    h: &LambScalars<T>,
    ratio: Option<T>,
    moves: bool,
) -> Result<()> {
    let step = LambStep {
        h: *h,
        ratio: ratio.unwrap_or(T::ONE),
        scaled: ratio.is_some(),
        moves,
    };
    run(slices, &step)
}

/// The second pass's scalars by value.
struct LambStep<T> {
    h: LambScalars<T>,
    ratio: T,
    scaled: bool,
    moves: bool,
}

impl<T: Element> Loop<LambApplySlices<'_, T>> for LambStep<T> {
    #[inline(always)]
    fn run(&self, s: LambApplySlices<'_, T>) {
        let h = self.h;
        if !self.moves {
            if let Some(d) = h.decay {
                for p in s.param.iter_mut() {
                    *p = *p * d;
                }
            }
            return;
        }
        // The per-parameter paths scale the step (alpha = −s·r, one rounding).
        let alpha = if self.scaled {
            h.neg_step_size * self.ratio
        } else {
            h.neg_step_size
        };
        let moments = s.exp_avg.iter().zip(s.exp_avg_sq);
        match (h.path, self.scaled) {
            (LambPath::Foreach, true) => {
                for (p, (&m, &v)) in s.param.iter_mut().zip(moments) {
                    let x = h.decay.map_or(*p, |d| *p * d);
                    *p = (h.update(x, m, v) * self.ratio).mul_add(h.neg_step_size, x);
                }
            }
            (LambPath::Foreach | LambPath::PerParam, _) => {
                for (p, (&m, &v)) in s.param.iter_mut().zip(moments) {
                    let x = h.decay.map_or(*p, |d| *p * d);
                    *p = h.update(x, m, v).mul_add(alpha, x);
                }
            }
            (LambPath::Rectified, _) => {
                for (p, (&m, &v)) in s.param.iter_mut().zip(moments) {
                    let x = h.decay.map_or(*p, |d| *p * d);
                    *p = x + (alpha * m) / (v.sqrt() + h.eps);
                }
            }
            (LambPath::Degenerated, _) => {
                for (p, &m) in s.param.iter_mut().zip(s.exp_avg) {
                    let x = h.decay.map_or(*p, |d| *p * d);
                    *p = m.mul_add(alpha, x);
                }
            }
        }
    }
}
