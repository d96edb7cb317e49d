//! Gradient clipping: `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Both work in place on the gradients of a list of parameters: ferroptim's
//! [`Param`](crate::Param)s or any other [`ParamSlot`] (an adapter's, such
//! as `ferroptim-candle`'s, whose gradients live in the framework); for an
//! optimizer's, pass `opt.params()`. Parameters without a gradient are
//! skipped, as in torch. Dense gradients only.
//!
//! ```text
//! ‖g‖ₚ = ‖(‖g₁‖ₚ, …, ‖gₙ‖ₚ)‖ₚ            the norm of the per-tensor norms
//! gᵢ ← gᵢ · min(max_norm / (‖g‖ₚ + 10⁻⁶), 1)
//! ```

use crate::error::{Error, Result};
use crate::slot::{GradKind, ParamSlot};
use crate::tensor::{Dtype, Element, TensorDataMut};
use crate::validate::py_float;

/// `‖x‖ₚ` of values given as `f64`, accumulated in `f64`: `p = ∞` is the
/// largest magnitude, `−∞` the smallest, `0` the number of non-zeros.
fn vector_norm(x: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p == f64::INFINITY {
        x.fold(0.0, |m, v| {
            if v.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(v.abs())
            }
        })
    } else if p == f64::NEG_INFINITY {
        x.fold(f64::INFINITY, |m, v| {
            if v.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.min(v.abs())
            }
        })
    } else if p == 0.0 {
        x.map(|v| f64::from(u8::from(v != 0.0))).sum()
    } else if p == 1.0 {
        x.map(f64::abs).sum()
    } else if p == 2.0 {
        x.map(|v| v * v).sum::<f64>().sqrt()
    } else {
        x.map(|v| v.abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
}

fn round_to(x: f64, dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F64 => x,
        // The 16-bit types never get here (check_dense refuses them).
        _ => f64::from(x as f32),
    }
}

/// Scales the gradients so that their total `norm_type`-norm is at most
/// `max_norm`, and returns the total norm before clipping (torch's
/// `clip_grad_norm_`). The total is in the gradients' dtype (float64 if any
/// is). With `error_if_nonfinite`, a NaN or infinite total is an error and
/// nothing is scaled.
///
/// ```
/// use ferroptim::{clip, Param, Tensor};
/// let p = Param::zeros::<f64>(&[2]);
/// p.set_grad(Tensor::from_vec(vec![3.0f64, 4.0], &[2])?)?;
/// let total = clip::clip_grad_norm(&[p.clone()], 1.0, 2.0, false)?;
/// assert_eq!(total, 5.0);
/// let Some(ferroptim::Grad::Dense(g)) = p.grad() else { unreachable!() };
/// assert!((g.to_f64_vec()[0] - 0.6).abs() < 1e-6);
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub fn clip_grad_norm<P: ParamSlot>(
    params: &[P],
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<f64> {
    check_dense(params, "clip_grad_norm")?;
    let mut norms = Vec::new();
    let mut total_dtype = None;
    for (i, p) in params.iter().enumerate() {
        let mut empty = false;
        let mut norm = 0.0;
        let had = p.with_grad_mut(i, &mut |g| {
            empty = g.is_empty();
            norm = match g {
                TensorDataMut::F32(v) => vector_norm(v.iter().map(|&x| f64::from(x)), norm_type),
                TensorDataMut::F64(v) => vector_norm(v.iter().copied(), norm_type),
                TensorDataMut::BF16(v) => vector_norm(v.iter().map(|x| x.to_f64()), norm_type),
                TensorDataMut::F16(v) => vector_norm(v.iter().map(|x| x.to_f64()), norm_type),
            };
            Ok(())
        })?;
        if !had {
            continue;
        }
        if norm_type.is_infinite() && empty {
            return Err(Error::EmptyNorm {
                norm_type: py_float(norm_type),
                param: i,
            });
        }
        norms.push(round_to(norm, p.dtype()));
        total_dtype = match (total_dtype, p.dtype()) {
            (Some(Dtype::F64), _) | (_, Dtype::F64) => Some(Dtype::F64),
            _ => Some(Dtype::F32),
        };
    }
    let Some(dtype) = total_dtype else {
        return Ok(0.0);
    };
    let total = round_to(vector_norm(norms.into_iter(), norm_type), dtype);
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::NonFiniteNorm {
            norm_type: py_float(norm_type),
        });
    }
    // torch: clamp(max_norm / (total + 1e-6), max=1), a reciprocal times a scalar.
    let denom = round_to(total + 1e-6, dtype);
    let coef = round_to(round_to(1.0 / denom, dtype) * max_norm, dtype);
    let coef = if coef > 1.0 { 1.0 } else { coef };
    for (i, p) in params.iter().enumerate() {
        p.with_grad_mut(i, &mut |g| {
            scale(g, coef);
            Ok(())
        })?;
    }
    Ok(total)
}

/// Refuses sparse gradients (torch's clipping reads `.grad` densely), before anything changes.
/// Every gradient dense, and of a dtype clipping runs at torch's numbers:
/// checked for every parameter before any gradient is scaled.
fn check_dense<P: ParamSlot>(params: &[P], what: &'static str) -> Result<()> {
    for (i, p) in params.iter().enumerate() {
        if p.dtype().is_reduced() {
            return Err(Error::DtypeUnsupported {
                what: format!("the gradient of parameter {i}"),
                dtype: p.dtype(),
                refused_by: what,
                supported: "float32 and float64",
            });
        }
        if p.grad_kind(i)? == Some(GradKind::Sparse) {
            return Err(Error::SparseGradUnsupported {
                optimizer: what,
                param: i,
            });
        }
    }
    Ok(())
}

fn scale(data: TensorDataMut<'_>, coef: f64) {
    fn apply<T: Element>(v: &mut [T], coef: T) {
        v.iter_mut().for_each(|x| *x = *x * coef);
    }
    match data {
        TensorDataMut::F32(v) => apply(v, coef as f32),
        TensorDataMut::F64(v) => apply(v, coef),
        // Refused by check_dense before anything is scaled.
        TensorDataMut::BF16(_) | TensorDataMut::F16(_) => {}
    }
}

/// Clamps every gradient element to `[−clip_value, clip_value]` (torch's
/// `clip_grad_value_`); NaN stays NaN.
///
/// ```
/// use ferroptim::{clip, Param, Tensor};
/// let p = Param::zeros::<f32>(&[3]);
/// p.set_grad(Tensor::from_vec(vec![-5.0f32, 0.25, 9.0], &[3])?)?;
/// clip::clip_grad_value(&[p.clone()], 1.0)?;
/// let Some(ferroptim::Grad::Dense(g)) = p.grad() else { unreachable!() };
/// assert_eq!(g.to_f64_vec(), vec![-1.0, 0.25, 1.0]);
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub fn clip_grad_value<P: ParamSlot>(params: &[P], clip_value: f64) -> Result<()> {
    fn apply<T: Element>(v: &mut [T], limit: T) {
        for x in v {
            // torch: clamp_min_(−c) then clamp_max_(c); comparisons leave NaN alone.
            if *x < -limit {
                *x = -limit;
            }
            if *x > limit {
                *x = limit;
            }
        }
    }
    check_dense(params, "clip_grad_value")?;
    for (i, p) in params.iter().enumerate() {
        p.with_grad_mut(i, &mut |g| {
            match g {
                TensorDataMut::F32(v) => apply(v, clip_value as f32),
                TensorDataMut::F64(v) => apply(v, clip_value),
                // Refused by check_dense before anything is clamped.
                TensorDataMut::BF16(_) | TensorDataMut::F16(_) => {}
            }
            Ok(())
        })?;
    }
    Ok(())
}
