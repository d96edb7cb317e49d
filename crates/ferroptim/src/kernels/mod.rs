//! Fused element-wise update kernels on slices: one pass over memory per parameter.
//!
//! Each kernel is a pure function of slices and a struct of scalars. The
//! scalars torch computes in Python floats (bias corrections, step sizes) are
//! computed once per step in `f64` by the algorithm module, exactly as torch
//! does, then rounded to the tensor's dtype, as torch rounds a Python scalar
//! when it meets a tensor. Per element, the kernels follow the order of
//! torch's CPU operations (`add(alpha)`, `lerp` and `addcmul` are fused
//! multiply-adds there, `addcdiv` is not), so results agree to the bit.
//!
//! Each loop is compiled for AVX2+FMA as well as for the baseline target and
//! picked at run time (`multiversion`); the `portable` feature keeps only the
//! baseline build, so that tests can run it on any CPU. An FMA is exactly
//! rounded on either path, so the two give the same bits.

use crate::error::{Error, Result};
use crate::parallel::for_chunks;
use crate::tensor::Element;

pub mod adafactor;
mod adam_family;
mod asgd_rprop;
pub mod flat;
pub mod newton_schulz;
mod sparse;

pub use adam_family::{nadam, radam, NadamScalars, RadamScalars};
pub use asgd_rprop::{asgd, rprop, AsgdScalars, RpropScalars};
pub use sparse::{adagrad_sparse, sgd_sparse, sparse_adam, SparseAdamScalars};

pub(crate) fn check_len(
    kernel: &'static str,
    name: &'static str,
    expected: usize,
    found: usize,
) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            kernel,
            name,
            expected,
            found,
        })
    }
}

/// Python's `max(a, b)`: `b` only when `b > a`, so a NaN `b` loses and a
/// NaN `a` stays, as in the scalar arithmetic of torch's Python steps.
#[inline]
pub fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `b` only when `b < a`.
#[inline]
pub fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// torch's `lerp(start, end, weight)` on CPU: the formula depends on whether
/// the weight is below one half, for accuracy at both ends.
#[inline]
pub fn lerp<T: Element>(start: T, end: T, weight: T) -> T {
    let diff = end - start;
    if weight.abs() < T::from_f64(0.5) {
        weight.mul_add(diff, start)
    } else {
        (weight - T::ONE).mul_add(diff, end)
    }
}

/// The gradient every algorithm starts from: `±g + λ·θ` (torch's
/// `grad = -grad if maximize`, then `grad.add(param, alpha=weight_decay)`).
#[inline]
pub fn signed_decayed<T: Element>(g: T, p: T, maximize: bool, weight_decay: Option<T>) -> T {
    let g = if maximize { -g } else { g };
    match weight_decay {
        Some(wd) => p.mul_add(wd, g),
        None => g,
    }
}

/// Weight decay as Adam and its relatives apply it, rounded to `T`:
/// `(decay, weight_decay)` is `(Some(1 − lr·λ), None)` when decoupled (AdamW's
/// `param.mul_(1 − lr·λ)`), `(None, Some(λ))` for an L2 penalty added to the
/// gradient, and `(None, None)` when `λ = 0`.
pub fn adam_weight_decay<T: Element>(
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
) -> (Option<T>, Option<T>) {
    match (weight_decay != 0.0, decoupled) {
        (false, _) => (None, None),
        (true, true) => (Some(T::from_f64(1.0 - lr * weight_decay)), None),
        (true, false) => (None, Some(T::from_f64(weight_decay))),
    }
}

/// The start of every Adam-family update of one element: the parameter after
/// any decoupled decay, and the gradient after sign and L2 penalty.
#[inline]
fn adam_inputs<T: Element>(
    p: T,
    g: T,
    decay: Option<T>,
    weight_decay: Option<T>,
    maximize: bool,
) -> (T, T) {
    let p = decay.map_or(p, |decay| p * decay);
    (p, signed_decayed(g, p, maximize, weight_decay))
}

/// Adam's moment updates of one element, in torch's order:
/// `m ← lerp(m, g, 1−β₁)`, then `v ← β₂·v + (1−β₂)·g²`
/// (`exp_avg_sq.mul_(β₂).addcmul_(g, g, 1−β₂)`: torch's addcmul fuses the last multiply-add).
#[inline]
fn adam_moments<T: Element>(
    m: &mut T,
    v: &mut T,
    g: T,
    (one_minus_beta1, beta2, one_minus_beta2): (T, T, T),
) {
    *m = lerp(*m, g, one_minus_beta1);
    *v = (one_minus_beta2 * g).mul_add(g, *v * beta2);
}

/// The scalars of one SGD step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars<T> {
    /// `-lr`.
    pub neg_lr: T,
    /// The L2 penalty, `None` when `weight_decay == 0`.
    pub weight_decay: Option<T>,
    /// The momentum factor (used only by [`sgd_momentum`]).
    pub momentum: T,
    /// `1 - dampening`.
    pub one_minus_dampening: T,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// SGD without momentum: `p ← p − lr·(±g + λ·p)`.
pub fn sgd<T: Element>(param: &mut [T], grad: &[T], h: &SgdScalars<T>) -> Result<()> {
    check_len("sgd", "grad", param.len(), grad.len())?;
    for_chunks((param, grad), |(param, grad)| sgd_serial(param, grad, h));
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn sgd_serial<T: Element>(param: &mut [T], grad: &[T], h: &SgdScalars<T>) {
    for (p, &g) in param.iter_mut().zip(grad) {
        let d = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *p = d.mul_add(h.neg_lr, *p);
    }
}

/// SGD with momentum: `b ← μ·b + (1−τ)·g` (or `b ← g` on the buffer's first
/// step), then `p ← p − lr·(g + μ·b)` with Nesterov, `p ← p − lr·b` without.
pub fn sgd_momentum<T: Element>(
    param: &mut [T],
    grad: &[T],
    buf: &mut [T],
    first: bool,
    h: &SgdScalars<T>,
) -> Result<()> {
    check_len("sgd_momentum", "grad", param.len(), grad.len())?;
    check_len("sgd_momentum", "momentum_buffer", param.len(), buf.len())?;
    for_chunks((param, grad, buf), |(param, grad, buf)| {
        sgd_momentum_serial(param, grad, buf, first, h)
    });
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn sgd_momentum_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    buf: &mut [T],
    first: bool,
    h: &SgdScalars<T>,
) {
    for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
        let d = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *b = if first {
            d
        } else {
            d.mul_add(h.one_minus_dampening, *b * h.momentum)
        };
        let d = if h.nesterov {
            b.mul_add(h.momentum, d)
        } else {
            *b
        };
        *p = d.mul_add(h.neg_lr, *p);
    }
}

/// The scalars of one Adam step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars<T> {
    /// `1 − β₁`, the weight of `exp_avg.lerp_(grad, 1 − β₁)`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// The L2 penalty added to the gradient, `None` when off or decoupled.
    pub weight_decay: Option<T>,
    /// `1 − lr·λ`, the decoupled (AdamW) decay factor, `None` when off or coupled.
    pub decay: Option<T>,
    /// `√(1 − β₂ᵗ)`.
    pub bias_correction2_sqrt: T,
    /// `ε`.
    pub eps: T,
    /// `−lr / (1 − β₁ᵗ)`.
    pub neg_step_size: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// One Adam step:
/// `m ← lerp(m, g, 1−β₁)`, `v ← β₂·v + (1−β₂)·g²`, `v̂ ← max(v̂, v)` (AMSGrad),
/// `p ← p − (lr/(1−β₁ᵗ))·m / (√v / √(1−β₂ᵗ) + ε)`.
pub fn adam<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    max_exp_avg_sq: Option<&mut [T]>,
    h: &AdamScalars<T>,
) -> Result<()> {
    let n = param.len();
    check_len("adam", "grad", n, grad.len())?;
    check_len("adam", "exp_avg", n, exp_avg.len())?;
    check_len("adam", "exp_avg_sq", n, exp_avg_sq.len())?;
    if let Some(max) = &max_exp_avg_sq {
        check_len("adam", "max_exp_avg_sq", n, max.len())?;
    }
    for_chunks(
        (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
        |(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)| {
            adam_serial(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, h)
        },
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn adam_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    mut max_exp_avg_sq: Option<&mut [T]>,
    h: &AdamScalars<T>,
) {
    let n = param.len();
    let betas = (h.one_minus_beta1, h.beta2, h.one_minus_beta2);
    for i in 0..n {
        let (p, g) = adam_inputs(param[i], grad[i], h.decay, h.weight_decay, h.maximize);
        adam_moments(&mut exp_avg[i], &mut exp_avg_sq[i], g, betas);
        let (m, v) = (exp_avg[i], exp_avg_sq[i]);
        let v = match max_exp_avg_sq.as_deref_mut() {
            Some(max) => {
                max[i] = max[i].nan_max(v);
                max[i]
            }
            None => v,
        };
        let denom = v.sqrt() / h.bias_correction2_sqrt + h.eps;
        param[i] = p + (h.neg_step_size * m) / denom;
    }
}

/// The scalars shared by the adaptive kernels below, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveScalars<T> {
    /// The step's learning rate, negated (after any decay or bias correction).
    pub neg_lr: T,
    /// The L2 penalty, `None` when `weight_decay == 0`.
    pub weight_decay: Option<T>,
    /// `ε`.
    pub eps: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl<T: Element> AdaptiveScalars<T> {
    /// Rounds torch's Python-float scalars to `T`; a zero `weight_decay` means none.
    pub fn new(neg_lr: f64, weight_decay: f64, eps: f64, maximize: bool) -> Self {
        AdaptiveScalars {
            neg_lr: T::from_f64(neg_lr),
            weight_decay: (weight_decay != 0.0).then(|| T::from_f64(weight_decay)),
            eps: T::from_f64(eps),
            maximize,
        }
    }
}

/// One Adamax step: `m ← lerp(m, g, 1−β₁)`, `u ← max(β₂·u, |g| + ε)`,
/// `θ ← θ − (lr/(1−β₁ᵗ))·m/u` (`h.neg_lr` is `−lr/(1−β₁ᵗ)`).
pub fn adamax<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_inf: &mut [T],
    one_minus_beta1: T,
    beta2: T,
    h: &AdaptiveScalars<T>,
) -> Result<()> {
    check_len("adamax", "grad", param.len(), grad.len())?;
    check_len("adamax", "exp_avg", param.len(), exp_avg.len())?;
    check_len("adamax", "exp_inf", param.len(), exp_inf.len())?;
    for_chunks(
        (param, grad, exp_avg, exp_inf),
        |(param, grad, exp_avg, exp_inf)| {
            adamax_serial(param, grad, exp_avg, exp_inf, one_minus_beta1, beta2, h)
        },
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn adamax_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_inf: &mut [T],
    one_minus_beta1: T,
    beta2: T,
    h: &AdaptiveScalars<T>,
) {
    for (((p, &g), m), u) in param
        .iter_mut()
        .zip(grad)
        .zip(exp_avg.iter_mut())
        .zip(exp_inf.iter_mut())
    {
        let g = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *m = lerp(*m, g, one_minus_beta1);
        *u = (*u * beta2).nan_max(g.abs() + h.eps);
        *p = *p + (h.neg_lr * *m) / *u;
    }
}

/// One Adadelta step: `v ← ρ·v + (1−ρ)·g²`, `Δ ← √(a + ε)/√(v + ε)·g`,
/// `a ← ρ·a + (1−ρ)·Δ²`, `θ ← θ − lr·Δ`.
pub fn adadelta<T: Element>(
    param: &mut [T],
    grad: &[T],
    square_avg: &mut [T],
    acc_delta: &mut [T],
    (rho, one_minus_rho): (T, T),
    h: &AdaptiveScalars<T>,
) -> Result<()> {
    check_len("adadelta", "grad", param.len(), grad.len())?;
    check_len("adadelta", "square_avg", param.len(), square_avg.len())?;
    check_len("adadelta", "acc_delta", param.len(), acc_delta.len())?;
    for_chunks(
        (param, grad, square_avg, acc_delta),
        |(param, grad, square_avg, acc_delta)| {
            adadelta_serial(param, grad, square_avg, acc_delta, (rho, one_minus_rho), h)
        },
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn adadelta_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    square_avg: &mut [T],
    acc_delta: &mut [T],
    (rho, one_minus_rho): (T, T),
    h: &AdaptiveScalars<T>,
) {
    for (((p, &g), v), a) in param
        .iter_mut()
        .zip(grad)
        .zip(square_avg.iter_mut())
        .zip(acc_delta.iter_mut())
    {
        let g = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *v = (one_minus_rho * g).mul_add(g, *v * rho);
        let std = (*v + h.eps).sqrt();
        let delta = ((*a + h.eps).sqrt() / std) * g;
        *a = (one_minus_rho * delta).mul_add(delta, *a * rho);
        *p = delta.mul_add(h.neg_lr, *p);
    }
}

/// One dense Adagrad step: `s ← s + g²`, `θ ← θ − clr·g/(√s + ε)` with
/// `clr = lr/(1 + (t−1)·lr_decay)` (`h.neg_lr` is `−clr`).
pub fn adagrad<T: Element>(
    param: &mut [T],
    grad: &[T],
    sum: &mut [T],
    h: &AdaptiveScalars<T>,
) -> Result<()> {
    check_len("adagrad", "grad", param.len(), grad.len())?;
    check_len("adagrad", "sum", param.len(), sum.len())?;
    for_chunks((param, grad, sum), |(param, grad, sum)| {
        adagrad_serial(param, grad, sum, h)
    });
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn adagrad_serial<T: Element>(param: &mut [T], grad: &[T], sum: &mut [T], h: &AdaptiveScalars<T>) {
    for ((p, &g), s) in param.iter_mut().zip(grad).zip(sum.iter_mut()) {
        let g = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *s = g.mul_add(g, *s);
        *p = *p + (h.neg_lr * g) / (s.sqrt() + h.eps);
    }
}

/// The optional buffers of RMSprop.
pub struct RmspropBuffers<'a, T> {
    /// `grad_avg`, when centered.
    pub grad_avg: Option<&'a mut [T]>,
    /// `momentum_buffer` and the momentum factor, when momentum > 0.
    pub momentum: Option<(&'a mut [T], T)>,
}

/// One RMSprop step: `v ← α·v + (1−α)·g²`; centered: `ḡ ← lerp(ḡ, g, 1−α)`,
/// `d ← √(v − ḡ²) + ε`, else `d ← √v + ε`; with momentum `b ← μ·b + g/d`,
/// `θ ← θ − lr·b`, else `θ ← θ − lr·g/d`.
pub fn rmsprop<T: Element>(
    param: &mut [T],
    grad: &[T],
    square_avg: &mut [T],
    alphas: (T, T),
    buffers: RmspropBuffers<'_, T>,
    h: &AdaptiveScalars<T>,
) -> Result<()> {
    let n = param.len();
    check_len("rmsprop", "grad", n, grad.len())?;
    check_len("rmsprop", "square_avg", n, square_avg.len())?;
    if let Some(ga) = &buffers.grad_avg {
        check_len("rmsprop", "grad_avg", n, ga.len())?;
    }
    if let Some((buf, _)) = &buffers.momentum {
        check_len("rmsprop", "momentum_buffer", n, buf.len())?;
    }
    let (momentum_buffer, momentum) = match buffers.momentum {
        Some((buf, momentum)) => (Some(buf), Some(momentum)),
        None => (None, None),
    };
    let slices = (param, grad, square_avg, buffers.grad_avg, momentum_buffer);
    for_chunks(
        slices,
        |(param, grad, square_avg, grad_avg, momentum_buffer)| {
            let buffers = RmspropBuffers {
                grad_avg,
                momentum: momentum_buffer.zip(momentum),
            };
            rmsprop_serial(param, grad, square_avg, alphas, buffers, h)
        },
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn rmsprop_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    square_avg: &mut [T],
    alphas: (T, T),
    buffers: RmspropBuffers<'_, T>,
    h: &AdaptiveScalars<T>,
) {
    // One plain zipped loop per combination of buffers, so that each vectorises.
    let params = param.iter_mut().zip(grad).zip(square_avg.iter_mut());
    match (buffers.grad_avg, buffers.momentum) {
        (None, None) => {
            for ((p, &g), v) in params {
                rmsprop_element(p, g, v, None, None, alphas, h);
            }
        }
        (Some(ga), None) => {
            for (((p, &g), v), a) in params.zip(ga.iter_mut()) {
                rmsprop_element(p, g, v, Some(a), None, alphas, h);
            }
        }
        (None, Some((buf, momentum))) => {
            for (((p, &g), v), b) in params.zip(buf.iter_mut()) {
                rmsprop_element(p, g, v, None, Some((b, momentum)), alphas, h);
            }
        }
        (Some(ga), Some((buf, momentum))) => {
            for ((((p, &g), v), a), b) in params.zip(ga.iter_mut()).zip(buf.iter_mut()) {
                rmsprop_element(p, g, v, Some(a), Some((b, momentum)), alphas, h);
            }
        }
    }
}

/// RMSprop on one element; `grad_avg` when centered, `(buffer, μ)` with momentum.
#[inline(always)]
fn rmsprop_element<T: Element>(
    p: &mut T,
    g: T,
    v: &mut T,
    grad_avg: Option<&mut T>,
    momentum: Option<(&mut T, T)>,
    (alpha, one_minus_alpha): (T, T),
    h: &AdaptiveScalars<T>,
) {
    let g = signed_decayed(g, *p, h.maximize, h.weight_decay);
    *v = (one_minus_alpha * g).mul_add(g, *v * alpha);
    let avg = match grad_avg {
        Some(a) => {
            *a = lerp(*a, g, one_minus_alpha);
            (-*a).mul_add(*a, *v).sqrt()
        }
        None => v.sqrt(),
    } + h.eps;
    *p = match momentum {
        Some((b, momentum)) => {
            *b = *b * momentum + g / avg;
            b.mul_add(h.neg_lr, *p)
        }
        None => *p + (h.neg_lr * g) / avg,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerp_hits_both_ends_exactly() {
        for w in [0.0f32, 0.1, 0.49, 0.5, 0.9, 1.0] {
            let got = lerp(2.0f32, 5.0, w);
            assert!((got - (2.0 + 3.0 * w)).abs() < 1e-6, "{w}: {got}");
        }
        assert_eq!(lerp(2.0f64, 5.0, 1.0), 5.0);
        assert_eq!(lerp(2.0f64, 5.0, 0.0), 2.0);
    }

    #[test]
    fn kernels_reject_slices_of_other_lengths() {
        let h = SgdScalars {
            neg_lr: -0.1f32,
            weight_decay: None,
            momentum: 0.0,
            one_minus_dampening: 1.0,
            nesterov: false,
            maximize: false,
        };
        let mut p = [1.0f32; 3];
        assert!(matches!(
            sgd(&mut p, &[1.0; 2], &h),
            Err(Error::LengthMismatch { name: "grad", .. })
        ));
        assert!(sgd_momentum(&mut p, &[1.0; 3], &mut [0.0; 4], false, &h).is_err());
        assert_eq!(p, [1.0; 3]);
    }

    #[test]
    fn sgd_descends_and_maximize_ascends() {
        let mut h = SgdScalars {
            neg_lr: -0.5f64,
            weight_decay: None,
            momentum: 0.0,
            one_minus_dampening: 1.0,
            nesterov: false,
            maximize: false,
        };
        let mut p = [1.0f64];
        sgd(&mut p, &[2.0], &h).unwrap();
        assert_eq!(p, [0.0]);
        h.maximize = true;
        sgd(&mut p, &[2.0], &h).unwrap();
        assert_eq!(p, [1.0]);
    }
}
