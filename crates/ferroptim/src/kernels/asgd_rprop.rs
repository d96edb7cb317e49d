//! The kernels of ASGD and Rprop, which keep per-element state of their own
//! kind (an average of the iterates; per-element step sizes).

use super::{run, signed_decayed, slices, Loop};
use crate::error::Result;
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

slices!(
    /// ASGD's slices.
    AsgdSlices, "asgd" {
        /// The gradient.
        grad: read,
        /// The averaged parameters.
        ax: write,
    }
);

/// One ASGD step: `θ ← (1 − λη)·θ − η·g`, then `ā ← ā + μ·(θ − ā)`
/// (`ā ← θ` when `μ = 1`), in torch's order: `param.mul_(1 − λη)`,
/// `param.add_(grad, alpha=−η)` (a fused multiply-add), `ax.add_(param.sub(ax).mul_(mu))`.
pub fn asgd<T: Element>(slices: AsgdSlices<'_, T>, h: &AsgdScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<AsgdSlices<'_, T>> for AsgdScalars<T> {
    #[inline(always)]
    fn run(&self, s: AsgdSlices<'_, T>) {
        for ((p, &g), a) in s.param.iter_mut().zip(s.grad).zip(s.ax.iter_mut()) {
            let g = signed_decayed::<T>(g, *p, self.maximize, self.weight_decay, false);
            *p = g.mul_add(self.neg_eta, *p * self.decay);
            *a = match self.mu {
                Some(mu) => *a + (*p - *a) * mu,
                None => *p,
            };
        }
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

slices!(
    /// Rprop's slices.
    RpropSlices, "rprop" {
        /// The gradient.
        grad: read,
        /// The previous step's gradient.
        prev: write,
        /// The per-element step sizes.
        step_size: write,
    }
);

/// One Rprop step, per element: with `s = sign(g·g_prev)`, the step size is
/// multiplied by `η⁺` (s > 0), `η⁻` (s < 0) or 1 and clamped; where the sign
/// flipped the gradient is taken as 0 (no move, and no flip next time);
/// `θ ← θ − sign(g)·step_size`; `g_prev ← g`.
pub fn rprop<T: Element>(slices: RpropSlices<'_, T>, h: &RpropScalars<T>) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<RpropSlices<'_, T>> for RpropScalars<T> {
    #[inline(always)]
    fn run(&self, s: RpropSlices<'_, T>) {
        for (((p, &g), gp), ss) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.prev.iter_mut())
            .zip(s.step_size.iter_mut())
        {
            let g = if self.maximize { -g } else { g };
            let s = g * *gp;
            let factor = if s > T::ZERO {
                self.etaplus
            } else if s < T::ZERO {
                self.etaminus
            } else if s == T::ZERO {
                T::ONE
            } else {
                s
            };
            *ss = clamp(*ss * factor, self.step_size_min, self.step_size_max);
            // torch: grad[sign.eq(etaminus)] = 0
            let g = if factor == self.etaminus { T::ZERO } else { g };
            *p = (-sign(g)).mul_add(*ss, *p);
            *gp = g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p: &mut [f64], g: f64, prev: &mut [f64], step_size: &mut [f64], h: &RpropScalars<f64>) {
        let grad = &[g];
        rprop(
            RpropSlices {
                param: p,
                grad,
                prev,
                step_size,
            },
            h,
        )
        .unwrap();
    }

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
        step(&mut p, 3.0, &mut prev, &mut ss, &h);
        assert_eq!(
            (p, prev, ss),
            ([-0.1], [3.0], [0.1]),
            "first step: factor 1"
        );
        step(&mut p, 1.0, &mut prev, &mut ss, &h);
        assert_eq!((p[0], ss[0]), (-0.1 - 0.2, 0.2), "same sign: grow");
        step(&mut p, -1.0, &mut prev, &mut ss, &h);
        assert_eq!(
            (p[0], prev[0], ss[0]),
            (-0.1 - 0.2, 0.0, 0.1),
            "flip: no move"
        );
        for _ in 0..10 {
            step(&mut p, 1.0, &mut prev, &mut ss, &h);
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
        asgd(
            AsgdSlices {
                param: &mut p,
                grad: &[2.0],
                ax: &mut ax,
            },
            &h,
        )
        .unwrap();
        assert_eq!((p, ax), ([0.0], [0.0]));
        h.mu = Some(0.25);
        asgd(
            AsgdSlices {
                param: &mut p,
                grad: &[-4.0],
                ax: &mut ax,
            },
            &h,
        )
        .unwrap();
        assert_eq!((p, ax), ([2.0], [0.5]));
    }
}
