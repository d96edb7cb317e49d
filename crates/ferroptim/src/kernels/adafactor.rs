//! Adafactor's kernels: the second-moment estimate (factored into row and
//! column means for matrices, full for vectors), the norm of the update and
//! its application. The update `u = g / √max(v̂, ε₁²)` is never stored: it is
//! recomputed, identically, by the pass that measures its norm and the pass
//! that applies it, so a step allocates nothing.
//!
//! Reductions (`norm`, `mean`) are summed in `f64` and rounded to `T` once,
//! where torch sums in its vectorised order: the two agree to the rounding of
//! the sum.

use super::{check_len, lerp};
use crate::error::Result;
use crate::tensor::Element;
use multiversion::multiversion;

/// `Σ xᵢ²`, in `f64`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn sum_sq<T: Element>(x: &[T]) -> f64 {
    x.iter().map(|&v| v.to_f64() * v.to_f64()).sum()
}

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

/// Updates the running averages of `g²` from `grad` (torch's `lerp_`s).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn second_moment<T: Element>(
    grad: &[T],
    moment: &mut SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
) -> Result<()> {
    let w = h.one_minus_beta2;
    match moment {
        SecondMoment::Full(variance) => {
            check_len("adafactor", "variance", grad.len(), variance.len())?;
            for (v, &g) in variance.iter_mut().zip(grad) {
                *v = lerp(*v, g * g, w);
            }
        }
        SecondMoment::Factored {
            row_var,
            col_var,
            rows,
            cols,
            scratch,
        } => {
            let (rows, cols) = (*rows, *cols);
            let batch = row_var.len() / rows.max(1);
            check_len("adafactor", "grad", batch * rows * cols, grad.len())?;
            check_len("adafactor", "col_var", batch * cols, col_var.len())?;
            check_len("adafactor", "scratch", cols, scratch.len())?;
            let (n_rows, n_cols) = (T::from_f64(rows as f64), T::from_f64(cols as f64));
            // torch: vector_norm(g, dim).square_().div_(size): the norm is rounded, then squared.
            let mean_sq = |sum_sq: f64, n: T| {
                let r = norm::<T>(sum_sq);
                r * r / n
            };
            for b in 0..batch {
                let matrix = &grad[b * rows * cols..(b + 1) * rows * cols];
                scratch.fill(0.0);
                for (i, row) in matrix.chunks_exact(cols).enumerate() {
                    let mut row_sum = 0.0;
                    for (acc, &g) in scratch.iter_mut().zip(row) {
                        let g2 = g.to_f64() * g.to_f64();
                        row_sum += g2;
                        *acc += g2;
                    }
                    let r = &mut row_var[b * rows + i];
                    *r = lerp(*r, mean_sq(row_sum, n_cols), w);
                }
                for (c, &sum) in col_var[b * cols..(b + 1) * cols].iter_mut().zip(&**scratch) {
                    *c = lerp(*c, mean_sq(sum, n_rows), w);
                }
            }
        }
    }
    Ok(())
}

/// Calls `f(i, uᵢ)` for every element of the update `u = ±g / √max(v̂, ε₁²)`.
#[inline]
fn for_each_update<T: Element>(
    grad: &[T],
    moment: &SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
    mut f: impl FnMut(usize, T),
) {
    let u = |v: T, g: T| {
        let g = if h.maximize { -g } else { g };
        T::ONE / v.nan_max(h.eps1_sq).sqrt() * g
    };
    match moment {
        SecondMoment::Full(variance) => {
            for (i, (&v, &g)) in variance.iter().zip(grad).enumerate() {
                f(i, u(v, g));
            }
        }
        SecondMoment::Factored {
            row_var,
            col_var,
            rows,
            cols,
            ..
        } => {
            let (rows, cols) = (*rows, *cols);
            let n_rows = T::from_f64(rows as f64);
            for (b, matrix) in grad.chunks_exact(rows * cols).enumerate() {
                let r = &row_var[b * rows..(b + 1) * rows];
                let c = &col_var[b * cols..(b + 1) * cols];
                // torch: row_var.mean(dim=-2).clamp_(min=eps1).
                let r_sum: f64 = r.iter().map(|x| x.to_f64()).sum();
                let r_mean = (T::from_f64(r_sum) / n_rows).nan_max(h.eps1);
                for (i, row) in matrix.chunks_exact(cols).enumerate() {
                    for (j, (&g, &cj)) in row.iter().zip(c).enumerate() {
                        // torch: (row_var @ col_var).div_(mean): an outer product, then a division.
                        f(b * rows * cols + i * cols + j, u(r[i] * cj / r_mean, g));
                    }
                }
            }
        }
    }
}

/// `Σ uᵢ²` of the update, in `f64`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn update_sum_sq<T: Element>(
    grad: &[T],
    moment: &SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
) -> f64 {
    let mut sum = 0.0;
    for_each_update(grad, moment, h, |_, u| sum += u.to_f64() * u.to_f64());
    sum
}

/// `θ ← θ·decay` (when weight decay is on), then `θ ← θ + step·u`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn apply<T: Element>(
    param: &mut [T],
    grad: &[T],
    moment: &SecondMoment<'_, T>,
    h: &AdafactorScalars<T>,
    decay: Option<T>,
    step: T,
) -> Result<()> {
    check_len("adafactor", "grad", param.len(), grad.len())?;
    for_each_update(grad, moment, h, |i, u| {
        let p = decay.map_or(param[i], |d| param[i] * d);
        param[i] = u.mul_add(step, p);
    });
    Ok(())
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
        second_moment(&grad, &mut m, &scalars()).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(row[0], 14.0 / 3.0) && close(row[1], 77.0 / 3.0));
        assert!(close(col[0], 17.0 / 2.0) && close(col[2], 45.0 / 2.0));
    }

    #[test]
    fn a_full_second_moment_gives_a_sign_update() {
        // With v = g² exactly (weight 1), u = g/|g| = ±1.
        let grad = [3.0, -0.5];
        let mut v = [0.0; 2];
        let mut m = SecondMoment::Full(&mut v);
        second_moment(&grad, &mut m, &scalars()).unwrap();
        assert_eq!(update_sum_sq(&grad, &m, &scalars()), 2.0);
        let mut p = [1.0, 1.0];
        apply(&mut p, &grad, &m, &scalars(), None, -0.25).unwrap();
        assert_eq!(p, [0.75, 1.25]);
    }
}
