//! Lookahead's kernel: the fast weights pulled toward the slow ones, and
//! the slow ones set to the result, in one pass.

use super::{lerp, run, slices, Loop};
use crate::error::Result;
use crate::tensor::Element;

slices!(
    /// Lookahead's slices: the fast weights (`param`, or the base
    /// optimizer's momentum buffer) and their slow copy.
    LookaheadSlices, "lookahead" {
        /// The slow copy (`slow_params` or `slow_momentum`).
        slow: write,
    }
);

/// The weight of one Lookahead update: `1 − α`, rounded to the dtype as
/// torch rounds the Python float of `_foreach_lerp_(weight=1.0 - alpha)`.
#[derive(Clone, Copy, Debug)]
pub struct LookaheadScalars<T> {
    /// `1 − α`.
    pub weight: T,
}

/// `θ ← lerp(θ, φ, 1 − α)`, then `φ ← θ` (torch's `lerp_` rounding).
pub fn lookahead<T: Element>(
    slices: LookaheadSlices<'_, T>,
    h: &LookaheadScalars<T>,
) -> Result<()> {
    run(slices, h)
}

impl<T: Element> Loop<LookaheadSlices<'_, T>> for LookaheadScalars<T> {
    #[inline(always)]
    fn run(&self, s: LookaheadSlices<'_, T>) {
        for (p, slow) in s.param.iter_mut().zip(s.slow.iter_mut()) {
            *p = lerp(*p, *slow, self.weight);
            *slow = *p;
        }
    }
}
