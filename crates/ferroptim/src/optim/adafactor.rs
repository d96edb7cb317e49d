//! Adafactor: adaptive learning rates with sublinear memory (Shazeer & Stern,
//! 2018; `torch.optim.Adafactor`).
//!
//! At step `t`, with `β̂₂ₜ = 1 − t^τ` (τ = `beta2_decay`), `ρₜ = min(lr, 1/√t)`
//! and `N` the number of elements:
//!
//! ```text
//! α  ← max(ε₂, ‖θ‖/√N)·ρₜ                      (before any decay)
//! θ  ← θ·(1 − lr·λ)                             (weight decay)
//! matrices:  R ← lerp(R, mean_cols(g²), 1 − β̂₂ₜ)     C ← lerp(C, mean_rows(g²), 1 − β̂₂ₜ)
//!            v̂ ← R·C / max(mean(R), ε₁)
//! vectors:   v̂ ← lerp(v̂, g², 1 − β̂₂ₜ)
//! u  ← ±g / √max(v̂, ε₁²)
//! θ  ← θ − α/max(1, ‖u‖/(√N·d)) · u
//! ```
//!
//! Parameters of two or more dimensions are factored over their last two
//! (state `row_var` of shape `[.., m, 1]` and `col_var` of shape `[.., 1, n]`);
//! vectors and scalars keep the full `variance`. `ε₁ = None` means the
//! dtype's machine epsilon. `foreach` is accepted and ignored.
//!
//! torch raises `ZeroDivisionError` on a parameter with no elements (it
//! divides by `√N`); here such a parameter only counts the step.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::kernels::adafactor::{self, AdafactorScalars, SecondMoment};
use crate::kernels::{py_max, py_min};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::state::ParamState;
use crate::state::{step_value, ParamStateDict, StateEntries, StateValue};
use crate::tensor::{Element, Tensor};
use crate::validate::{check_non_negative, py_float};

/// Adafactor over param groups.
pub type Adafactor = Optim<AdafactorConfig>;

/// Adafactor's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Adafactor, AdafactorConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64; 6], &[2, 3])?;
/// let mut opt = Adafactor::new([p.clone()], AdafactorConfig::default())?;
/// p.set_grad(Tensor::from_vec(vec![0.5f64; 6], &[2, 3])?)?;
/// opt.step()?;
/// // First step: u = sign(g), so every weight moves by α = max(ε₂, ‖θ‖/√N)·lr = 0.01.
/// assert!(p.to_vec::<f64>()?.iter().all(|&x| (x - 0.99).abs() < 1e-12));
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdafactorConfig {
    /// Learning rate, also the cap of the relative step size ρₜ (default 1e-2).
    pub lr: f64,
    /// τ in `1 − β̂₂ₜ = t^τ`: how fast the second moment forgets (default −0.8).
    pub beta2_decay: f64,
    /// `(ε₁, ε₂)`: the floor of the variance estimate (`None`: the dtype's
    /// machine epsilon) and of the parameter scale (default `(None, 1e-3)`).
    pub eps: (Option<f64>, f64),
    /// Clipping threshold of the update's RMS (default 1).
    pub d: f64,
    /// Decoupled weight decay λ (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        AdafactorConfig {
            lr: 1e-2,
            beta2_decay: -0.8,
            eps: (None, 1e-3),
            d: 1.0,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// Where Adafactor keeps one parameter's second moment.
#[derive(Clone, Debug, PartialEq)]
pub enum AdafactorMoment {
    /// Matrices and batches of them: torch's `row_var` (`[.., m, 1]`) and `col_var` (`[.., 1, n]`).
    Factored {
        /// Running mean of `g²` over each row.
        row_var: Tensor,
        /// Running mean of `g²` over each column.
        col_var: Tensor,
    },
    /// Vectors and scalars: torch's `variance`, of the parameter's shape.
    Full {
        /// Running average of `g²`.
        variance: Tensor,
    },
}

/// Adafactor's per-parameter state, under torch's keys.
#[derive(Clone, Debug)]
pub struct AdafactorState {
    /// Steps taken.
    pub step: f64,
    /// The second moment.
    pub moment: AdafactorMoment,
    /// Column sums for the factored update, kept so a step allocates nothing (not saved).
    scratch: Vec<f64>,
}

impl AdafactorState {
    fn new(step: f64, moment: AdafactorMoment, shape: &[usize]) -> Self {
        let cols = if shape.len() > 1 {
            shape[shape.len() - 1]
        } else {
            0
        };
        AdafactorState {
            step,
            moment,
            scratch: vec![0.0; cols],
        }
    }
}

/// The shapes of `row_var` and `col_var` for a parameter of `shape` (two or more dimensions).
fn factor_shapes(shape: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let d = shape.len();
    let (mut row, mut col) = (shape.to_vec(), shape.to_vec());
    row[d - 1] = 1;
    col[d - 2] = 1;
    (row, col)
}

impl ParamState for AdafactorState {
    fn to_entries(&self) -> ParamStateDict {
        let mut entries = ParamStateDict::from([("step".into(), step_value(self.step))]);
        match &self.moment {
            AdafactorMoment::Factored { row_var, col_var } => {
                entries.insert("row_var".into(), StateValue::Tensor(row_var.clone()));
                entries.insert("col_var".into(), StateValue::Tensor(col_var.clone()));
            }
            AdafactorMoment::Full { variance } => {
                entries.insert("variance".into(), StateValue::Tensor(variance.clone()));
            }
        }
        entries
    }

    fn from_entries(mut entries: StateEntries<'_>) -> Result<Self> {
        let shape = entries.shape();
        let step = entries.step("step")?;
        let moment = if shape.len() > 1 {
            let (row, col) = factor_shapes(shape);
            AdafactorMoment::Factored {
                row_var: entries.tensor_shaped("row_var", &row)?,
                col_var: entries.tensor_shaped("col_var", &col)?,
            }
        } else {
            AdafactorMoment::Full {
                variance: entries.tensor("variance")?,
            }
        };
        entries.finish()?;
        Ok(AdafactorState::new(step, moment, shape))
    }
}

crate::hyperparameters!(AdafactorConfig {
    name: "Adafactor",
    torch_flags: &["foreach"],
    optional_keys: &[],

    fn validate(&self) -> Result<()> {
        // torch's checks and messages, in torch's order; NaNs are refused too.
        let lr_label = "Learning rate should be >= 0 but is";
        check_non_negative("lr", lr_label, self.lr)?;
        if self.beta2_decay.is_nan() || self.beta2_decay > 0.0 {
            let message = format!(
                "beta2_decay should be <= 0 but is: {}",
                py_float(self.beta2_decay)
            );
            return Err(Error::hyper("beta2_decay", message));
        }
        if let Some(eps1) = self.eps.0 {
            check_non_negative("eps", "epsilon1 should be >= 0 but is", eps1)?;
        }
        check_non_negative("eps", "epsilon2 should be >= 0 but is", self.eps.1)?;
        if self.d.is_nan() || self.d < 1.0 {
            let message = format!(
                "Clipping threshold d should be >= 1 but is: {}",
                py_float(self.d)
            );
            return Err(Error::hyper("d", message));
        }
        let wd_label = "weight_decay should be >= 0 but is";
        check_non_negative("weight_decay", wd_label, self.weight_decay)
    }
});

impl Algorithm for AdafactorConfig {
    type State = AdafactorState;

    fn init_state(&self, param: &ParamMeta<'_>) -> AdafactorState {
        let shape = param.shape();
        let moment = if shape.len() > 1 {
            let (row, col) = factor_shapes(shape);
            AdafactorMoment::Factored {
                row_var: Tensor::zeros(param.dtype(), &row),
                col_var: Tensor::zeros(param.dtype(), &col),
            }
        } else {
            AdafactorMoment::Full {
                variance: param.zeros_like(),
            }
        };
        AdafactorState::new(0.0, moment, shape)
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut AdafactorState,
    ) -> Result<()> {
        let step = state.step + 1.0;
        state.step = step;
        if param.is_empty() {
            return Ok(());
        }
        let eps1 = self.eps.0.unwrap_or(T::EPSILON);
        let h = AdafactorScalars {
            one_minus_beta2: T::from_f64(step.powf(self.beta2_decay)),
            eps1: T::from_f64(eps1),
            eps1_sq: T::from_f64(eps1 * eps1),
            maximize: self.maximize,
        };
        let rho = py_min(self.lr, 1.0 / step.powf(0.5));
        let sqrt_numel = (param.len() as f64).powf(0.5);

        let mut moment = match &mut state.moment {
            AdafactorMoment::Factored { row_var, col_var } => SecondMoment::Factored {
                row_var: row_var.as_slice_mut::<T>()?,
                col_var: col_var.as_slice_mut::<T>()?,
                rows: shape[shape.len() - 2],
                cols: shape[shape.len() - 1],
                scratch: &mut state.scratch,
            },
            AdafactorMoment::Full { variance } => SecondMoment::Full(variance.as_slice_mut::<T>()?),
        };
        // One pass measures the parameter (as it was) while it updates the moment.
        let sums = adafactor::second_moment(param, grad, &mut moment, &h)?;
        let param_rms = adafactor::norm_item::<T>(sums.param_sum_sq) / sqrt_numel;
        let alpha = py_max(self.eps.1, param_rms) * rho;
        let update_sum_sq = match sums.update_sum_sq {
            Some(sum) => sum,
            None => adafactor::update_sum_sq(grad, &moment, &h),
        };
        let update_rms = adafactor::norm_item::<T>(update_sum_sq) / (sqrt_numel * self.d);
        let denom = py_max(1.0, update_rms);
        let decay =
            (self.weight_decay != 0.0).then(|| T::from_f64(1.0 - self.lr * self.weight_decay));
        adafactor::apply(param, grad, &moment, &h, decay, T::from_f64(-alpha / denom))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, Param};

    #[test]
    fn an_empty_parameter_only_counts_the_step() {
        let p = Param::zeros::<f32>(&[0, 3]);
        let mut opt = Adafactor::new([p.clone()], AdafactorConfig::default()).unwrap();
        p.set_grad(Tensor::zeros(crate::Dtype::F32, &[0, 3]))
            .unwrap();
        opt.step().unwrap();
        let sd = opt.state_dict();
        let state = &sd.state[&0];
        assert_eq!(state.len(), 3, "step, row_var and col_var");
        match &state["row_var"] {
            StateValue::Tensor(t) => assert_eq!(t.shape(), &[0, 1]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn factored_state_has_torch_shapes() {
        assert_eq!(factor_shapes(&[2, 3, 4]), (vec![2, 3, 1], vec![2, 1, 4]));
    }
}
