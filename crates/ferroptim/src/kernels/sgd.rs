//! SGD's kernels: without momentum, and with a momentum buffer, for every
//! [`Storage`] type: a 16-bit parameter is computed in `f32` and rounded
//! where torch's single-tensor SGD ends a tensor operation.

use super::{add_alpha, run_split, signed_decayed, slices, Loop};
use crate::error::Result;
use crate::tensor::{Element, Storage};

/// The scalars of one SGD step, rounded to the dtype the step computes in.
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
    /// The buffer's first step: `b ← g` (torch's `clone` of the gradient).
    pub first: bool,
    /// LARS's per-tensor trust ratio, multiplying the decayed gradient
    /// (`None` for SGD).
    pub trust_ratio: Option<T>,
    /// Whether these are the scalars of torch's scalar loop (the last
    /// elements of a 16-bit tensor, see [`add_alpha`]); the kernels set it.
    pub tail: bool,
}

impl<T: Element> SgdScalars<T> {
    /// Rounds torch's Python-float arguments to `T`; a zero `weight_decay` means none.
    pub fn new(
        neg_lr: f64,
        weight_decay: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        maximize: bool,
    ) -> Self {
        SgdScalars {
            neg_lr: T::from_f64(neg_lr),
            weight_decay: (weight_decay != 0.0).then(|| T::from_f64(weight_decay)),
            momentum: T::from_f64(momentum),
            one_minus_dampening: T::from_f64(1.0 - dampening),
            nesterov,
            maximize,
            first: false,
            trust_ratio: None,
            tail: false,
        }
    }

    /// The gradient the update uses: `±g + λ·p` (`grad.add(param,
    /// alpha=λ)`, a tensor of the parameter's dtype `S`), times LARS's trust ratio.
    #[inline(always)]
    fn direction<S: Storage<Math = T>>(&self, g: T, p: T) -> T {
        let d = signed_decayed::<S>(g, p, self.maximize, self.weight_decay, self.tail);
        match self.trust_ratio {
            Some(t) => d * t,
            None => d,
        }
    }
}

slices!(
    /// SGD's slices without momentum.
    SgdSlices, "sgd" {
        /// The gradient.
        grad: read,
    }
);

slices!(
    /// SGD's slices with momentum.
    SgdMomentumSlices, "sgd_momentum" {
        /// The gradient.
        grad: read,
        /// The momentum buffer.
        momentum_buffer: write,
    }
);

/// SGD without momentum: `p ← p − lr·(±g + λ·p)`.
pub fn sgd<S: Storage>(slices: SgdSlices<'_, S>, h: &SgdScalars<S::Math>) -> Result<()> {
    run_split::<S, _, _>(slices, h, &h.with_tail(true))
}

impl<S: Storage> Loop<SgdSlices<'_, S>> for SgdScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: SgdSlices<'_, S>) {
        // `tail` a constant in each loop: only its own `add_alpha` is computed.
        if self.tail {
            self.with_tail(true).plain(s)
        } else {
            self.with_tail(false).plain(s)
        }
    }
}

impl<T: Element> SgdScalars<T> {
    /// These scalars with `tail` set (see [`add_alpha`]).
    #[inline(always)]
    fn with_tail(&self, tail: bool) -> Self {
        SgdScalars { tail, ..*self }
    }

    #[inline(always)]
    fn plain<S: Storage<Math = T>>(&self, s: SgdSlices<'_, S>) {
        for (p, &g) in s.param.iter_mut().zip(s.grad) {
            let x = p.load();
            let d = self.direction::<S>(g.load(), x);
            *p = S::store(add_alpha::<S>(x, d, self.neg_lr, self.tail));
        }
    }
}

/// SGD with momentum: `b ← μ·b + (1−τ)·g` (or `b ← g` on the buffer's first
/// step, `h.first`), then `p ← p − lr·(g + μ·b)` with Nesterov, `p ← p − lr·b` without.
///
/// In a 16-bit dtype, `μ·b` is rounded before the gradient is added (torch's
/// `buf.mul_(μ).add_(g, alpha=1−τ)`), and so is Nesterov's `g + μ·b`; every
/// `add(alpha)` is [`add_alpha`]'s.
pub fn sgd_momentum<S: Storage>(
    slices: SgdMomentumSlices<'_, S>,
    h: &SgdScalars<S::Math>,
) -> Result<()> {
    run_split::<S, _, _>(slices, h, &h.with_tail(true))
}

impl<S: Storage> Loop<SgdMomentumSlices<'_, S>> for SgdScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: SgdMomentumSlices<'_, S>) {
        if self.tail {
            self.with_tail(true).momentum(s)
        } else {
            self.with_tail(false).momentum(s)
        }
    }
}

impl<T: Element> SgdScalars<T> {
    #[inline(always)]
    fn momentum<S: Storage<Math = T>>(&self, s: SgdMomentumSlices<'_, S>) {
        for ((p, &g), b) in s
            .param
            .iter_mut()
            .zip(s.grad)
            .zip(s.momentum_buffer.iter_mut())
        {
            let x = p.load();
            let d = self.direction::<S>(g.load(), x);
            *b = if self.first {
                S::store(d)
            } else {
                let decayed = S::round(b.load() * self.momentum);
                S::store(add_alpha::<S>(
                    decayed,
                    d,
                    self.one_minus_dampening,
                    self.tail,
                ))
            };
            let d = if self.nesterov {
                add_alpha::<S>(d, b.load(), self.momentum, self.tail)
            } else {
                b.load()
            };
            *p = S::store(add_alpha::<S>(x, d, self.neg_lr, self.tail));
        }
    }
}

/// The scalars of one step of torch's fused CPU SGD (`fused=True`): SGD's,
/// computed in `S::Math` (`float` for the 16-bit types, the Python floats
/// rounded to it once) with one rounding per stored value, and AMP's
/// `grad_scale` (each gradient is divided by it first).
#[derive(Clone, Copy, Debug)]
pub struct FusedSgdScalars<T>(pub SgdScalars<T>, pub Option<T>);

/// One step of torch's fused CPU SGD (`_fused_sgd_`,
/// `aten/src/ATen/native/cpu/FusedSGDKernel.cpp`), with or without a
/// momentum buffer (`momentum_buffer: None` when `momentum == 0`): every
/// value loaded into `S::Math`, then
///
/// ```text
/// g ← ±g + λ·θ                                   (one fma)
/// b ← g  (first step)   or   b ← μ·b + (1−τ)·g   (one fma, see below)
/// g ← g + μ·b (nesterov, one fma)   or   g ← b
/// θ ← θ − lr·g                                   (one fma)
/// ```
///
/// and only `b` and `θ` rounded to the dtype, as they are stored; Nesterov
/// and the parameter read the unrounded `b`. The compiler fuses the
/// buffer's update one way in torch's vector loop (`fma(1−τ, g, μ·b)`) and
/// the other in its scalar loop (`fma(b, μ, (1−τ)·g)`), which runs the last
/// `n % block` elements, `block` being one `Vectorized<S>`: 16 bfloat16 or
/// float16, 8 `f32`, 4 `f64` (element by element against torch 2.15's AVX2
/// build; its AVX-512 build's vectors are twice as long, so there the last
/// `n % (2·block)` elements would take the scalar loop's form).
pub fn sgd_fused<S: Storage>(
    param: &mut [S],
    grad: &[S],
    momentum_buffer: Option<&mut [S]>,
    h: &FusedSgdScalars<S::Math>,
) -> Result<()> {
    let block = 32 / S::DTYPE.size();
    let tail = FusedSgdScalars(h.0.with_tail(true), h.1);
    match momentum_buffer {
        None => super::run_blocks(SgdSlices { param, grad }, block, h, &tail),
        Some(momentum_buffer) => {
            let slices = SgdMomentumSlices {
                param,
                grad,
                momentum_buffer,
            };
            super::run_blocks(slices, block, h, &tail)
        }
    }
}

impl<S: Storage> Loop<SgdSlices<'_, S>> for FusedSgdScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: SgdSlices<'_, S>) {
        for (p, &g) in s.param.iter_mut().zip(s.grad) {
            self.element(p, g, None);
        }
    }
}

impl<S: Storage> Loop<SgdMomentumSlices<'_, S>> for FusedSgdScalars<S::Math> {
    #[inline(always)]
    fn run(&self, s: SgdMomentumSlices<'_, S>) {
        super::tail_constant!(self.0.tail, momentum(s))
    }
}

impl<T: Element> FusedSgdScalars<T> {
    #[inline(always)]
    fn momentum<S: Storage<Math = T>>(&self, s: SgdMomentumSlices<'_, S>) {
        let buffers = s.momentum_buffer.iter_mut();
        for ((p, &g), b) in s.param.iter_mut().zip(s.grad).zip(buffers) {
            self.element(p, g, Some(b));
        }
    }

    #[inline(always)]
    fn element<S: Storage<Math = T>>(&self, p: &mut S, g: S, b: Option<&mut S>) {
        let h = &self.0;
        let x = p.load();
        let mut g = super::fused_grad(g.load(), x, self.1, h.maximize, h.weight_decay);
        if let Some(b) = b {
            let b_new = if h.first {
                g
            } else if h.tail {
                b.load().mul_add(h.momentum, h.one_minus_dampening * g)
            } else {
                h.one_minus_dampening.mul_add(g, b.load() * h.momentum)
            };
            *b = S::store(b_new);
            g = if h.nesterov {
                b_new.mul_add(h.momentum, g)
            } else {
                b_new
            };
        }
        *p = S::store(g.mul_add(h.neg_lr, x));
    }
}
