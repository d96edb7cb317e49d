//! The kernels of ASGD and Rprop, which keep per-element state of their own
//! kind (an average of the iterates; per-element step sizes).

use super::{check_len, signed_decayed};
use crate::error::Result;
use crate::parallel::for_chunks;
use crate::tensor::Element;

/// The scalars of one ASGD step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct AsgdScalars<T> {
    /// `1 − λ·η`, the decay of the parameter.
    pub decay: T,
    /// `−η`, the step's learning rate, negated.
    pub neg_eta: T,
    /// The averaging weight `μ`; `None` when `μ = 1` (the average is the iterate).
    pub mu: Option<T>,
    /// The L2 penalty, `None` when `weight_decay == 0`.
    pub weight_decay: Option<T>,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// One ASGD step: `θ ← (1 − λη)·θ − η·g`, then `ā ← ā + μ·(θ − ā)`
/// (`ā ← θ` when `μ = 1`), in torch's order: `param.mul_(1 − λη)`,
/// `param.add_(grad, alpha=−η)` (a fused multiply-add), `ax.add_(param.sub(ax).mul_(mu))`.
pub fn asgd<T: Element>(
    param: &mut [T],
    grad: &[T],
    ax: &mut [T],
    h: &AsgdScalars<T>,
) -> Result<()> {
    check_len("asgd", "grad", param.len(), grad.len())?;
    check_len("asgd", "ax", param.len(), ax.len())?;
    for_chunks((param, grad, ax), |(param, grad, ax)| {
        asgd_serial(param, grad, ax, h)
    });
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn asgd_serial<T: Element>(param: &mut [T], grad: &[T], ax: &mut [T], h: &AsgdScalars<T>) {
    for ((p, &g), a) in param.iter_mut().zip(grad).zip(ax.iter_mut()) {
        let g = signed_decayed(g, *p, h.maximize, h.weight_decay);
        *p = g.mul_add(h.neg_eta, *p * h.decay);
        *a = match h.mu {
            Some(mu) => *a + (*p - *a) * mu,
            None => *p,
        };
    }
}

/// The scalars of one Rprop step, rounded to the parameter's dtype.
#[derive(Clone, Copy, Debug)]
pub struct RpropScalars<T> {
    /// `η⁻`, the step-size factor after a sign change.
    pub etaminus: T,
    /// `η⁺`, the step-size factor while the sign holds.
    pub etaplus: T,
    /// The smallest step size.
    pub step_size_min: T,
    /// The largest step size.
    pub step_size_max: T,
    /// Ascend instead of descend.
    pub maximize: bool,
}

/// `torch.clamp(x, min, max)`: NaN stays NaN, and `max` wins when `min > max`.
#[inline]
fn clamp<T: Element>(x: T, min: T, max: T) -> T {
    if x.is_nan() {
        return x;
    }
    let x = if x < min { min } else { x };
    if x > max {
        max
    } else {
        x
    }
}

/// `torch.sign`: −1, 0 or 1, NaN for NaN.
#[inline]
fn sign<T: Element>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else if x.is_nan() {
        x
    } else {
        T::ZERO
    }
}

/// One Rprop step, per element: with `s = sign(g·g_prev)`, the step size is
/// multiplied by `η⁺` (s > 0), `η⁻` (s < 0) or 1 and clamped; where the sign
/// flipped the gradient is taken as 0 (no move, and no flip next time);
/// `θ ← θ − sign(g)·step_size`; `g_prev ← g`.
pub fn rprop<T: Element>(
    param: &mut [T],
    grad: &[T],
    prev: &mut [T],
    step_size: &mut [T],
    h: &RpropScalars<T>,
) -> Result<()> {
    check_len("rprop", "grad", param.len(), grad.len())?;
    check_len("rprop", "prev", param.len(), prev.len())?;
    check_len("rprop", "step_size", param.len(), step_size.len())?;
    for_chunks(
        (param, grad, prev, step_size),
        |(param, grad, prev, step_size)| rprop_serial(param, grad, prev, step_size, h),
    );
    Ok(())
}

#[cfg_attr(
    not(feature = "portable"),
    multiversion::multiversion(targets("x86_64+avx2+fma"))
)]
fn rprop_serial<T: Element>(
    param: &mut [T],
    grad: &[T],
    prev: &mut [T],
    step_size: &mut [T],
    h: &RpropScalars<T>,
) {
    for (((p, &g), gp), ss) in param
        .iter_mut()
        .zip(grad)
        .zip(prev.iter_mut())
        .zip(step_size.iter_mut())
    {
        let g = if h.maximize { -g } else { g };
        let s = g * *gp;
        let factor = if s > T::ZERO {
            h.etaplus
        } else if s < T::ZERO {
            h.etaminus
        } else if s == T::ZERO {
            T::ONE
        } else {
            s
        };
        *ss = clamp(*ss * factor, h.step_size_min, h.step_size_max);
        // torch: grad[sign.eq(etaminus)] = 0
        let g = if factor == h.etaminus { T::ZERO } else { g };
        *p = (-sign(g)).mul_add(*ss, *p);
        *gp = g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rprop_grows_the_step_while_the_sign_holds_and_backs_off_after_a_flip() {
        let h = RpropScalars {
            etaminus: 0.5f64,
            etaplus: 2.0,
            step_size_min: 0.01,
            step_size_max: 1.0,
            maximize: false,
        };
        let (mut p, mut prev, mut ss) = ([0.0f64], [0.0f64], [0.1f64]);
        rprop(&mut p, &[3.0], &mut prev, &mut ss, &h).unwrap();
        assert_eq!(
            (p, prev, ss),
            ([-0.1], [3.0], [0.1]),
            "first step: factor 1"
        );
        rprop(&mut p, &[1.0], &mut prev, &mut ss, &h).unwrap();
        assert_eq!((p[0], ss[0]), (-0.1 - 0.2, 0.2), "same sign: grow");
        rprop(&mut p, &[-1.0], &mut prev, &mut ss, &h).unwrap();
        assert_eq!(
            (p[0], prev[0], ss[0]),
            (-0.1 - 0.2, 0.0, 0.1),
            "flip: no move"
        );
        for _ in 0..10 {
            rprop(&mut p, &[1.0], &mut prev, &mut ss, &h).unwrap();
        }
        assert_eq!(ss[0], 1.0, "clamped to step_size_max");
    }

    #[test]
    fn asgd_average_follows_the_iterate_with_weight_mu() {
        let mut h = AsgdScalars {
            decay: 1.0f64,
            neg_eta: -0.5,
            mu: None,
            weight_decay: None,
            maximize: false,
        };
        let (mut p, mut ax) = ([1.0f64], [0.0f64]);
        asgd(&mut p, &[2.0], &mut ax, &h).unwrap();
        assert_eq!((p, ax), ([0.0], [0.0]));
        h.mu = Some(0.25);
        asgd(&mut p, &[-4.0], &mut ax, &h).unwrap();
        assert_eq!((p, ax), ([2.0], [0.5]));
    }
}
