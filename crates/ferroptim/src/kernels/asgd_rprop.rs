//! The kernels of ASGD and Rprop, which keep per-element state of their own
//! kind (an average of the iterates; per-element step sizes), in every
//! [`Storage`] type.

use super::{add_alpha, run_split, signed_decayed, slices, tail_constant, Loop};
use crate::error::Result;
use crate::tensor::{Element, Storage};

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
    /// Whether these are the scalars of torch's scalar loop (the last
    /// elements of a 16-bit tensor, see [`add_alpha`]).
    pub tail: bool,
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
///
/// In 16 bits torch rounds `(1 − λη)·θ` before the gradient is added, and
/// `θ − ā` and its product with `μ` (a float32 scalar tensor, taken as `float`).
pub fn asgd<S: Storage>(slices: AsgdSlices<'_, S>, h: &AsgdScalars<S::Math>) -> Result<()> {
    run_split::<S, _, _>(slices, h, &AsgdScalars { tail: true, ..*h })
}

impl<S: Storage> Loop<AsgdSlices<'_, S>> for AsgdScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AsgdSlices<'_, S>) {
        tail_constant!(self.tail, each(s))
    }
}

impl<T: Element> AsgdScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: AsgdSlices<'_, S>) {
        for ((p, &g), a) in s.param.iter_mut().zip(s.grad).zip(s.ax.iter_mut()) {
            let x = p.load();
            let g = signed_decayed::<S>(g.load(), x, self.maximize, self.weight_decay, self.tail);
            *p = S::store(add_alpha::<S>(
                S::round(x * self.decay),
                g,
                self.neg_eta,
                self.tail,
            ));
            *a = match self.mu {
                Some(mu) => S::store(a.load() + S::round(S::round(p.load() - a.load()) * mu)),
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
///
/// In 16 bits torch rounds `g·g_prev` (its sign decides), keeps `η⁺`, `η⁻`
/// and the clamp's bounds in the dtype (they are written into, or compared
/// with, tensors of it), and rounds `step_size·factor`.
pub fn rprop<S: Storage>(slices: RpropSlices<'_, S>, h: &RpropScalars<S::Math>) -> Result<()> {
    super::run(slices, h)
}

impl<S: Storage> Loop<RpropSlices<'_, S>> for RpropScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: RpropSlices<'_, S>) {
        let r = S::round;
        let (etaplus, etaminus) = (r(self.etaplus), r(self.etaminus));
        let (step_size_min, step_size_max) = (r(self.step_size_min), r(self.step_size_max));
        for (((p, &g), gp), ss) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.prev.iter_mut())
            .zip(s.step_size.iter_mut())
        {
            let (zero, one) = (S::Math::ZERO, S::Math::ONE);
            let g = if self.maximize { -g.load() } else { g.load() };
            let s = r(g * gp.load());
            let factor = if s > zero {
                etaplus
            } else if s < zero {
                etaminus
            } else if s == zero {
                one
            } else {
                s
            };
            *ss = S::store(clamp(r(ss.load() * factor), step_size_min, step_size_max));
            // torch: grad[sign.eq(etaminus)] = 0
            let g = if factor == etaminus { zero } else { g };
            *p = S::store((-sign(g)).mul_add(ss.load(), p.load()));
            *gp = S::store(g);
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
            tail: false,
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
