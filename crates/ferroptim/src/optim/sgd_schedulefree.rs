//! Schedule-Free SGD (Defazio et al., 2024, "The Road Less Scheduled"), as
//! schedulefree 1.4.1's `SGDScheduleFree` implements it: SGD whose iterates
//! are averaged online instead of following an lr schedule (see
//! [`schedule_free`](super::schedule_free) for the averaging):
//!
//! ```text
//! g ← g + λ·y
//! y ← lerp(y, z, c_{k+1}) + lr_k·(β·(1 − c_{k+1}) − 1)·g
//! z ← z − lr_k·g
//! ```
//!
//! The parameters are `y` in train mode and the average `x` in eval mode:
//! call [`Optimizer::train`](crate::Optimizer::train) before training steps
//! and [`Optimizer::eval`](crate::Optimizer::eval) before evaluating or
//! saving the model. A step in eval mode is an error (as in the
//! reference), and `train_mode` is in the state_dict. The state is `z`
//! (a copy of θ at the parameter's first step); the averaging weights are
//! group keys, as in the reference. The reference adds the decay to
//! `p.grad` in place; ferroptim leaves the gradient alone.

use serde::{Deserialize, Serialize};

use super::schedule_free::{mode_weight, Averaging};
use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::{self, ScheduleFreeScalars, SgdScheduleFreeSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::{check_non_negative, py_float};

/// Schedule-Free SGD over param groups.
pub type SgdScheduleFree = Optim<SgdScheduleFreeConfig>;

/// Schedule-Free SGD's hyperparameters and averaging state: schedulefree's
/// group keys and defaults.
///
/// ```
/// use ferroptim::{optim::{SgdScheduleFree, SgdScheduleFreeConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = SgdScheduleFree::new([p.clone()], SgdScheduleFreeConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![1.0], &[1])?)?;
/// assert!(opt.step().is_err()); // not in train mode yet
/// opt.train()?;
/// opt.step()?;
/// opt.eval()?; // θ now holds the average x, for evaluation
/// assert_eq!(opt.hyperparameter(0, "train_mode"), Some(false.into()));
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdScheduleFreeConfig {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// The interpolation β between z and x, in (0, 1) (default 0.9).
    pub momentum: f64,
    /// L2 penalty, taken at y (default 0).
    pub weight_decay: f64,
    /// Steps of linear lr warm-up (default 0).
    pub warmup_steps: u64,
    /// The power of the step in the averaging weights (default 0).
    pub r: f64,
    /// The power of the lr in the averaging weights (default 2).
    pub weight_lr_power: f64,
    /// Steps taken (`k`).
    pub k: u64,
    /// Whether the parameters are at y (train) or x (eval); false until `train()`.
    pub train_mode: bool,
    /// The sum of the averaging weights so far.
    pub weight_sum: f64,
    /// The largest scheduled lr so far (−1 before the first step).
    pub lr_max: f64,
    /// The last step's lr after warm-up.
    pub scheduled_lr: f64,
    /// The reference's choice of implementation (default true). Its two
    /// give the same numbers; ferroptim has one. Kept for the state_dict.
    pub foreach: bool,
}

impl Default for SgdScheduleFreeConfig {
    fn default() -> Self {
        SgdScheduleFreeConfig {
            lr: 1.0,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
            k: 0,
            train_mode: false,
            weight_sum: 0.0,
            lr_max: -1.0,
            scheduled_lr: 0.0,
            foreach: true,
        }
    }
}

/// Schedule-Free SGD's per-parameter state, under the reference's key.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdScheduleFreeState {
    /// The base iterate.
    pub z: Tensor,
}

crate::param_state!(SgdScheduleFreeState { z: tensor });

crate::hyperparameters!(SgdScheduleFreeConfig {
    name: "SGDScheduleFree",
    reference: "schedulefree 1.4.1",
    torch_flags: &[],
    optional_keys: &[],

    /// The reference's checks and messages; NaN fails too (it lets NaN through).
    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("weight_decay", "Invalid weight_decay value", self.weight_decay)?;
        if !(self.momentum > 0.0 && self.momentum < 1.0) {
            return Err(Error::hyper(
                "momentum",
                format!("Momentum must be between 0 and 1 exclusive: {}", py_float(self.momentum)),
            ));
        }
        Ok(())
    }
});

impl SgdScheduleFreeConfig {
    fn averaging(&self) -> Averaging {
        Averaging {
            k: self.k,
            scheduled_lr: self.scheduled_lr,
            lr_max: self.lr_max,
            weight_sum: self.weight_sum,
        }
    }
}

impl Algorithm for SgdScheduleFreeConfig {
    type State = SgdScheduleFreeState;

    fn begin_step(&mut self) {
        let next =
            self.averaging()
                .advance(self.lr, self.warmup_steps, self.r, self.weight_lr_power);
        (self.k, self.scheduled_lr, self.lr_max, self.weight_sum) =
            (next.k, next.scheduled_lr, next.lr_max, next.weight_sum);
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> SgdScheduleFreeState {
        SgdScheduleFreeState {
            z: param.zeros_like(),
        }
    }

    fn init_state_from<T: Element>(
        &self,
        values: &[T],
        param: &ParamMeta<'_>,
    ) -> SgdScheduleFreeState {
        SgdScheduleFreeState {
            z: Tensor::from_vec(values.to_vec(), param.shape())
                .unwrap_or_else(|_| param.zeros_like()),
        }
    }

    fn train_mode(&self) -> Option<bool> {
        Some(self.train_mode)
    }

    fn set_train_mode(&mut self, train: bool) {
        self.train_mode = train;
    }

    fn switch_mode<T: Element>(
        &self,
        train: bool,
        param: &mut [T],
        state: &SgdScheduleFreeState,
    ) -> Result<()> {
        let z = state.z.as_slice::<T>()?;
        kernels::switch_mode(param, z, mode_weight(train, self.momentum));
        Ok(())
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        _: &[usize],
        state: &mut SgdScheduleFreeState,
    ) -> Result<()> {
        let lr = self.scheduled_lr;
        let ckp1 = self.averaging().ckp1(self.r, self.weight_lr_power);
        let h = ScheduleFreeScalars {
            weight_decay: (self.weight_decay != 0.0).then(|| T::from_f64(self.weight_decay)),
            ckp1: T::from_f64(ckp1),
            y_coef: T::from_f64(lr * (self.momentum * (1.0 - ckp1) - 1.0)),
            neg_lr: T::from_f64(-lr),
        };
        let slices = SgdScheduleFreeSlices {
            param,
            grad,
            z: state.z.as_slice_mut::<T>()?,
        };
        kernels::sgd_schedule_free(slices, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, Param};

    fn stepped(steps: usize) -> (SgdScheduleFree, Param) {
        let p = Param::from_vec(vec![1.0f64, -2.0], &[2]).unwrap();
        let config = SgdScheduleFreeConfig {
            lr: 0.1,
            ..Default::default()
        };
        let mut opt = SgdScheduleFree::new([p.clone()], config).unwrap();
        opt.train().unwrap();
        for i in 0..steps {
            let g = vec![0.5 + i as f64, -1.0];
            p.set_grad(Tensor::from_vec(g, &[2]).unwrap()).unwrap();
            opt.step().unwrap();
        }
        (opt, p)
    }

    #[test]
    fn a_step_in_eval_mode_is_refused_and_changes_nothing() {
        let (mut opt, p) = stepped(3);
        opt.eval().unwrap();
        let (before, sd) = (p.to_vec::<f64>().unwrap(), opt.state_dict());
        let err = opt.step().unwrap_err();
        assert!(
            matches!(err, Error::NotInTrainMode { group: 0, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("call train()"));
        let mut called = false;
        let closure = opt.step_with_closure(&mut || {
            called = true;
            Ok(0.0)
        });
        assert!(closure.is_err() && !called, "the closure ran in eval mode");
        assert_eq!((p.to_vec::<f64>().unwrap(), opt.state_dict()), (before, sd));
    }

    #[test]
    fn eval_and_train_move_between_y_and_x_once() {
        let (mut opt, p) = stepped(3);
        let y = p.to_vec::<f64>().unwrap();
        opt.train().unwrap(); // already in train mode: nothing moves
        assert_eq!(p.to_vec::<f64>().unwrap(), y);
        opt.eval().unwrap();
        let x = p.to_vec::<f64>().unwrap();
        assert_ne!(x, y);
        opt.eval().unwrap();
        assert_eq!(p.to_vec::<f64>().unwrap(), x);
        opt.train().unwrap();
        for (a, b) in p.to_vec::<f64>().unwrap().iter().zip(&y) {
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs(), "{a} vs {b}");
        }
        // x is the average of the z's: with β = 0.9, y = 0.1·z + 0.9·x.
        let z = opt.state(&p).unwrap().z.to_f64_vec();
        for ((y, x), z) in y.iter().zip(&x).zip(&z) {
            assert!((y - (0.1 * z + 0.9 * x)).abs() < 1e-12);
        }
    }

    #[test]
    fn the_mode_is_saved_and_loaded() {
        let (mut opt, _) = stepped(2);
        opt.eval().unwrap();
        let in_eval = opt.state_dict();
        assert_eq!(in_eval.param_groups[0]["train_mode"], false);
        let (mut other, _) = stepped(2);
        other.load_state_dict(&in_eval).unwrap();
        assert!(
            other.step().is_err(),
            "a checkpoint saved in eval mode loads in eval mode"
        );
    }

    #[test]
    fn a_hostile_step_count_does_not_overflow() {
        let (mut opt, p) = stepped(1);
        let mut sd = opt.state_dict();
        sd.param_groups[0].insert("k".into(), u64::MAX.into());
        opt.load_state_dict(&sd).unwrap();
        p.set_grad(Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap())
            .unwrap();
        opt.step().unwrap();
        assert_eq!(opt.hyperparameter(0, "k"), Some(u64::MAX.into()));
    }

    #[test]
    fn an_empty_state_entry_is_no_state() {
        // torch's state is a defaultdict: schedulefree's train() leaves `{}`
        // for every parameter it looked at before its first step.
        let (mut opt, _) = stepped(0);
        let mut sd = opt.state_dict();
        sd.state.insert(0, Default::default());
        opt.load_state_dict(&sd).unwrap();
        assert!(opt.state_dict().state.is_empty());
    }

    #[test]
    fn nan_and_out_of_range_arguments_are_refused() {
        let p = || [Param::zeros::<f32>(&[1])];
        for (config, name) in [
            (
                SgdScheduleFreeConfig {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr",
            ),
            (
                SgdScheduleFreeConfig {
                    momentum: 1.0,
                    ..Default::default()
                },
                "momentum",
            ),
            (
                SgdScheduleFreeConfig {
                    momentum: f64::NAN,
                    ..Default::default()
                },
                "momentum",
            ),
        ] {
            let err = SgdScheduleFree::new(p(), config).unwrap_err();
            assert!(
                matches!(err, Error::InvalidHyperparameter { name: n, .. } if n == name),
                "{err:?}"
            );
        }
        let beta1_zero = super::super::AdamWScheduleFreeConfig {
            betas: (0.0, 0.999),
            ..Default::default()
        };
        let err = super::super::AdamWScheduleFree::new(p(), beta1_zero).unwrap_err();
        assert!(err.to_string().contains("eval() divides by it"), "{err}");
    }
}
