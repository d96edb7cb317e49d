//! Reductions and vector updates on flat vectors, for LBFGS.
//!
//! torch computes `dot` with BLAS and `sum`/`max` with its vectorised
//! reductions, whose order of additions differs from these sequential loops:
//! results agree to the rounding of the sums (the LBFGS fixtures hold float64
//! to 1e-10), not to the bit.

use super::simd;
use crate::tensor::Element;

simd! {
/// `Σ aᵢ·bᵢ` over the common length, summed as torch 2.15's CPU `dot` sums
/// short vectors here (measured: up to 8 elements, bit for bit): products
/// rounded, even and odd positions in two sums, added at the end. BLAS sums
/// longer vectors in wider, machine-dependent orders.
pub fn dot<T: Element>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (mut even, mut odd) = (T::ZERO, T::ZERO);
    for (x, y) in a[..n].chunks_exact(2).zip(b[..n].chunks_exact(2)) {
        even = even + x[0] * y[0];
        odd = odd + x[1] * y[1];
    }
    if n % 2 == 1 {
        even = even + a[n - 1] * b[n - 1];
    }
    even + odd
}}

simd! {
/// `max |aᵢ|`, NaN if any element is NaN (torch's `abs().max()`); 0 when empty.
pub fn abs_max<T: Element>(a: &[T]) -> T {
    a.iter().fold(T::ZERO, |m, &x| m.nan_max(x.abs()))
}}

simd! {
/// `Σ |aᵢ|`.
pub fn abs_sum<T: Element>(a: &[T]) -> T {
    a.iter().fold(T::ZERO, |acc, &x| acc + x.abs())
}}

simd! {
/// `y ← y + α·x` with one rounding per element (torch's `add_(x, alpha=α)`).
pub fn axpy<T: Element>(y: &mut [T], alpha: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.mul_add(alpha, *y);
    }
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_and_axpy() {
        assert_eq!(dot(&[1.0f64, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
        assert_eq!(abs_max(&[1.0f32, -7.0, 3.0]), 7.0);
        assert!(abs_max(&[1.0f32, f32::NAN, 3.0]).is_nan());
        assert_eq!(abs_sum(&[1.0f64, -2.0]), 3.0);
        let mut y = [1.0f64, 1.0];
        axpy(&mut y, -2.0, &[0.5, 1.0]);
        assert_eq!(y, [0.0, -1.0]);
    }
}
