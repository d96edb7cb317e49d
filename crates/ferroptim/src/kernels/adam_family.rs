//! The kernels of Adam's relatives, NAdam and RAdam.

use super::{adam_inputs, adam_moments, check_len};
use crate::error::Result;
use crate::parallel::for_chunks;
use crate::tensor::Element;

/// The scalars of one NAdam step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct NadamScalars<T> {
    /// `1 − lr·λ`, the decoupled decay factor, `None` when off or coupled.
    pub decay: Option<T>,
    /// The L2 penalty added to the gradient, `None` when off or decoupled.
    pub weight_decay: Option<T>,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `1 − β₂ᵗ`.
    pub bias_correction2: T,
    /// `ε`.
    pub eps: T,
    /// `−lr·(1 − μ_t)/(1 − Π_t)`, the weight of `g/d`.
    pub grad_coef: T,
    /// `−lr·μ_{t+1}/(1 − Π_t·μ_{t+1})`, the weight of `m/d`.
    pub exp_avg_coef: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// One NAdam step, in torch's order: Adam's moment updates, then
/// `d = √(v/(1−β₂ᵗ)) + ε` and two `addcdiv`s (not fused), `g/d` then `m/d`.
pub fn nadam<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    h: &NadamScalars<T>,
) -> Result<()> {
    check_len("nadam", "grad", param.len(), grad.len())?;
    check_len("nadam", "exp_avg", param.len(), exp_avg.len())?;
    check_len("nadam", "exp_avg_sq", param.len(), exp_avg_sq.len())?;
    for_chunks(
        (param, grad, exp_avg, exp_avg_sq),
        |(param, grad, exp_avg, exp_avg_sq)| nadam_serial(param, grad, exp_avg, exp_avg_sq, h),
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn nadam_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    h: &NadamScalars<T>,
) {
    for (((p, &g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(exp_avg.iter_mut())
        .zip(exp_avg_sq.iter_mut())
    {
        let (x, g) = adam_inputs(*p, g, h.decay, h.weight_decay, h.maximize);
        adam_moments(m, v, g, (h.one_minus_beta1, h.beta2, h.one_minus_beta2));
        let denom = (*v / h.bias_correction2).sqrt() + h.eps;
        let x = x + (h.grad_coef * g) / denom;
        *p = x + (h.exp_avg_coef * *m) / denom;
    }
}

/// The scalars of one RAdam step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct RadamScalars<T> {
    /// `1 − lr·λ`, the decoupled decay factor, `None` when off or coupled.
    pub decay: Option<T>,
    /// The L2 penalty added to the gradient, `None` when off or decoupled.
    pub weight_decay: Option<T>,
    /// `1 − β₁`.
    pub one_minus_beta1: T,
    /// `β₂`.
    pub beta2: T,
    /// `1 − β₂`.
    pub one_minus_beta2: T,
    /// `1 − β₁ᵗ`.
    pub bias_correction1: T,
    /// `lr`.
    pub lr: T,
    /// `(√(1 − β₂ᵗ), r_t)` when the variance is tractable (ρ_t > 5), else `None`.
    pub rectification: Option<(T, T)>,
    /// `ε`.
    pub eps: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// One RAdam step, in torch's order: Adam's moment updates, `m̂ = m/(1−β₁ᵗ)`,
/// then `θ ← θ − ((m̂·lr)·((1/(√v + ε))·√(1−β₂ᵗ)))·r_t` when rectified
/// (`bc2**0.5 / denom` is a reciprocal times a scalar in torch) and
/// `θ ← θ − m̂·lr` otherwise.
pub fn radam<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    h: &RadamScalars<T>,
) -> Result<()> {
    check_len("radam", "grad", param.len(), grad.len())?;
    check_len("radam", "exp_avg", param.len(), exp_avg.len())?;
    check_len("radam", "exp_avg_sq", param.len(), exp_avg_sq.len())?;
    for_chunks(
        (param, grad, exp_avg, exp_avg_sq),
        |(param, grad, exp_avg, exp_avg_sq)| radam_serial(param, grad, exp_avg, exp_avg_sq, h),
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn radam_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    h: &RadamScalars<T>,
) {
    for (((p, &g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(exp_avg.iter_mut())
        .zip(exp_avg_sq.iter_mut())
    {
        let (x, g) = adam_inputs(*p, g, h.decay, h.weight_decay, h.maximize);
        adam_moments(m, v, g, (h.one_minus_beta1, h.beta2, h.one_minus_beta2));
        let corrected = (*m / h.bias_correction1) * h.lr;
        *p = match h.rectification {
            Some((sqrt_bc2, rect)) => {
                let adaptive = (T::ONE / (v.sqrt() + h.eps)) * sqrt_bc2;
                x - (corrected * adaptive) * rect
            }
            None => x - corrected,
        };
    }
}
