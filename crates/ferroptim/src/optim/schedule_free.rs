//! What Schedule-Free SGD and AdamW share (Defazio et al., 2024, "The Road
//! Less Scheduled"; schedulefree 1.4.1): the averaging weights, kept in the
//! param group as the reference keeps them, and the switch between the
//! training point `y` and the average `x`.
//!
//! Schedule-Free keeps three points: `z`, the base method's iterate (in the
//! state); `x`, the weighted average of the `z`s, where the model is
//! evaluated; and `y = (1 − β)·z + β·x`, where gradients are taken. The
//! parameters hold `y` in train mode and `x` in eval mode. With step `k`
//! (from 0), warm-up `W` and the group's lr:
//!
//! ```text
//! lr_k  = lr · min(1, (k+1)/W)                   (scheduled_lr)
//! lr_max = max(lr_max, lr_k)
//! w_k   = (k+1)^r · lr_max^weight_lr_power,   weight_sum += w_k
//! c_k+1 = w_k / weight_sum                       (0 when weight_sum = 0)
//! ```
//!
//! then `y ← lerp(y, z, c) + lr_k·(β·(1 − c) − 1)·g` and `z ← z − lr_k·g`,
//! with `g` the gradient plus `λ·y` (AdamW: normalized first). `eval()`
//! sets `θ ← lerp(θ, z, 1 − 1/β)` and `train()` `θ ← lerp(θ, z, 1 − β)`.

use super::super::kernels::py_max;

/// A group's averaging state after one more step, as the reference updates it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Averaging {
    /// Steps taken (`k`).
    pub k: u64,
    /// This step's lr after warm-up (`scheduled_lr`).
    pub scheduled_lr: f64,
    /// The largest scheduled lr so far (`lr_max`, −1 before the first step).
    pub lr_max: f64,
    /// The sum of the weights so far (`weight_sum`).
    pub weight_sum: f64,
}

impl Averaging {
    /// The state after the step that follows `self` (the reference's
    /// arithmetic, in Python floats).
    pub fn advance(self, lr: f64, warmup_steps: u64, r: f64, weight_lr_power: f64) -> Averaging {
        // Saturating: a step count read from a checkpoint may be anything.
        let next = self.k.saturating_add(1);
        let sched = if self.k < warmup_steps {
            next as f64 / warmup_steps as f64
        } else {
            1.0
        };
        let scheduled_lr = lr * sched;
        let lr_max = py_max(scheduled_lr, self.lr_max);
        let weight = weight(next, r, lr_max, weight_lr_power);
        Averaging {
            k: next,
            scheduled_lr,
            lr_max,
            weight_sum: self.weight_sum + weight,
        }
    }

    /// `c_{k+1}` of the step that led to `self`.
    pub fn ckp1(&self, r: f64, weight_lr_power: f64) -> f64 {
        let weight = weight(self.k, r, self.lr_max, weight_lr_power);
        // Python: a ZeroDivisionError, caught as 0.
        if self.weight_sum == 0.0 {
            0.0
        } else {
            weight / self.weight_sum
        }
    }
}

/// `(k+1)^r · lr_max^weight_lr_power`, with `step` = k+1.
fn weight(step: u64, r: f64, lr_max: f64, weight_lr_power: f64) -> f64 {
    (step as f64).powf(r) * lr_max.powf(weight_lr_power)
}

/// The interpolation weight that moves `θ` to the mode `train` (with
/// `beta` the momentum, β₁ for AdamW).
pub(crate) fn mode_weight(train: bool, beta: f64) -> f64 {
    if train {
        1.0 - beta
    } else {
        1.0 - 1.0 / beta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_and_weights_follow_the_definition() {
        let start = Averaging {
            k: 0,
            scheduled_lr: 0.0,
            lr_max: -1.0,
            weight_sum: 0.0,
        };
        let one = start.advance(1.0, 4, 0.0, 2.0);
        assert_eq!((one.k, one.scheduled_lr, one.lr_max), (1, 0.25, 0.25));
        // The first weight is the whole sum: z is the average.
        assert_eq!(one.ckp1(0.0, 2.0), 1.0);
        let two = one.advance(1.0, 4, 0.0, 2.0);
        assert_eq!(two.weight_sum, 0.25f64.powi(2) + 0.5f64.powi(2));
        assert_eq!(two.ckp1(0.0, 2.0), 0.25 / (0.0625 + 0.25));
        // A zero lr makes every weight 0, and c is then 0.
        let zero = start.advance(0.0, 0, 0.0, 2.0);
        assert_eq!(zero.ckp1(0.0, 2.0), 0.0);
    }
}
