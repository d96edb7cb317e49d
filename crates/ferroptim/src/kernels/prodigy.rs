//! Prodigy's two passes, as prodigyopt 1.1.2 runs them.
//!
//! The first pass updates the moments and the D estimate's `s` (on every
//! `slice_p`-th element) and returns two sums: `gᵀ(θ₀ − θ)` and `Σ|s|`,
//! over those elements. The step's `d` needs them from every parameter, so
//! the parameter moves only in the second pass. The sums are taken in
//! `f64` and rounded to the dtype once (the reference's `dot` and `sum`
//! round in their vectorised orders), on [`tree_sum`]'s blocks, so they do
//! not depend on the thread count.

use super::reduce::{total, Pair, LANES, TILE};
use super::{run, simd, slices, Loop};
use crate::error::Result;
use crate::parallel::{tree_sum, Chunks};
use crate::tensor::Element;

/// The slices of Prodigy's first pass. `s` and `p0` hold every
/// `slice_p`-th element of the flattened parameter (`p0` is `None` where
/// the reference keeps a 0-d zero: the parameter was all zeros).
pub struct ProdigyGatherSlices<'a, T> {
    /// The parameter's values (read only).
    pub param: &'a [T],
    /// The gradient.
    pub grad: &'a [T],
    /// The first moment (`None` when `β₁ = 0`).
    pub exp_avg: Option<&'a mut [T]>,
    /// The second moment.
    pub exp_avg_sq: &'a mut [T],
    /// The D estimate's running sum of gradients.
    pub s: &'a mut [T],
    /// The parameter's first values (`None`: all `p0_fill`, a 0-d `p0`).
    pub p0: Option<&'a [T]>,
    /// The value of a 0-d `p0`.
    pub p0_fill: T,
    /// Every how many elements `s` and `p0` hold one.
    pub slice_p: usize,
}

impl<T: Element> Chunks for ProdigyGatherSlices<'_, T> {
    /// Chunks count `s`'s elements; each takes the parameter's elements up
    /// to the next chunk's first (the last one, up to the end).
    fn len(&self) -> usize {
        self.s.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let at = (mid * self.slice_p).min(self.param.len());
        let k = self.slice_p;
        let (param, grad) = (self.param.split_at(at), self.grad.split_at(at));
        let exp_avg = Chunks::split_at(self.exp_avg, at);
        let exp_avg_sq = self.exp_avg_sq.split_at_mut(at);
        let s = self.s.split_at_mut(mid);
        let p0 = Chunks::split_at(self.p0, mid);
        let fill = self.p0_fill;
        let half = |param, grad, exp_avg, exp_avg_sq, s, p0| ProdigyGatherSlices {
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            s,
            p0,
            p0_fill: fill,
            slice_p: k,
        };
        (
            half(param.0, grad.0, exp_avg.0, exp_avg_sq.0, s.0, p0.0),
            half(param.1, grad.1, exp_avg.1, exp_avg_sq.1, s.1, p0.1),
        )
    }
}

impl<T: Element> ProdigyGatherSlices<'_, T> {
    fn check(&self) -> Result<()> {
        let n = self.param.len();
        super::check_len("prodigy", "grad", n, self.grad.len())?;
        if let Some(m) = &self.exp_avg {
            super::check_len("prodigy", "exp_avg", n, m.len())?;
        }
        super::check_len("prodigy", "exp_avg_sq", n, self.exp_avg_sq.len())?;
        let sliced = n.div_ceil(self.slice_p.max(1));
        super::check_len("prodigy", "s", sliced, self.s.len())?;
        if let Some(p0) = self.p0 {
            super::check_len("prodigy", "p0", sliced, p0.len())?;
        }
        Ok(())
    }
}

/// The scalars of Prodigy's first pass, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct ProdigyGatherScalars<T> {
    /// The coupled weight decay `λ` added to the gradient (`None` when off or decoupled).
    pub l2: Option<T>,
    /// `β₁`.
    pub beta1: T,
    /// `d·(1 − β₁)`.
    pub exp_avg_weight: T,
    /// `β₂`.
    pub beta2: T,
    /// `d²·(1 − β₂)`.
    pub exp_avg_sq_weight: T,
    /// `β₃`.
    pub beta3: T,
    /// `(d / d₀)·d·lr` (or `(d / d₀)·d` with `safeguard_warmup`).
    pub s_weight: T,
}

impl<T: Element> ProdigyGatherScalars<T> {
    /// The gradient with the coupled decay: torch's `grad.add_(p, alpha=λ)`.
    #[inline(always)]
    fn grad(&self, p: T, g: T) -> T {
        self.l2.map_or(g, |l2| p.mul_add(l2, g))
    }

    /// One element of the D estimate: `s ← β₃·s + w·g`, and the element's
    /// terms of the two sums, `g·(θ₀ − θ)` and `|s|`.
    #[inline(always)]
    fn estimate(&self, p: T, g: T, s: &mut T, start: T) -> (f64, f64) {
        let g = self.grad(p, g);
        *s = g.mul_add(self.s_weight, *s * self.beta3);
        (g.to_f64() * (start - p).to_f64(), s.abs().to_f64())
    }
}

/// Prodigy's first pass:
///
/// ```text
/// g ← g + λ·θ (coupled decay);  m ← β₁·m + d(1−β₁)·g;  v ← β₂·v + d²(1−β₂)·g²
/// on every slice_p-th element: s ← β₃·s + w·g, and the sums gᵀ(θ₀ − θ), Σ|s|
/// ```
///
/// Returns the two sums, each rounded to `T` as the reference's `.item()`
/// of a `T` tensor.
pub fn prodigy_gather<T: Element>(
    slices: ProdigyGatherSlices<'_, T>,
    h: &ProdigyGatherScalars<T>,
) -> Result<(f64, f64)> {
    slices.check()?;
    let h = *h;
    let Pair(dot, abs) = tree_sum(slices, |c| gather_serial(c, h));
    let item = |x: f64| T::from_f64(x).to_f64();
    Ok((item(dot), item(abs)))
}

simd! {
fn gather_serial<T: Element>(c: ProdigyGatherSlices<'_, T>, h: ProdigyGatherScalars<T>) -> Pair {
    let ProdigyGatherSlices { param, grad, mut exp_avg, exp_avg_sq, s, p0, p0_fill, slice_p: k } = c;
    let n = param.len();
    let (mut dot, mut abs) = ([0.0; LANES], [0.0; LANES]);
    let (mut dot_tile, mut abs_tile) = ([0.0f64; TILE], [0.0f64; TILE]);
    let m = s.len();
    let mut j0 = 0;
    while j0 < m {
        let j1 = (j0 + TILE).min(m);
        let (i0, i1) = (j0 * k, if j1 == m { n } else { j1 * k });
        // The moments, on every element of the tile.
        let (p, g) = (&param[i0..i1], &grad[i0..i1]);
        let v = &mut exp_avg_sq[i0..i1];
        match exp_avg.as_deref_mut() {
            Some(exp_avg) => {
                let moments = exp_avg[i0..i1].iter_mut().zip(v.iter_mut());
                for ((&p, &g), (m, v)) in p.iter().zip(g).zip(moments) {
                    let g = h.grad(p, g);
                    *m = g.mul_add(h.exp_avg_weight, *m * h.beta1);
                    *v = (h.exp_avg_sq_weight * g).mul_add(g, *v * h.beta2);
                }
            }
            None => {
                for ((&p, &g), v) in p.iter().zip(g).zip(v.iter_mut()) {
                    let g = h.grad(p, g);
                    *v = (h.exp_avg_sq_weight * g).mul_add(g, *v * h.beta2);
                }
            }
        }
        // The D estimate, on every k-th element.
        let len = j1 - j0;
        let s = &mut s[j0..j1];
        let sums = dot_tile.iter_mut().zip(abs_tile.iter_mut());
        match (k, p0) {
            // Contiguous (the default slice_p), so that the loop vectorises.
            (1, Some(p0)) => {
                let each = p.iter().zip(g).zip(s.iter_mut().zip(&p0[j0..j1]));
                for (((&p, &g), (s, &start)), (d, a)) in each.zip(sums) {
                    (*d, *a) = h.estimate(p, g, s, start);
                }
            }
            (1, None) => {
                for (((&p, &g), s), (d, a)) in p.iter().zip(g).zip(s.iter_mut()).zip(sums) {
                    (*d, *a) = h.estimate(p, g, s, p0_fill);
                }
            }
            _ => {
                let strided = p.iter().step_by(k).zip(g.iter().step_by(k));
                for (j, (((&p, &g), s), (d, a))) in strided.zip(s.iter_mut()).zip(sums).enumerate() {
                    let start = p0.map_or(p0_fill, |p0| p0[j0 + j]);
                    (*d, *a) = h.estimate(p, g, s, start);
                }
            }
        }
        add_values(&mut dot, &dot_tile[..len]);
        add_values(&mut abs, &abs_tile[..len]);
        j0 = j1;
    }
    Pair(total(dot), total(abs))
}}

/// Adds `xᵢ` to lane `i mod LANES`.
#[inline(always)]
fn add_values(lanes: &mut [f64; LANES], x: &[f64]) {
    let body = x.chunks_exact(LANES);
    let rest = body.remainder();
    for x in body {
        for k in 0..LANES {
            lanes[k] += x[k];
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane += x;
    }
}

slices!(
    /// The slices of Prodigy's second pass.
    ProdigyApplySlices, "prodigy" {
        /// The gradient (read only when `β₁ = 0`).
        grad: read,
        /// The first moment, as the first pass left it (`None` when `β₁ = 0`).
        exp_avg: optional,
        /// The second moment, as the first pass left it.
        exp_avg_sq: read,
    }
);

/// The scalars of Prodigy's second pass, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct ProdigyApplyScalars<T> {
    /// The coupled weight decay `λ`, which the reference left in the
    /// gradient (`None` when off or decoupled).
    pub l2: Option<T>,
    /// `−λ·dlr`, the decoupled weight decay (`None` when off or coupled).
    pub decay: Option<T>,
    /// `d·ε`, with the step's new `d`.
    pub d_eps: T,
    /// `−dlr` (with `β₁ > 0`), or `−dlr·d` (with `β₁ = 0`, times the gradient).
    pub neg_step_size: T,
}

/// Prodigy's second pass:
/// `θ ← θ − λ·dlr·θ` (decoupled), then `θ ← θ − dlr·m / (√v + d·ε)`, or
/// `θ ← θ − dlr·d·g / (√v + d·ε)` without a first moment.
pub fn prodigy_apply<T: Element>(
    slices: ProdigyApplySlices<'_, T>,
    h: &ProdigyApplyScalars<T>,
) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<ProdigyApplySlices<'_, T>> for ProdigyApplyScalars<T> {
    #[inline(always)]
    fn run(&self, s: ProdigyApplySlices<'_, T>) {
        let denom = |v: T| v.sqrt() + self.d_eps;
        let decayed = |p: T| self.decay.map_or(p, |a| p.mul_add(a, p));
        match s.exp_avg {
            Some(exp_avg) => {
                let moments = exp_avg.iter().zip(s.exp_avg_sq);
                for (p, (&m, &v)) in s.param.iter_mut().zip(moments) {
                    *p = decayed(*p) + (self.neg_step_size * m) / denom(v);
                }
            }
            None => {
                let each = s.grad.iter().zip(s.exp_avg_sq);
                for (p, (&g, &v)) in s.param.iter_mut().zip(each) {
                    let g = self.l2.map_or(g, |l2| p.mul_add(l2, g));
                    *p = decayed(*p) + (self.neg_step_size * g) / denom(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalars() -> ProdigyGatherScalars<f64> {
        ProdigyGatherScalars {
            l2: None,
            beta1: 0.9,
            exp_avg_weight: 0.1,
            beta2: 0.99,
            exp_avg_sq_weight: 0.01,
            beta3: 0.5,
            s_weight: 2.0,
        }
    }

    #[test]
    fn the_estimate_reads_every_slice_p_th_element() {
        let param = [1.0, 2.0, 3.0, 4.0, 5.0];
        let grad = [1.0, -1.0, 2.0, -2.0, 3.0];
        let (mut m, mut v) = ([0.0; 5], [0.0; 5]);
        let (mut s, p0) = ([1.0; 3], [0.0, 0.0, 10.0]);
        let slices = ProdigyGatherSlices {
            param: &param,
            grad: &grad,
            exp_avg: Some(&mut m),
            exp_avg_sq: &mut v,
            s: &mut s,
            p0: Some(&p0),
            p0_fill: 0.0,
            slice_p: 2,
        };
        let (dot, abs) = prodigy_gather(slices, &scalars()).unwrap();
        // Elements 0, 2, 4: g·(θ₀ − θ) = 1·(0−1) + 2·(0−3) + 3·(10−5).
        assert_eq!(dot, 8.0);
        assert_eq!(s, [2.5, 4.5, 6.5]);
        assert_eq!(abs, 13.5);
        // Every element's moments move.
        assert_eq!(m, grad.map(|g| 0.1 * g));
    }

    #[test]
    fn a_wrong_length_of_s_is_an_error_before_anything_is_written() {
        let (param, grad) = ([1.0; 4], [1.0; 4]);
        let mut v = [0.0; 4];
        let mut s = [0.0; 3];
        let slices = ProdigyGatherSlices {
            param: &param,
            grad: &grad,
            exp_avg: None,
            exp_avg_sq: &mut v,
            s: &mut s,
            p0: None,
            p0_fill: 0.0,
            slice_p: 1,
        };
        assert!(prodigy_gather(slices, &scalars()).is_err());
        assert_eq!(v, [0.0; 4]);
    }
}
