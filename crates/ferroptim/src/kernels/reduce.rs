//! Sums of squares for the norms of whole tensors (Adafactor's RMS, LARS's
//! and LAMB's trust ratios, pytorch-optimizer's global gradient norm).
//!
//! They are summed in `f64` and rounded to the tensor's dtype once, where
//! torch sums in its vectorised order: the two agree to the rounding of the
//! sum. The sums run in eight independent lanes, and large ones in blocks
//! added along a fixed tree (`crate::parallel`), so they vectorise, spread
//! over threads, and give the same bits on any number of threads.

use super::simd;
use crate::parallel::tree_sum;
use crate::tensor::Element;

/// Independent partial sums per loop, so that a reduction is not one long
/// chain of dependent additions and the loop can run on vector registers.
pub(crate) const LANES: usize = 8;

/// The lanes of a reduction, added up in a fixed order.
#[inline(always)]
pub(crate) fn total(lanes: [f64; LANES]) -> f64 {
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

#[inline(always)]
pub(crate) fn square<T: Element>(x: T) -> f64 {
    x.to_f64() * x.to_f64()
}

/// `lane + x²` in `f64`. A float32's square is exact in `f64` (24-bit
/// significands make at most 48 bits), so a fused multiply-add gives the
/// bits of the product then the sum, in one instruction instead of two
/// (the norm passes were bound by the arithmetic ports: 13 GB/s); a
/// float64's square is rounded first, as always.
#[inline(always)]
pub(crate) fn add_square<T: Element>(lane: f64, x: T) -> f64 {
    let x = x.to_f64();
    if T::DTYPE == crate::Dtype::F32 {
        x.mul_add(x, lane)
    } else {
        lane + x * x
    }
}

/// `Σ xᵢ²`, in `f64`.
pub fn sum_sq<T: Element>(x: &[T]) -> f64 {
    tree_sum(x, sum_sq_serial)
}

/// `(Σ xᵢ², Σ yᵢ²)` of two slices of one length, in one pass (LARS's two
/// norms); each sum as [`sum_sq`] gives it.
pub fn sum_sq_pair<T: Element>(x: &[T], y: &[T]) -> (f64, f64) {
    let Pair(a, b) = tree_sum((x, y), sum_sq_pair_serial);
    (a, b)
}

simd! {
fn sum_sq_pair_serial<T: Element>((x, y): (&[T], &[T])) -> Pair {
    // Both slices in one loop, lane by lane, so that both stream at once
    // (one after the other left the memory bus half idle: 7 GB/s) and the
    // two sums' chains of additions overlap (tile by tile, each sum's two
    // vector chains alone bound the loop: 1.4x the floor). Every element
    // lands in the lane it would alone.
    let n = x.len().min(y.len());
    let (mut a, mut b) = ([0.0; LANES], [0.0; LANES]);
    let (xs, ys) = (x[..n].chunks_exact(LANES), y[..n].chunks_exact(LANES));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (x, y) in xs.zip(ys) {
        for k in 0..LANES {
            a[k] = add_square(a[k], x[k]);
            b[k] = add_square(b[k], y[k]);
        }
    }
    add_squares(&mut a, x_rest);
    add_squares(&mut b, y_rest);
    Pair(total(a), total(b))
}}

simd! {
fn sum_sq_serial<T: Element>(x: &[T]) -> f64 {
    let mut lanes = [0.0; LANES];
    add_squares(&mut lanes, x);
    total(lanes)
}}

/// Adds `xᵢ²` to lane `i mod LANES`.
#[inline(always)]
pub(crate) fn add_squares<T: Element>(lanes: &mut [f64; LANES], x: &[T]) {
    let body = x.chunks_exact(LANES);
    let rest = body.remainder();
    for x in body {
        for k in 0..LANES {
            lanes[k] = add_square(lanes[k], x[k]);
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(rest) {
        *lane = add_square(*lane, x);
    }
}

/// Elements per tile: the update is computed for a tile into a buffer on
/// the stack by a plain element-wise loop (which vectorises), then its
/// squares are added to the lanes.
pub(crate) const TILE: usize = 256;

/// Two sums from one pass, added lane by lane.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pair(pub f64, pub f64);

impl std::ops::Add for Pair {
    type Output = Pair;
    fn add(self, other: Pair) -> Pair {
        Pair(self.0 + other.0, self.1 + other.1)
    }
}

/// pytorch-optimizer's clip factor from a squared global gradient norm,
/// `clamp(max_norm / (√sq_norm + ε), max=1)`, in its float32 tensor
/// arithmetic (a reciprocal times a scalar; NaN stays NaN).
pub fn global_clip_factor(sq_norm: f32, max_norm: f64, eps: f64) -> f32 {
    let scale = (1.0 / (sq_norm.sqrt() + eps as f32)) * max_norm as f32;
    if scale > 1.0 {
        1.0
    } else {
        scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float32's fused square-and-add is the unfused one to the bit (its
    /// square is exact in f64), over magnitudes from subnormal to huge.
    #[test]
    fn a_fused_square_of_a_float32_is_the_product_then_the_sum() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = f32::from_bits((state >> 32) as u32);
            let lane = f64::from_bits(state.rotate_left(17) >> 2);
            if x.is_finite() && lane.is_finite() {
                let want = lane + square(x);
                assert_eq!(
                    add_square(lane, x).to_bits(),
                    want.to_bits(),
                    "{x:e} {lane:e}"
                );
            }
        }
    }

    /// The pair's sums are each slice's own sum to the bit, at
    /// lengths around the tile and lane sizes and across threads' blocks.
    #[test]
    fn a_pair_sums_as_each_slice_alone() {
        for n in [
            0,
            1,
            7,
            8,
            9,
            255,
            256,
            257,
            1000,
            3 * crate::MIN_CHUNK + 13,
        ] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let y: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
                .collect();
            let (a, b) = sum_sq_pair(&x, &y);
            assert_eq!(
                (a.to_bits(), b.to_bits()),
                (sum_sq(&x).to_bits(), sum_sq(&y).to_bits()),
                "{n}"
            );
        }
    }
}
