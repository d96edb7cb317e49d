//! Kernels for sparse gradients: only the rows named by a coalesced gradient
//! are read and written, one row at a time.

use super::{check_len, simd, AdaptiveScalars};
use crate::error::{Error, Result};
use crate::tensor::Element;

/// `values` holds `rows.len()` rows of `width` elements; yields where each
/// row starts in `values` and in the dense tensors of `len` elements.
fn row_spans<'a>(
    kernel: &'static str,
    len: usize,
    rows: &'a [usize],
    values: usize,
    width: usize,
) -> Result<impl Iterator<Item = (usize, usize)> + 'a> {
    check_len(kernel, "values", rows.len() * width, values)?;
    if let Some(&bad) = rows.iter().find(|&&r| (r + 1) * width > len) {
        return Err(Error::LengthMismatch {
            kernel,
            name: "row index",
            expected: len / width.max(1),
            found: bad + 1,
        });
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(move |(k, &r)| (k * width, r * width)))
}

simd! {
/// Adagrad on the rows of a sparse gradient: `s ← s + g²`,
/// `θ ← θ − clr·g/(√s + ε)`, in torch's order (`state_sum.add_(g²)`, then
/// `param.add_(g/std, alpha=−clr)`). torch adds a sparse tensor into a dense
/// one with BLAS `axpy` (a fused multiply-add) when rows have more than one
/// element (`fused`), and with a multiply then an add for 1-D parameters.
pub fn adagrad_sparse<T: Element>(
    param: &mut [T],
    sum: &mut [T],
    rows: &[usize],
    values: &[T],
    width: usize,
    fused: bool,
    h: &AdaptiveScalars<T>,
) -> Result<()> {
    check_len("adagrad_sparse", "sum", param.len(), sum.len())?;
    for (at, start) in row_spans("adagrad_sparse", param.len(), rows, values.len(), width)? {
        let span = start..start + width;
        for ((p, s), &g) in param[span.clone()]
            .iter_mut()
            .zip(&mut sum[span])
            .zip(&values[at..at + width])
        {
            let g = if h.maximize { -g } else { g };
            *s = *s + g * g;
            let u = g / (s.sqrt() + h.eps);
            *p = if fused {
                u.mul_add(h.neg_lr, *p)
            } else {
                *p + h.neg_lr * u
            };
        }
    }
    Ok(())
}}

/// The scalars of one SparseAdam step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct SparseAdamScalars<T> {
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `ε`.
    pub eps: T,
    /// `−lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ)`.
    pub neg_step_size: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

simd! {
/// SparseAdam on the rows of a sparse gradient, in torch's order:
/// `Δm = (g − m)(1−β₁)`, `m ← m + Δm`, `Δv = (g² − v)(1−β₂)`, `v ← v + Δv`,
/// `θ ← θ + (−step_size)·(Δm + m_old)/(√(Δv + v_old) + ε)`.
pub fn sparse_adam<T: Element>(
    param: &mut [T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    rows: &[usize],
    values: &[T],
    width: usize,
    h: &SparseAdamScalars<T>,
) -> Result<()> {
    check_len("sparse_adam", "exp_avg", param.len(), exp_avg.len())?;
    check_len("sparse_adam", "exp_avg_sq", param.len(), exp_avg_sq.len())?;
    for (at, start) in row_spans("sparse_adam", param.len(), rows, values.len(), width)? {
        let span = start..start + width;
        for (((p, m), v), &g) in param[span.clone()]
            .iter_mut()
            .zip(&mut exp_avg[span.clone()])
            .zip(&mut exp_avg_sq[span])
            .zip(&values[at..at + width])
        {
            let g = if h.maximize { -g } else { g };
            let (m_old, v_old) = (*m, *v);
            let dm = (g - m_old) * h.one_minus_beta1;
            *m = m_old + dm;
            let dv = (g * g - v_old) * h.one_minus_beta2;
            *v = v_old + dv;
            let denom = (dv + v_old).sqrt() + h.eps;
            *p = *p + ((dm + m_old) / denom) * h.neg_step_size;
        }
    }
    Ok(())
}}

/// SGD's `θ.add_(g, alpha=−lr)` with a sparse gradient as handed in
/// (rows unsorted and repeated), as torch adds a sparse tensor into a dense
/// one: entry by entry in the order given, one fused multiply-add per
/// element (checked against torch for 1-D and 2-D parameters, 3 to 40
/// entries). With `maximize` the values are negated first.
pub fn sgd_sparse<T: Element>(
    param: &mut [T],
    rows: &[usize],
    values: &[T],
    width: usize,
    neg_lr: T,
    maximize: bool,
) -> Result<()> {
    for (at, start) in row_spans("sgd_sparse", param.len(), rows, values.len(), width)? {
        let span = start..start + width;
        for (p, &g) in param[span].iter_mut().zip(&values[at..at + width]) {
            let g = if maximize { -g } else { g };
            *p = g.mul_add(neg_lr, *p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_rows_change() {
        let h = SparseAdamScalars {
            one_minus_beta1: 0.1f64,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            neg_step_size: -0.5,
            maximize: false,
        };
        let mut p = [1.0f64; 6];
        let (mut m, mut v) = ([0.0f64; 6], [0.0f64; 6]);
        sparse_adam(&mut p, &mut m, &mut v, &[2], &[3.0, -3.0], 2, &h).unwrap();
        assert_eq!(&p[..4], &[1.0; 4]);
        assert!(p[4] < 1.0 && p[5] > 1.0);
        assert_eq!(&m[..4], &[0.0; 4]);
    }

    #[test]
    fn rows_outside_the_parameter_are_an_error_not_a_panic() {
        let h = AdaptiveScalars::<f32>::new(-0.1, 0.0, 1e-10, false);
        let (mut p, mut s) = ([0.0f32; 4], [0.0f32; 4]);
        let err = adagrad_sparse(&mut p, &mut s, &[2], &[1.0, 1.0], 2, true, &h).unwrap_err();
        assert!(
            matches!(err, Error::LengthMismatch { found: 3, .. }),
            "{err:?}"
        );
        assert!(adagrad_sparse(&mut p, &mut s, &[0], &[1.0; 3], 2, true, &h).is_err());
        assert_eq!(p, [0.0; 4]);
    }
}
