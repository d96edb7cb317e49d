//! Stochastic rounding of float32 values to bfloat16, driven by a
//! counter-based hash so that every element's draw depends only on
//! (seed, step, element index): the same on any thread count, and
//! reproducible from a checkpoint that saves the seed and the step.
//!
//! A float32 `x` lies between two bfloat16 neighbours `lo ≤ x < hi` that
//! share its top 16 bits (or `hi` is the next). Adding a uniform 16-bit
//! `r` to the low half of `x`'s bits and truncating carries into the top
//! half exactly when `r ≥ 2¹⁶ − low(x)`, that is with probability
//! `low(x) / 2¹⁶ = (x − lo) / (hi − lo)`: so `E[round(x)] = x`.

use half::bf16;

/// SplitMix64's finaliser (Steele, Lea and Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014): a bijection on u64 whose
/// outputs pass BigCrush for consecutive inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The draws of one parameter's one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream(u64);

impl Stream {
    /// The stream of `seed`'s `step`-th rounding.
    pub(crate) fn new(seed: u64, step: u64) -> Stream {
        Stream(mix(
            mix(seed.wrapping_mul(GOLDEN)) ^ step.wrapping_mul(GOLDEN)
        ))
    }

    /// Element `i`'s 16 random bits.
    pub(crate) fn bits(self, i: u64) -> u16 {
        (mix(self.0 ^ i.wrapping_mul(GOLDEN)) >> 48) as u16
    }
}

/// `x` rounded to one of its bfloat16 neighbours by the random `r`; a NaN
/// or an infinity rounds to nearest.
pub(crate) fn round_bf16(x: f32, r: u16) -> bf16 {
    if !x.is_finite() {
        return bf16::from_f32(x);
    }
    // A finite x's bits are at most 0x7F7F_FFFF in magnitude, so adding
    // r < 2^16 cannot carry into the sign; it may round the largest
    // values up to infinity, as round to nearest does.
    bf16::from_bits(((x.to_bits() + u32::from(r)) >> 16) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both neighbours of `x`, from their definition: truncation and the
    /// next bfloat16 up in magnitude.
    fn neighbours(x: f32) -> (bf16, bf16) {
        let lo = bf16::from_bits((x.to_bits() >> 16) as u16);
        let hi = bf16::from_bits(lo.to_bits() + 1);
        (lo, hi)
    }

    #[test]
    fn rounds_to_a_neighbour_and_exact_values_stay() {
        for (k, x) in [1.0f32, -3.5, 1.0 + 1e-3, -0.1, 6.1e-5, 3.3e38]
            .into_iter()
            .enumerate()
        {
            let (lo, hi) = neighbours(x);
            for i in 0..1000 {
                let y = round_bf16(x, Stream::new(k as u64, 0).bits(i));
                assert!(y == lo || y == hi, "{x} -> {y}");
                if bf16::from_f32(x).to_f32() == x {
                    assert_eq!(y.to_f32(), x);
                }
            }
        }
        assert!(round_bf16(f32::NAN, 0xFFFF).is_nan());
        assert_eq!(round_bf16(f32::INFINITY, 0xFFFF), bf16::INFINITY);
        assert_eq!(round_bf16(f32::MAX, 0xFFFF), bf16::INFINITY);
        assert_eq!(round_bf16(-f32::MAX, 0), bf16::from_bits(0xFF7F));
    }

    /// The mean of many draws approaches x: the rounding is unbiased.
    #[test]
    fn rounding_is_unbiased() {
        for x in [
            1.0f32 + 1e-3,
            1.0 + 0.75 * 2f32.powi(-7),
            -2.0 - 1e-2,
            1e-30,
        ] {
            let (lo, hi) = neighbours(x);
            let n = 200_000u64;
            let ups = (0..n)
                .filter(|&i| round_bf16(x, Stream::new(7, i / 100).bits(i % 100)) == hi)
                .count() as f64;
            let p = f64::from(x - lo.to_f32()) / f64::from(hi.to_f32() - lo.to_f32());
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let found = ups / n as f64;
            assert!(
                (found - p).abs() < 5.0 * sd + 1e-9,
                "{x}: p {p}, found {found}"
            );
        }
    }

    #[test]
    fn draws_depend_on_seed_step_and_index() {
        let a = Stream::new(1, 2);
        assert_eq!(a.bits(3), Stream::new(1, 2).bits(3));
        assert_ne!(a.bits(3), Stream::new(2, 2).bits(3));
        assert_ne!(a.bits(3), Stream::new(1, 3).bits(3));
        assert_ne!(a.bits(3), a.bits(4));
    }
}
