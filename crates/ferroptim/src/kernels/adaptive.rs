//! The kernels of the adaptive-rate optimizers that keep averages of
//! squares: Adadelta, Adagrad and RMSprop. They share [`AdaptiveScalars`].
//! Each runs in every [`Storage`] type, rounding a 16-bit value where
//! torch's single-tensor step ends a tensor operation.

use super::{add_alpha, lerp, run_split, signed_decayed, slices, Loop};
use crate::error::Result;
use crate::tensor::{Element, Storage};

/// The scalars shared by the adaptive kernels, rounded to the parameter's dtype.
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
    /// Whether these are the scalars of torch's scalar loop (the last
    /// elements of a 16-bit tensor, see [`add_alpha`]).
    pub tail: bool,
}

impl<T: Element> AdaptiveScalars<T> {
    /// Rounds torch's Python-float scalars to `T`; a zero `weight_decay` means none.
    pub fn new(neg_lr: f64, weight_decay: f64, eps: f64, maximize: bool) -> Self {
        AdaptiveScalars {
            neg_lr: T::from_f64(neg_lr),
            weight_decay: (weight_decay != 0.0).then(|| T::from_f64(weight_decay)),
            eps: T::from_f64(eps),
            maximize,
            tail: false,
        }
    }

    /// `±g + λ·p`, as torch's `grad.add(param, alpha=λ)` in storage `S`.
    #[inline(always)]
    fn grad<S: Storage<Math = T>>(&self, g: T, p: T) -> T {
        signed_decayed::<S>(g, p, self.maximize, self.weight_decay, self.tail)
    }

    /// `ε` as `add(eps)` adds it to a tensor stored as `S`: rounded to `S` first.
    #[inline(always)]
    fn eps<S: Storage<Math = T>>(&self) -> T {
        S::round(self.eps)
    }

    /// These scalars with `tail` set.
    #[inline(always)]
    fn with_tail(&self, tail: bool) -> Self {
        AdaptiveScalars { tail, ..*self }
    }
}

slices!(
    /// Adadelta's slices.
    AdadeltaSlices, "adadelta" {
        /// The gradient.
        grad: read,
        /// The average of squared gradients.
        square_avg: write,
        /// The average of squared updates.
        acc_delta: write,
    }
);

/// The scalars of one Adadelta step.
#[derive(Clone, Copy, Debug)]
pub struct AdadeltaScalars<T> {
    /// The shared ones (`neg_lr` is `−lr`).
    pub adaptive: AdaptiveScalars<T>,
    /// `ρ`.
    pub rho: T,
    /// `1 − ρ`.
    pub one_minus_rho: T,
}

/// One Adadelta step: `v ← ρ·v + (1−ρ)·g²`, `Δ ← √(a + ε)/√(v + ε)·g`,
/// `a ← ρ·a + (1−ρ)·Δ²`, `θ ← θ − lr·Δ`.
pub fn adadelta<S: Storage>(
    slices: AdadeltaSlices<'_, S>,
    h: &AdadeltaScalars<S::Math>,
) -> Result<()> {
    let tail = AdadeltaScalars {
        adaptive: h.adaptive.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<AdadeltaSlices<'_, S>> for AdadeltaScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AdadeltaSlices<'_, S>) {
        let mut h = *self;
        if self.adaptive.tail {
            h.adaptive.tail = true;
            h.each(s)
        } else {
            h.adaptive.tail = false;
            h.each(s)
        }
    }
}

impl<T: Element> AdadeltaScalars<T> {
    /// In 16 bits torch rounds `ρ·v`, `v + ε`, its root, `a + ε`, its
    /// root, their quotient, its product with `g` (`delta`) and `ρ·a`.
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: AdadeltaSlices<'_, S>) {
        let (h, rho, one_minus_rho) = (&self.adaptive, self.rho, self.one_minus_rho);
        let eps = h.eps::<S>();
        for (((p, &g), v), a) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.square_avg.iter_mut())
            .zip(s.acc_delta.iter_mut())
        {
            let x = p.load();
            let g = h.grad::<S>(g.load(), x);
            *v = S::store((one_minus_rho * g).mul_add(g, S::round(v.load() * rho)));
            let std = S::round(S::round(v.load() + eps).sqrt());
            let root = S::round(S::round(a.load() + eps).sqrt());
            let delta = S::round(S::round(root / std) * g);
            *a = S::store((one_minus_rho * delta).mul_add(delta, S::round(a.load() * rho)));
            *p = S::store(add_alpha::<S>(x, delta, h.neg_lr, h.tail));
        }
    }
}

slices!(
    /// Adagrad's slices.
    AdagradSlices, "adagrad" {
        /// The gradient.
        grad: read,
        /// The sum of squared gradients.
        sum: write,
    }
);

/// One dense Adagrad step: `s ← s + g²`, `θ ← θ − clr·g/(√s + ε)` with
/// `clr = lr/(1 + (t−1)·lr_decay)` (`h.neg_lr` is `−clr`).
pub fn adagrad<S: Storage>(
    slices: AdagradSlices<'_, S>,
    h: &AdaptiveScalars<S::Math>,
) -> Result<()> {
    run_split::<S, _, _>(slices, h, &h.with_tail(true))
}

impl<S: Storage> Loop<AdagradSlices<'_, S>> for AdaptiveScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AdagradSlices<'_, S>) {
        if self.tail {
            self.with_tail(true).adagrad(s)
        } else {
            self.with_tail(false).adagrad(s)
        }
    }
}

impl<T: Element> AdaptiveScalars<T> {
    /// In 16 bits torch rounds `√s` and `√s + ε` (`std`).
    #[inline(always)]
    fn adagrad<S: Storage<Math = T>>(&self, s: AdagradSlices<'_, S>) {
        let eps = self.eps::<S>();
        for ((p, &g), sum) in s.param.iter_mut().zip(s.grad).zip(s.sum.iter_mut()) {
            let x = p.load();
            let g = self.grad::<S>(g.load(), x);
            *sum = S::store(g.mul_add(g, sum.load()));
            let std = S::round(S::round(sum.load().sqrt()) + eps);
            *p = S::store(x + (self.neg_lr * g) / std);
        }
    }
}

/// The scalars of one step of torch's fused CPU Adagrad (`fused=True`):
/// Adagrad's, in `S::Math` (`float` for the 16-bit types), and AMP's
/// `grad_scale` (each gradient is divided by it first).
#[derive(Clone, Copy, Debug)]
pub struct FusedAdagradScalars<T>(pub AdaptiveScalars<T>, pub Option<T>);

/// One step of torch's fused CPU Adagrad (`_fused_adagrad_`,
/// `aten/src/ATen/native/cpu/FusedAdagradKernel.cpp`): every value loaded
/// into `S::Math`, `g ← ±g + λ·θ` and `s ← s + g²` as fused multiply-adds,
/// `θ ← θ − clr·g/(√s + ε)` from the unrounded sum, and only `s` and `θ`
/// rounded to the dtype as they are stored (torch's default path rounds
/// `√s` and `√s + ε` too). Its vector and scalar loops compute alike.
pub fn adagrad_fused<S: Storage>(
    slices: AdagradSlices<'_, S>,
    h: &FusedAdagradScalars<S::Math>,
) -> Result<()> {
    super::run(slices, h)
}

impl<S: Storage> Loop<AdagradSlices<'_, S>> for FusedAdagradScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: AdagradSlices<'_, S>) {
        let h = &self.0;
        for ((p, &g), sum) in s.param.iter_mut().zip(s.grad).zip(s.sum.iter_mut()) {
            let x = p.load();
            let g = super::fused_grad(g.load(), x, self.1, h.maximize, h.weight_decay);
            let s_new = g.mul_add(g, sum.load());
            *sum = S::store(s_new);
            *p = S::store(x + (h.neg_lr * g) / (s_new.sqrt() + h.eps));
        }
    }
}

slices!(
    /// RMSprop's slices.
    RmspropSlices, "rmsprop" {
        /// The gradient.
        grad: read,
        /// The average of squared gradients.
        square_avg: write,
        /// The average of gradients, when centered.
        grad_avg: optional,
        /// The momentum buffer, when momentum > 0.
        momentum_buffer: optional,
    }
);

/// The scalars of one RMSprop step.
#[derive(Clone, Copy, Debug)]
pub struct RmspropScalars<T> {
    /// The shared ones (`neg_lr` is `−lr`).
    pub adaptive: AdaptiveScalars<T>,
    /// `α`.
    pub alpha: T,
    /// `1 − α`.
    pub one_minus_alpha: T,
    /// The momentum factor `μ` (used with a momentum buffer).
    pub momentum: T,
}

/// One RMSprop step: `v ← α·v + (1−α)·g²`; centered: `ḡ ← lerp(ḡ, g, 1−α)`,
/// `d ← √(v − ḡ²) + ε`, else `d ← √v + ε`; with momentum `b ← μ·b + g/d`,
/// `θ ← θ − lr·b`, else `θ ← θ − lr·g/d`.
pub fn rmsprop<S: Storage>(
    slices: RmspropSlices<'_, S>,
    h: &RmspropScalars<S::Math>,
) -> Result<()> {
    let tail = RmspropScalars {
        adaptive: h.adaptive.with_tail(true),
        ..*h
    };
    run_split::<S, _, _>(slices, h, &tail)
}

impl<S: Storage> Loop<RmspropSlices<'_, S>> for RmspropScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: RmspropSlices<'_, S>) {
        let mut h = *self;
        if self.adaptive.tail {
            h.adaptive.tail = true;
            h.each(s)
        } else {
            h.adaptive.tail = false;
            h.each(s)
        }
    }
}

impl<T: Element> RmspropScalars<T> {
    #[inline(always)]
    fn each<S: Storage<Math = T>>(&self, s: RmspropSlices<'_, S>) {
        // One plain zipped loop per combination of buffers, so that each vectorises.
        let params = s.param.iter_mut().zip(s.grad).zip(s.square_avg.iter_mut());
        match (s.grad_avg, s.momentum_buffer) {
            (None, None) => {
                for ((p, &g), v) in params {
                    self.element::<S>(p, g, v, None, None);
                }
            }
            (Some(ga), None) => {
                for (((p, &g), v), a) in params.zip(ga.iter_mut()) {
                    self.element::<S>(p, g, v, Some(a), None);
                }
            }
            (None, Some(buf)) => {
                for (((p, &g), v), b) in params.zip(buf.iter_mut()) {
                    self.element::<S>(p, g, v, None, Some(b));
                }
            }
            (Some(ga), Some(buf)) => {
                for ((((p, &g), v), a), b) in params.zip(ga.iter_mut()).zip(buf.iter_mut()) {
                    self.element::<S>(p, g, v, Some(a), Some(b));
                }
            }
        }
    }
}

impl<T: Element> RmspropScalars<T> {
    /// RMSprop on one element stored as `S`; `grad_avg` when centered,
    /// `buffer` with momentum. In 16 bits torch rounds `α·v`, `v − ḡ²`, the
    /// root, `+ ε` (`avg`), `μ·b`, and `add(alpha)` as [`add_alpha`] does.
    #[inline(always)]
    fn element<S: Storage<Math = T>>(
        &self,
        p: &mut S,
        g: S,
        v: &mut S,
        grad_avg: Option<&mut S>,
        buffer: Option<&mut S>,
    ) {
        let h = &self.adaptive;
        let x = p.load();
        let g = h.grad::<S>(g.load(), x);
        *v = S::store((self.one_minus_alpha * g).mul_add(g, S::round(v.load() * self.alpha)));
        let root = match grad_avg {
            Some(a) => {
                *a = S::store(lerp(a.load(), g, self.one_minus_alpha));
                let a = a.load();
                S::round(S::round((-a).mul_add(a, v.load())).sqrt())
            }
            None => S::round(v.load().sqrt()),
        };
        let avg = S::round(root + h.eps::<S>());
        *p = S::store(match buffer {
            Some(b) => {
                *b = S::store(S::round(b.load() * self.momentum) + g / avg);
                add_alpha::<S>(x, b.load(), h.neg_lr, h.tail)
            }
            None => x + (h.neg_lr * g) / avg,
        });
    }
}
