//! SOAP's element-wise loops (the algorithm is `optim/soap.rs`): each is
//! compiled for AVX2+FMA as well as the baseline ([`simd!`](super::simd)),
//! so that its `lerp`s are the CPU's fused multiply-adds rather than calls
//! to a software `fma` (which took 45% of a step). The matrix products and
//! factorizations are faer's (`crate::linalg`).

use super::{lerp, simd};
use crate::tensor::Element;

simd! {
/// `sᵢ ← lerp(sᵢ, xᵢ, w)`: torch's `s.lerp_(x, w)` (the statistics `GG`).
pub fn lerp_toward<T: Element>(start: &mut [T], end: &[T], weight: T) {
    for (s, &x) in start.iter_mut().zip(end) {
        *s = lerp(*s, x, weight);
    }
}}

simd! {
/// `vᵢ ← lerp(vᵢ, xᵢ², w)`: the second moment of the projected gradient `x`.
pub fn lerp_toward_square<T: Element>(v: &mut [T], x: &[T], weight: T) {
    for (v, &x) in v.iter_mut().zip(x) {
        *v = lerp(*v, x * x, weight);
    }
}}

simd! {
/// `mᵢ ← lerp(mᵢ, ±gᵢ, w)`: the first moment, `−g` where maximizing.
pub fn lerp_toward_signed<T: Element>(m: &mut [T], grad: &[T], weight: T, maximize: bool) {
    if maximize {
        for (m, &g) in m.iter_mut().zip(grad) {
            *m = lerp(*m, -g, weight);
        }
    } else {
        for (m, &g) in m.iter_mut().zip(grad) {
            *m = lerp(*m, g, weight);
        }
    }
}}

simd! {
/// `rᵢ ← rᵢ / (√vᵢ + ε)`.
pub fn divide_by_root<T: Element>(r: &mut [T], v: &[T], eps: T) {
    for (r, &v) in r.iter_mut().zip(v) {
        *r = *r / (v.sqrt() + eps);
    }
}}

simd! {
/// `θᵢ ← (θᵢ + α·uᵢ)·d`, the product only with weight decay (`d = 1 − lr·λ`):
/// torch's `p.add_(u, alpha=α)` then `p.mul_(d)`.
pub fn add_scaled_then_decay<T: Element>(param: &mut [T], u: &[T], alpha: T, decay: Option<T>) {
    match decay {
        Some(d) => {
            for (p, &u) in param.iter_mut().zip(u) {
                *p = u.mul_add(alpha, *p) * d;
            }
        }
        None => {
            for (p, &u) in param.iter_mut().zip(u) {
                *p = u.mul_add(alpha, *p);
            }
        }
    }
}}
