//! Fused element-wise update kernels on slices: one pass over memory per parameter.
//!
//! Every element-wise kernel has one shape: a bundle of slices (the
//! parameter, its gradient and the state buffers it updates, declared once
//! with `slices!`, which writes the struct, its length checks and how it is
//! cut into chunks for the threads) and a struct of scalars whose
//! `Loop` impl is the loop over one chunk. `run` checks the lengths,
//! spreads the chunks over the threads and runs each through one
//! multiversioned `dispatch`; the `simd!` macro is the one place the SIMD
//! dispatch attribute is written (the loops of other shapes use it too). The families have a file
//! each: `sgd`, `adam_family` (Adam,
//! Adamax, NAdam, RAdam, whose shared scalars [`Moments`] has one
//! constructor), `adaptive` (Adadelta, Adagrad, RMSprop),
//! ASGD and Rprop, Lion, ADOPT and AdEMAMix (`pytorch_optimizer`), LAMB, Adan,
//! Prodigy's two passes, SOAP's loops, Schedule-Free
//! SGD and AdamW, sparse
//! gradients, Adafactor, Newton–Schulz, and the flat-vector helpers of LBFGS.
//!
//! The scalars torch computes in Python floats (bias corrections, step
//! sizes) are computed once per step in `f64` by the algorithm module,
//! exactly as torch does, then rounded to the tensor's dtype, as torch rounds
//! a Python scalar when it meets a tensor. Per element, the kernels follow
//! the order of torch's CPU operations (`add(alpha)`, `lerp` and `addcmul`
//! are fused multiply-adds there, `addcdiv` is not), so results agree to
//! the bit.
//!
//! Each loop is compiled for AVX2+FMA as well as for the baseline target and
//! picked at run time (`multiversion`); the `portable` feature keeps only the
//! baseline build, so that tests can run it on any CPU. An FMA is exactly
//! rounded on either path, so the two give the same bits.

use crate::error::{Error, Result};
use crate::parallel::{for_chunks, Chunks};
use crate::tensor::{Element, Storage};

pub mod adafactor;
mod adam_family;
mod adan;
mod adaptive;
mod asgd_rprop;
pub mod flat;
mod lamb;
mod lion;
mod lookahead;
pub mod newton_schulz;
mod prodigy;
mod pytorch_optimizer;
pub(crate) mod reduce;
pub(crate) mod rounding;
mod schedule_free;
mod sgd;
pub(crate) mod soap;
mod sparse;

pub use adam_family::{
    adam, adam_fused, adamax, fused_block, nadam, radam, AdamScalars, AdamSlices, AdamaxScalars,
    FusedAdamScalars, MomentSlices, Moments, NadamScalars, RadamScalars,
};
pub use adan::{adan, AdanScalars, AdanSlices};
pub use adaptive::{
    adadelta, adagrad, adagrad_fused, rmsprop, AdadeltaScalars, AdadeltaSlices, AdagradSlices,
    AdaptiveScalars, FusedAdagradScalars, RmspropScalars, RmspropSlices,
};
pub use asgd_rprop::{asgd, rprop, AsgdScalars, AsgdSlices, RpropScalars, RpropSlices};
pub use lamb::{
    lamb_apply, lamb_moments, LambApplySlices, LambPath, LambScalars, LambSlices, TrustRatio,
};
pub use lion::{lion, LionScalars, LionSlices};
pub use lookahead::{lookahead, LookaheadScalars, LookaheadSlices};
pub use prodigy::{
    prodigy_apply, prodigy_gather, ProdigyApplyScalars, ProdigyApplySlices, ProdigyGatherScalars,
    ProdigyGatherSlices,
};
pub use pytorch_optimizer::{
    ademamix, adopt, AdemamixScalars, AdemamixSlices, AdoptScalars, AdoptSlices, GradInputs,
};
pub use schedule_free::{
    adamw_schedule_free, sgd_schedule_free, switch_mode, AdamWScheduleFreeScalars,
    AdamWScheduleFreeSlices, ScheduleFreeScalars, SgdScheduleFreeSlices,
};
pub use sgd::{
    sgd, sgd_fused, sgd_momentum, FusedSgdScalars, SgdMomentumSlices, SgdScalars, SgdSlices,
};
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

/// A kernel's bundle of slices: checked against the parameter's length
/// before anything is written, then cut into chunks ([`Chunks`]).
pub(crate) trait Slices: Chunks {
    /// Every slice as long as the parameter; the error names the first that is not.
    fn check(&self) -> Result<()>;
}

/// A kernel's loop over one chunk of its slices `S`; `self` holds the
/// step's scalars. Written once per kernel, run by [`run`]. Hold them by
/// value: read through a reference kept inside `self`, they may alias the
/// slices being written as far as the compiler knows, so they are reloaded
/// every element and the loop is not vectorized (ADOPT's step ran 5x
/// slower that way).
pub(crate) trait Loop<S>: Sync {
    /// The update of every element of `slices`.
    fn run(&self, slices: S);
}

/// Runs `scalars`' loop over `slices`: lengths checked first (on error
/// nothing is written), then chunks across the threads, each through
/// [`dispatch`].
pub(crate) fn run<S: Slices, L: Loop<S>>(slices: S, scalars: &L) -> Result<()> {
    slices.check()?;
    for_chunks(slices, |chunk| dispatch(chunk, scalars));
    Ok(())
}

/// How many elements of a 16-bit tensor torch's CPU loop (`cpu_kernel_vec`)
/// takes at a time on an AVX-512 CPU, where the 16-bit fixtures were made:
/// twice `Vectorized<BFloat16>::size()`. The last `n % 64` elements of a
/// tensor go through its scalar loop instead, which rounds `add(alpha)`
/// differently ([`add_alpha`]); on an AVX2 CPU torch's split is at 32.
pub const TORCH_16BIT_BLOCK: usize = 64;

/// [`run`] for a kernel whose 16-bit arithmetic differs between torch's
/// vectorised loop and its scalar tail: `body`'s scalars for the first
/// elements, `tail`'s for the last `n % TORCH_16BIT_BLOCK` (one thread, at
/// most 63 elements). `f32` and `f64` take `body` throughout.
pub(crate) fn run_split<T: Storage, S: Slices, L: Loop<S>>(
    slices: S,
    body: &L,
    tail: &L,
) -> Result<()> {
    if !T::DTYPE.is_reduced() {
        return run(slices, body);
    }
    run_blocks(slices, TORCH_16BIT_BLOCK, body, tail)
}

/// Runs `body`'s loop over the first elements of `slices`, a multiple of
/// `block`, across the threads, and `tail`'s over the rest (fewer than
/// `block`, on one thread).
pub(crate) fn run_blocks<S: Slices, L: Loop<S>>(
    slices: S,
    block: usize,
    body: &L,
    tail: &L,
) -> Result<()> {
    slices.check()?;
    let n = slices.len();
    let (front, back) = slices.split_at(n - n % block.max(1));
    for_chunks(front, |chunk| dispatch(chunk, body));
    dispatch(back, tail);
    Ok(())
}

/// A [`Loop::run`] body for scalars whose `tail` flag (at the path given)
/// says which of torch's loops they stand for: the loop `$each` runs on a
/// copy whose flag is a constant, so that only that loop's arithmetic is
/// compiled into it.
macro_rules! tail_constant {
    ($self:ident . $($tail:tt).+, $each:ident($s:ident)) => {{
        let mut h = *$self;
        if $self.$($tail).+ {
            h.$($tail).+ = true;
            h.$each($s)
        } else {
            h.$($tail).+ = false;
            h.$each($s)
        }
    }};
}
pub(crate) use tail_constant;

/// torch's `x.add(y, alpha=α)` for tensors stored as `S`, computed in
/// `S::Math`: one fused multiply-add for `f32` and `f64`. torch's `add`
/// for 16-bit tensors is its generic ufunc over the 16-bit type itself:
/// `α` is rounded to it, and its vector loop (`tail` false) computes
/// `fmadd(y, α, x)` in `float` and rounds once, while its scalar loop
/// (`tail`) rounds `α·y` before adding.
#[inline(always)]
pub fn add_alpha<S: Storage>(x: S::Math, y: S::Math, alpha: S::Math, tail: bool) -> S::Math {
    if !S::DTYPE.is_reduced() {
        return y.mul_add(alpha, x);
    }
    let alpha = S::round(alpha);
    // Both, then a select: a branch here keeps the loop from vectorising.
    let scalar_loop = S::round(x + S::round(alpha * y));
    let vector_loop = S::round(y.mul_add(alpha, x));
    if tail {
        scalar_loop
    } else {
        vector_loop
    }
}

/// The one SIMD dispatch, written once: the function it wraps is compiled
/// for AVX2+FMA as well as for the baseline target, and the CPU picks at
/// run time (`multiversion`; the `portable` feature keeps the baseline
/// only). Element-wise kernels go through [`dispatch`]; the loops of
/// another shape (Adafactor's, LBFGS's flat vectors, sparse rows,
/// Newton–Schulz) wrap their functions in it directly.
macro_rules! simd {
    ($($item:tt)*) => {
        #[cfg_attr(
            not(feature = "portable"),
            multiversion::multiversion(targets("x86_64+avx2+fma"))
        )]
        $($item)*
    };
}
pub(crate) use simd;

simd! {
    /// The SIMD dispatch of every element-wise kernel: the kernel's loop
    /// (`#[inline(always)]`) is compiled into each target's clone.
    fn dispatch<S, L: Loop<S>>(slices: S, scalars: &L) {
        scalars.run(slices)
    }
}

/// Declares a kernel's bundle of slices: `param` (written) first, then each
/// field as `read` (`&[T]`), `write` (`&mut [T]`) or `optional`
/// (`Option<&mut [T]>`). Writes the struct, its [`Slices`] length checks
/// (named after `$kernel`) and its [`Chunks`] split.
macro_rules! slices {
    ($(#[$doc:meta])* $name:ident, $kernel:literal { $($(#[$fdoc:meta])* $field:ident: $kind:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub struct $name<'a, T> {
            /// The parameter's values, updated in place.
            pub param: &'a mut [T],
            $($(#[$fdoc])* pub $field: slices!(@type $kind, 'a, T),)+
        }

        impl<T: $crate::tensor::Storage> $crate::parallel::Chunks for $name<'_, T> {
            fn len(&self) -> usize {
                self.param.len()
            }

            fn split_at(self, mid: usize) -> (Self, Self) {
                let param = self.param.split_at_mut(mid);
                $(let $field = $crate::parallel::Chunks::split_at(self.$field, mid);)+
                (
                    $name { param: param.0, $($field: $field.0,)+ },
                    $name { param: param.1, $($field: $field.1,)+ },
                )
            }
        }

        impl<T: $crate::tensor::Storage> $crate::kernels::Slices for $name<'_, T> {
            fn check(&self) -> $crate::Result<()> {
                let n = self.param.len();
                $(slices!(@check $kind, $kernel, $field, n, self.$field);)+
                Ok(())
            }
        }
    };
    (@type read, $a:lifetime, $t:ident) => { &$a [$t] };
    (@type write, $a:lifetime, $t:ident) => { &$a mut [$t] };
    (@type optional, $a:lifetime, $t:ident) => { Option<&$a mut [$t]> };
    (@check optional, $kernel:literal, $field:ident, $n:ident, $value:expr) => {
        if let Some(s) = &$value {
            $crate::kernels::check_len($kernel, stringify!($field), $n, s.len())?;
        }
    };
    (@check $kind:ident, $kernel:literal, $field:ident, $n:ident, $value:expr) => {
        $crate::kernels::check_len($kernel, stringify!($field), $n, $value.len())?;
    };
}
pub(crate) use slices;

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
/// `grad = -grad if maximize`, then `grad.add(param, alpha=weight_decay)`,
/// as [`add_alpha`] computes it in storage `S`).
#[inline(always)]
pub fn signed_decayed<S: Storage>(
    g: S::Math,
    p: S::Math,
    maximize: bool,
    weight_decay: Option<S::Math>,
    tail: bool,
) -> S::Math {
    let g = if maximize { -g } else { g };
    match weight_decay {
        Some(wd) => add_alpha::<S>(g, p, wd, tail),
        None => g,
    }
}

/// The gradient torch's fused kernels start from, in the type they compute
/// in: divided by AMP's `grad_scale`, then `±g + λ·θ` as one fused
/// multiply-add (its vector and scalar loops alike).
#[inline(always)]
pub(crate) fn fused_grad<T: Element>(
    g: T,
    p: T,
    grad_scale: Option<T>,
    maximize: bool,
    weight_decay: Option<T>,
) -> T {
    let g = grad_scale.map_or(g, |scale| g / scale);
    let g = if maximize { -g } else { g };
    weight_decay.map_or(g, |wd| p.mul_add(wd, g))
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

    fn sgd_scalars<T: Element>(neg_lr: f64) -> SgdScalars<T> {
        SgdScalars::new(neg_lr, 0.0, 0.0, 0.0, false, false)
    }

    #[test]
    fn kernels_reject_slices_of_other_lengths() {
        let h = sgd_scalars::<f32>(-0.1);
        let mut p = [1.0f32; 3];
        let short = SgdSlices {
            param: &mut p,
            grad: &[1.0; 2],
        };
        assert!(matches!(
            sgd(short, &h),
            Err(Error::LengthMismatch {
                kernel: "sgd",
                name: "grad",
                ..
            })
        ));
        let long_buffer = SgdMomentumSlices {
            param: &mut p,
            grad: &[1.0; 3],
            momentum_buffer: &mut [0.0; 4],
        };
        assert!(matches!(
            sgd_momentum(long_buffer, &h),
            Err(Error::LengthMismatch {
                name: "momentum_buffer",
                ..
            })
        ));
        assert_eq!(p, [1.0; 3]);
    }

    #[test]
    fn sgd_descends_and_maximize_ascends() {
        let mut h = sgd_scalars::<f64>(-0.5);
        let mut p = [1.0f64];
        sgd(
            SgdSlices {
                param: &mut p,
                grad: &[2.0],
            },
            &h,
        )
        .unwrap();
        assert_eq!(p, [0.0]);
        h.maximize = true;
        sgd(
            SgdSlices {
                param: &mut p,
                grad: &[2.0],
            },
            &h,
        )
        .unwrap();
        assert_eq!(p, [1.0]);
    }
}
