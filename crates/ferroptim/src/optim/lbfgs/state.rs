//! LBFGS's state and its state_dict form, under torch's keys.

use crate::error::{Error, Result};
use crate::state::{ParamStateDict, StateEntries, StateValue};
use crate::tensor::{Dtype, Tensor};

/// LBFGS's state, for all parameters at once, under torch's keys. The
/// vectors are flat, in the parameters' dtype; `d` is `None` until a step
/// has run an iteration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LbfgsState {
    /// Closure evaluations so far.
    pub func_evals: u64,
    /// Iterations so far.
    pub n_iter: u64,
    /// The last search direction.
    pub d: Option<Tensor>,
    /// The last step length.
    pub t: f64,
    /// The history's gradient differences `y`, oldest first.
    pub old_dirs: Vec<Tensor>,
    /// The history's steps `s`, oldest first.
    pub old_stps: Vec<Tensor>,
    /// `1 / yᵀs` for each pair (rounded to the parameters' dtype).
    pub ro: Vec<f64>,
    /// The scale of the initial inverse Hessian; `None` is torch's integer 1.
    pub h_diag: Option<f64>,
    /// The gradient at the last iteration.
    pub prev_flat_grad: Option<Tensor>,
    /// The loss at the last iteration.
    pub prev_loss: f64,
}

impl LbfgsState {
    pub(super) fn to_entries(&self, dtype: Dtype) -> ParamStateDict {
        let scalar = |x: f64| Tensor::scalar_of(dtype, x);
        let mut entries = ParamStateDict::from([
            ("func_evals".into(), StateValue::Int(self.func_evals as i64)),
            ("n_iter".into(), StateValue::Int(self.n_iter as i64)),
        ]);
        let Some(d) = &self.d else {
            return entries;
        };
        let h_diag = match self.h_diag {
            Some(h) => StateValue::Tensor(scalar(h)),
            None => StateValue::Int(1),
        };
        entries.extend([
            ("d".into(), StateValue::Tensor(d.clone())),
            ("t".into(), StateValue::Float(self.t)),
            (
                "old_dirs".into(),
                StateValue::TensorList(self.old_dirs.clone()),
            ),
            (
                "old_stps".into(),
                StateValue::TensorList(self.old_stps.clone()),
            ),
            (
                "ro".into(),
                StateValue::TensorList(self.ro.iter().map(|&r| scalar(r)).collect()),
            ),
            ("H_diag".into(), h_diag),
            ("prev_loss".into(), StateValue::Float(self.prev_loss)),
        ]);
        if let Some(g) = &self.prev_flat_grad {
            entries.insert("prev_flat_grad".into(), StateValue::Tensor(g.clone()));
        }
        entries
    }

    pub(super) fn from_entries(mut entries: StateEntries<'_>, numel: usize) -> Result<Self> {
        let mut state = LbfgsState {
            func_evals: entries.step("func_evals")? as u64,
            n_iter: entries.step("n_iter")? as u64,
            ..Default::default()
        };
        state.d = entries.optional_tensor("d")?;
        if state.d.is_some() {
            let required = |x: Option<f64>, key: &str| {
                x.ok_or_else(|| Error::state(format!("state[0].{key}"), "missing; saved with `d`"))
            };
            state.t = required(entries.optional_float("t")?, "t")?;
            state.old_dirs = entries.tensor_list("old_dirs", &[numel])?;
            state.old_stps = entries.tensor_list("old_stps", &[numel])?;
            state.ro = entries
                .tensor_list("ro", &[])?
                .iter()
                .map(|r| r.to_f64_vec()[0])
                .collect();
            let lens = [state.old_dirs.len(), state.old_stps.len(), state.ro.len()];
            if lens[1] != lens[0] || lens[2] != lens[0] {
                return Err(Error::state(
                    "state[0].old_dirs",
                    format!("old_dirs, old_stps and ro must be equally long, found {lens:?}"),
                ));
            }
            // torch's integer 1 and a tensor holding 1 scale identically.
            let h_diag = required(entries.optional_float("H_diag")?, "H_diag")?;
            state.h_diag = Some(h_diag).filter(|&h| h != 1.0);
            state.prev_flat_grad = Some(entries.tensor("prev_flat_grad")?);
            state.prev_loss = required(entries.optional_float("prev_loss")?, "prev_loss")?;
        } else if state.n_iter > 0 {
            return Err(Error::state(
                "state[0].d",
                format!(
                    "missing, but n_iter is {}: the direction is needed to go on",
                    state.n_iter
                ),
            ));
        }
        // torch's scratch for the two-loop recursion, recomputed by every
        // step (torch keeps it only to reuse the memory): read and dropped.
        entries.ignore("al");
        entries.finish()?;
        Ok(state)
    }
}
