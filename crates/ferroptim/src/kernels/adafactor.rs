//! Adafactor's kernels: the second-moment estimate (factored into row and
//! column means for matrices, full for vectors), the norm of the update and
//! its application. The update `u = g / √max(v̂, ε₁²)` is never stored: it is
//! recomputed, identically, by the pass that measures its norm and the pass
//! that applies it, so a step allocates nothing.
//!
//! The parameter's norm is measured in the pass that updates the moment; for
//! a vector, so is the update's norm, and a step is two passes over memory.
//!
//! Reductions (`norm`, `mean`) are [`reduce`](super::reduce)'s: summed in
//! `f64` in a fixed order, rounded to `T` once, the same on any number of threads.

use super::reduce::{add_squares, square, sum_sq, total, Pair, LANES, TILE};
use super::{check_len, lerp, simd};
use crate::error::Result;
use crate::parallel::{for_chunks, tree_sum};
use crate::tensor::Element;

/// A vector norm rounded to `T`, as torch's `norm()` returns it.
fn norm<T: Element>(sum_sq: f64) -> T {
    T::from_f64(sum_sq.sqrt())
}

/// Where the second moment of one parameter lives.
#[derive(Debug)]
pub enum SecondMoment<'a, T> {
    /// A matrix (or a batch of them): row means `[batch, rows]` and column
    /// means `[batch, cols]` of `g²`, and a scratch of `cols` sums.
    Factored {
        /// torch's `row_var`.
        row_var: &'a mut [T],
        /// torch's `col_var`.
        col_var: &'a mut [T],
        /// Rows of each matrix (`shape[-2]`).
        rows: usize,
        /// Columns of each matrix (`shape[-1]`).
        cols: usize,
        /// Column sums of squares (`cols` long), reused between steps.
        scratch: &'a mut [f64],
    },
    /// A vector or a scalar: torch's `variance`, the full average of `g²`.
    Full(&'a mut [T]),
}

/// The scalars of one Adafactor step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdafactorScalars<T> {
    /// `1 − β̂₂ₜ = t^τ`: the weight of the new `g²` in the running averages.
    pub one_minus_beta2: T,
    /// ε₁: the floor of the row-mean normaliser.
    pub eps1: T,
    /// ε₁², the floor of the variance estimate.
    pub eps1_sq: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// What the first pass over a parameter measures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MomentSums {
    /// `Σ θᵢ²`, for the parameter's RMS.
    pub param_sum_sq: f64,
    /// `Σ uᵢ²`, for the update's RMS. A factored moment knows `u` only once
    /// every row is in, so this is `None` there: see [`update_sum_sq`].
    pub update_sum_sq: Option<f64>,
}

/// torch's `v.clamp_(min=lo)`: a NaN `v` stays NaN (`lo` is never NaN).
#[inline(always)]
fn clamp_min<T: Element>(v: T, lo: T) -> T {
    if v < lo {
        lo
    } else {
        v
    }
}

/// `u = g / √max(v̂, ε₁²)`, as torch's `clamp_(min).rsqrt_()` then `mul_(grad)`.
/// The sign for `maximize` is left to the caller: it does not change `u²`,
/// and negating the step instead gives the same bits.
#[inline(always)]
fn update<T: Element>(v: T, g: T, eps1_sq: T) -> T {
    T::ONE / clamp_min(v, eps1_sq).sqrt() * g
}

/// Updates the running averages of `g²` from `grad` (torch's `lerp_`s), and
/// measures `Σ θ²` (from the parameter as it was) and, for a full moment,
/// `Σ u²` in the same pass.
pub fn second_moment<T: Element>(
    param: &[T],
    grad: &[T],
    moment: &mut SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
) -> Result<MomentSums> {
    check_len("adafactor", "grad", param.len(), grad.len())?;
    match moment {
        SecondMoment::Full(variance) => {
            check_len("adafactor", "variance", grad.len(), variance.len())?;
            let Pair(param_sum_sq, update_sum_sq) =
                tree_sum((param, grad, &mut **variance), |(p, g, v)| {
                    full_moment_serial(p, g, v, h)
                });
            Ok(MomentSums {
                param_sum_sq,
                update_sum_sq: Some(update_sum_sq),
            })
        }
        SecondMoment::Factored {
            row_var,
            col_var,
            rows,
            cols,
            scratch,
        } => {
            // Matrices in the batch, from whichever side is not empty.
            let batch = match (*rows, *cols) {
                (0, 0) => 0,
                (0, cols) => col_var.len() / cols,
                (rows, _) => row_var.len() / rows,
            };
            check_len("adafactor", "grad", batch * *rows * *cols, grad.len())?;
            check_len("adafactor", "col_var", batch * *cols, col_var.len())?;
            check_len("adafactor", "scratch", *cols, scratch.len())?;
            factored_moment(grad, row_var, col_var, *rows, *cols, scratch, h);
            Ok(MomentSums {
                param_sum_sq: sum_sq(param),
                update_sum_sq: None,
            })
        }
    }
}

simd! {
fn full_moment_serial<T: Element>(
    param: &[T],
    grad: &[T],
    variance: &mut [T],
    h: &AdafactorScalars<T>,
) -> Pair {
    let (w, eps1_sq) = (h.one_minus_beta2, h.eps1_sq);
    let (mut p_lanes, mut u_lanes) = ([0.0; LANES], [0.0; LANES]);
    let mut u = [T::ZERO; TILE];
    for ((p, g), v) in param
        .chunks(TILE)
        .zip(grad.chunks(TILE))
        .zip(variance.chunks_mut(TILE))
    {
        for ((u, &g), v) in u.iter_mut().zip(g).zip(v) {
            *v = lerp(*v, g * g, w);
            *u = update(*v, g, eps1_sq);
        }
        add_squares(&mut p_lanes, p);
        add_squares(&mut u_lanes, &u[..g.len()]);
    }
    Pair(total(p_lanes), total(u_lanes))
}}

simd! {
fn factored_moment<T: Element>(
    grad: &[T],
    row_var: &mut [T],
    col_var: &mut [T],
    rows: usize,
    cols: usize,
    scratch: &mut [f64],
    h: &AdafactorScalars<T>,
) {
    if rows == 0 || cols == 0 {
        return; // no elements: the means stay as they are
    }
    let w = h.one_minus_beta2;
    let (n_rows, n_cols) = (T::from_f64(rows as f64), T::from_f64(cols as f64));
    // torch: vector_norm(g, dim).square_().div_(size): the norm is rounded, then squared.
    let mean_sq = |sum_sq: f64, n: T| {
        let r = norm::<T>(sum_sq);
        r * r / n
    };
    let body = cols / LANES * LANES;
    for ((matrix, row_var), col_var) in grad
        .chunks_exact(rows * cols)
        .zip(row_var.chunks_exact_mut(rows))
        .zip(col_var.chunks_exact_mut(cols))
    {
        scratch.fill(0.0);
        for (row, r) in matrix.chunks_exact(cols).zip(row_var.iter_mut()) {
            let mut lanes = [0.0; LANES];
            let (row_body, row_rest) = row.split_at(body);
            let (acc_body, acc_rest) = scratch.split_at_mut(body);
            for (acc, g) in acc_body
                .chunks_exact_mut(LANES)
                .zip(row_body.chunks_exact(LANES))
            {
                for k in 0..LANES {
                    let g2 = square(g[k]);
                    lanes[k] += g2;
                    acc[k] += g2;
                }
            }
            for (k, (acc, &g)) in acc_rest.iter_mut().zip(row_rest).enumerate() {
                let g2 = square(g);
                lanes[k] += g2;
                *acc += g2;
            }
            *r = lerp(*r, mean_sq(total(lanes), n_cols), w);
        }
        for (c, &sum) in col_var.iter_mut().zip(&*scratch) {
            *c = lerp(*c, mean_sq(sum, n_rows), w);
        }
    }
}}

/// The variance estimate of a factored moment is `rᵢ·cⱼ / mean(r)`: torch's
/// `(row_var @ col_var).div_(row_var.mean(dim=-2).clamp_(min=eps1))`, an
/// outer product, then a division. Calls `f` with each matrix's rows and
/// the matching `(grad row, θ row index, v̂ of column j from cⱼ)`.
#[inline(always)]
fn for_each_factored_row<T: Element>(
    grad: &[T],
    row_var: &[T],
    col_var: &[T],
    rows: usize,
    cols: usize,
    eps1: T,
    mut f: impl FnMut(usize, &[T], &[T], T, T),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let n_rows = T::from_f64(rows as f64);
    let matrices = grad
        .chunks_exact(rows * cols)
        .zip(row_var.chunks_exact(rows))
        .zip(col_var.chunks_exact(cols));
    for (b, ((matrix, r), c)) in matrices.enumerate() {
        let r_sum: f64 = r.iter().map(|x| x.to_f64()).sum();
        let r_mean = clamp_min(T::from_f64(r_sum) / n_rows, eps1);
        for (i, (row, &ri)) in matrix.chunks_exact(cols).zip(r).enumerate() {
            f((b * rows + i) * cols, row, c, ri, r_mean);
        }
    }
}

/// `Σ uᵢ²` of the update, in `f64`, for a moment already updated by
/// [`second_moment`] (which returns it for a full moment).
pub fn update_sum_sq<T: Element>(
    grad: &[T],
    moment: &SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
) -> f64 {
    match moment {
        SecondMoment::Full(variance) => tree_sum((grad, &**variance), |(g, v)| {
            update_sum_sq_serial(g, v, |v| v, h.eps1_sq)
        }),
        SecondMoment::Factored {
            row_var,
            col_var,
            rows,
            cols,
            ..
        } => factored_update_sum_sq(grad, row_var, col_var, *rows, *cols, h),
    }
}

simd! {
fn factored_update_sum_sq<T: Element>(
    grad: &[T],
    row_var: &[T],
    col_var: &[T],
    rows: usize,
    cols: usize,
    h: &AdafactorScalars<T>,
) -> f64 {
    let mut sum = 0.0;
    let eps1_sq = h.eps1_sq;
    for_each_factored_row(
        grad,
        row_var,
        col_var,
        rows,
        cols,
        h.eps1,
        |_, g, c, ri, mean| {
            sum += update_sum_sq_serial(g, c, |cj| ri * cj / mean, eps1_sq);
        },
    );
    sum
}}

/// `Σ u²` over a run of `grad` whose variance estimates are `v_of(vⱼ)`.
#[inline(always)]
fn update_sum_sq_serial<T: Element>(grad: &[T], v: &[T], v_of: impl Fn(T) -> T, eps1_sq: T) -> f64 {
    let mut lanes = [0.0; LANES];
    let mut u = [T::ZERO; TILE];
    for (g, v) in grad.chunks(TILE).zip(v.chunks(TILE)) {
        for ((u, &g), &v) in u.iter_mut().zip(g).zip(v) {
            *u = update(v_of(v), g, eps1_sq);
        }
        add_squares(&mut lanes, &u[..g.len()]);
    }
    total(lanes)
}

/// `θ ← θ·decay` (when weight decay is on), then `θ ← θ + step·u`, with
/// `u = ±g / √max(v̂, ε₁²)`.
pub fn apply<T: Element>(
    param: &mut [T],
    grad: &[T],
    moment: &SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
    decay: Option<T>,
    step: T,
) -> Result<()> {
    check_len("adafactor", "grad", param.len(), grad.len())?;
    // θ·1 is θ, bit for bit; and (−g)·r·s is g·r·(−s).
    let decay = decay.unwrap_or(T::ONE);
    let step = if h.maximize { -step } else { step };
    match moment {
        SecondMoment::Full(variance) => {
            check_len("adafactor", "variance", param.len(), variance.len())?;
            for_chunks((param, grad, &**variance), |(p, g, v)| {
                apply_full(p, g, v, h.eps1_sq, decay, step)
            });
        }
        SecondMoment::Factored {
            row_var,
            col_var,
            rows,
            cols,
            ..
        } => apply_factored(param, grad, row_var, col_var, *rows, *cols, h, decay, step),
    }
    Ok(())
}

simd! {
fn apply_full<T: Element>(param: &mut [T], grad: &[T], v: &[T], eps1_sq: T, decay: T, step: T) {
    apply_run(param, grad, v, |v| v, eps1_sq, decay, step);
}}

simd! {
#[allow(clippy::too_many_arguments)]
fn apply_factored<T: Element>(
    param: &mut [T],
    grad: &[T],
    row_var: &[T],
    col_var: &[T],
    rows: usize,
    cols: usize,
    h: &AdafactorScalars<T>,
    decay: T,
    step: T,
) {
    let eps1_sq = h.eps1_sq;
    for_each_factored_row(
        grad,
        row_var,
        col_var,
        rows,
        cols,
        h.eps1,
        |at, g, c, ri, mean| {
            let p = &mut param[at..at + cols];
            apply_run(p, g, c, |cj| ri * cj / mean, eps1_sq, decay, step);
        },
    );
}}

#[inline(always)]
fn apply_run<T: Element>(
    param: &mut [T],
    grad: &[T],
    v: &[T],
    v_of: impl Fn(T) -> T,
    eps1_sq: T,
    decay: T,
    step: T,
) {
    for ((p, &g), &v) in param.iter_mut().zip(grad).zip(v) {
        *p = update(v_of(v), g, eps1_sq).mul_add(step, *p * decay);
    }
}

/// A norm summed in `f64` and rounded to `T`, widened back: torch's `norm().item()`.
pub fn norm_item<T: Element>(sum_sq: f64) -> f64 {
    norm::<T>(sum_sq).to_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalars() -> AdafactorScalars<f64> {
        AdafactorScalars {
            one_minus_beta2: 1.0,
            eps1: 1e-30,
            eps1_sq: 1e-60,
            maximize: false,
        }
    }

    #[test]
    fn factored_means_are_the_row_and_column_means_of_g_squared() {
        let grad = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 x 3
        let (mut row, mut col, mut scratch) = ([0.0; 2], [0.0; 3], [0.0; 3]);
        let mut m = SecondMoment::Factored {
            row_var: &mut row,
            col_var: &mut col,
            rows: 2,
            cols: 3,
            scratch: &mut scratch,
        };
        let sums = second_moment(&grad, &grad, &mut m, &scalars()).unwrap();
        assert_eq!(sums.param_sum_sq, 91.0);
        assert_eq!(sums.update_sum_sq, None);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(row[0], 14.0 / 3.0) && close(row[1], 77.0 / 3.0));
        assert!(close(col[0], 17.0 / 2.0) && close(col[2], 45.0 / 2.0));
    }

    #[test]
    fn empty_matrices_are_no_work_and_no_panic() {
        for (rows, cols) in [(0, 3), (3, 0), (0, 0)] {
            let (mut row, mut col, mut scratch) =
                (vec![0.0; rows], vec![0.0; cols], vec![0.0; cols]);
            let mut m = SecondMoment::Factored {
                row_var: &mut row,
                col_var: &mut col,
                rows,
                cols,
                scratch: &mut scratch,
            };
            let sums = second_moment(&[], &[], &mut m, &scalars()).unwrap();
            assert_eq!(sums.param_sum_sq, 0.0);
            assert_eq!(update_sum_sq(&[], &m, &scalars()), 0.0);
            apply(&mut [], &[], &m, &scalars(), None, -0.1).unwrap();
        }
    }

    #[test]
    fn a_full_second_moment_gives_a_sign_update() {
        // With v = g² exactly (weight 1), u = g/|g| = ±1.
        let grad = [3.0, -0.5];
        let mut v = [0.0; 2];
        let mut m = SecondMoment::Full(&mut v);
        let sums = second_moment(&grad, &grad, &mut m, &scalars()).unwrap();
        assert_eq!(sums.update_sum_sq, Some(2.0));
        assert_eq!(update_sum_sq(&grad, &m, &scalars()), 2.0);
        let mut p = [1.0, 1.0];
        apply(&mut p, &grad, &m, &scalars(), None, -0.25).unwrap();
        assert_eq!(p, [0.75, 1.25]);
    }
}
