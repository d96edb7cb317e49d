//! L-BFGS (Liu & Nocedal, 1989; `torch.optim.LBFGS`, after minFunc).
//!
//! Each `step_with_closure` runs up to `max_iter` iterations on the flattened
//! parameters `x`, re-evaluating the objective through the closure:
//!
//! ```text
//! d ← −H·g           H from the last `history_size` pairs (s, y), two-loop recursion,
//!                    scaled by H_diag = sᵀy / yᵀy; on the very first iteration d ← −g
//! t ← lr             (first iteration ever: min(1, 1/‖g‖₁)·lr)
//! t ← strong_wolfe(x, t, d)   with line_search_fn = "strong_wolfe"
//! x ← x + t·d
//! ```
//!
//! It stops when `max|g| ≤ tolerance_grad`, when `gᵀd > −tolerance_change`,
//! when `max|t·d|` or the change of the loss falls below `tolerance_change`,
//! or after `max_iter` iterations or `max_eval` evaluations, all exactly as
//! torch does, so the closure is called as many times as in torch.
//!
//! LBFGS keeps one state for all parameters (under parameter 0 in the
//! state_dict, with torch's keys `func_evals`, `n_iter`, `d`, `t`,
//! `old_dirs`, `old_stps`, `ro`, `H_diag`, `prev_flat_grad`, `prev_loss`;
//! torch's scratch list `al` is recomputed before use and not kept). It
//! takes one param group of parameters of one dtype, of any
//! [`ParamSlot`] kind (ferroptim's `Param`s, candle's `Var`s), and keeps no
//! copy of them: the shared group store plus one state. Each step allocates
//! flat copies of the gradient, the direction and the history pairs, and
//! one of the parameters (torch's `x_init`, also what a failed step is
//! rolled back to).

mod iterate;
mod state;
mod strong_wolfe;

pub use state::LbfgsState;

use serde::{Deserialize, Serialize};

use crate::algorithm::Hyperparameters;
use crate::error::{Error, Result};
use crate::group::{GroupSpec, GroupStore, Groups, IntoParamGroups, ParamGroup};
use crate::optimizer::{
    hooked_load, hooked_state_dict, hooked_step, Optimizer, OptimizerHooks, StepOutcome,
};
use crate::param::Param;
use crate::slot::ParamSlot;
use crate::state::{StateDict, StateEntries};
use crate::tensor::{numel, Dtype};
use crate::validate::check_non_negative;

/// The line search LBFGS may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineSearch {
    /// Bracketing and zoom until the strong Wolfe conditions hold.
    #[serde(rename = "strong_wolfe")]
    StrongWolfe,
}

/// LBFGS's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Lbfgs, LbfgsConfig, LineSearch}, Optimizer, Param, Tensor};
/// // Minimize (x − 3)² + 10·(y + 1)².
/// let p = Param::from_vec(vec![0.0f64, 0.0], &[2])?;
/// let config = LbfgsConfig { line_search_fn: Some(LineSearch::StrongWolfe), ..Default::default() };
/// let mut opt = Lbfgs::new([p.clone()], config)?;
/// let q = p.clone();
/// let mut closure = move || {
///     let v = q.to_vec::<f64>()?;
///     q.set_grad(Tensor::from_vec(vec![2.0 * (v[0] - 3.0), 20.0 * (v[1] + 1.0)], &[2])?)?;
///     Ok((v[0] - 3.0).powi(2) + 10.0 * (v[1] + 1.0).powi(2))
/// };
/// opt.step_with_closure(&mut closure)?;
/// let v = p.to_vec::<f64>()?;
/// assert!((v[0] - 3.0).abs() < 1e-6 && (v[1] + 1.0).abs() < 1e-6);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbfgsConfig {
    /// Learning rate: the step along the direction (default 1).
    pub lr: f64,
    /// Iterations per `step` (default 20).
    pub max_iter: usize,
    /// Closure evaluations per `step` (default `max_iter * 5 / 4`, set by the constructor).
    pub max_eval: Option<usize>,
    /// Stop when every gradient element is at most this in magnitude (default 1e-7).
    pub tolerance_grad: f64,
    /// Stop when the step or the loss changes less than this (default 1e-9).
    pub tolerance_change: f64,
    /// How many (s, y) pairs to keep (default 100).
    pub history_size: usize,
    /// `None` (a fixed step of `lr`) or strong Wolfe (default `None`).
    pub line_search_fn: Option<LineSearch>,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        LbfgsConfig {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search_fn: None,
            maximize: false,
        }
    }
}

crate::hyperparameters!(LbfgsConfig {
    name: "LBFGS",
    torch_flags: &[],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        if self.history_size == 0 {
            // torch accepts it, then fails inside step() popping an empty history.
            return Err(Error::hyper(
                "history_size",
                "Invalid history_size: 0 (at least one (s, y) pair must be kept)".into(),
            ));
        }
        Ok(())
    }

    fn resolve(&mut self) {
        self.max_eval = self.max_eval.or(Some(default_max_eval(self.max_iter)));
    }
});

/// L-BFGS over one group of parameters: `step_with_closure` only.
#[derive(Clone, Debug)]
pub struct Lbfgs<P: ParamSlot = Param> {
    groups: Groups<LbfgsConfig, P>,
    dtype: Dtype,
    state: Option<LbfgsState>,
    hooks: OptimizerHooks,
}

fn single_group() -> Error {
    Error::InvalidConfig {
        optimizer: LbfgsConfig::NAME,
        reason: "LBFGS doesn't support per-parameter options (parameter groups)".into(),
    }
}

impl<P: ParamSlot> Lbfgs<P> {
    /// LBFGS over `params`: one group, every parameter of the same dtype.
    /// `max_eval` left as `None` becomes `max_iter * 5 / 4`, as in torch.
    pub fn new(params: impl IntoParamGroups<P>, defaults: LbfgsConfig) -> Result<Self> {
        let groups = Groups::new(params, defaults, &|_, _, _, _| Ok(()))?;
        if groups.num_params() == 0 {
            return Err(Error::EmptyParamList);
        }
        if groups.len() != 1 {
            return Err(single_group());
        }
        let dtype = groups.params().next().map_or(Dtype::F32, ParamSlot::dtype);
        if let Some((i, p)) = groups
            .params()
            .enumerate()
            .find(|(_, p)| p.dtype() != dtype)
        {
            return Err(Error::DtypeMismatch {
                what: format!("parameter {i} (LBFGS works on all parameters as one vector)"),
                expected: dtype,
                found: p.dtype(),
            });
        }
        if dtype.is_reduced() {
            return Err(Error::DtypeUnsupported {
                what: "parameter 0".into(),
                dtype,
                refused_by: LbfgsConfig::NAME,
                supported: "float32 and float64",
            });
        }
        Ok(Lbfgs {
            groups,
            dtype,
            state: None,
            hooks: OptimizerHooks::default(),
        })
    }

    /// The state (torch's `optimizer.state[params[0]]`); `None` before the first step.
    pub fn state(&self) -> Option<&LbfgsState> {
        self.state.as_ref()
    }

    /// The hyperparameters of the one param group.
    pub fn options(&self) -> &LbfgsConfig {
        &self.groups.as_slice()[0].options
    }

    /// The hyperparameters of the one param group, to change between steps.
    pub fn options_mut(&mut self) -> &mut LbfgsConfig {
        &mut self.groups.as_mut_slice()[0].options
    }

    /// The one param group.
    pub fn param_groups(&self) -> &[ParamGroup<LbfgsConfig, P>] {
        self.groups.as_slice()
    }

    /// Refused: torch's LBFGS "doesn't support per-parameter options (parameter groups)".
    pub fn add_param_group(&mut self, _: GroupSpec<P>) -> Result<()> {
        Err(single_group())
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<P> {
        self.groups.params().cloned().collect()
    }

    fn numel(&self) -> usize {
        self.groups.params().map(|p| numel(&p.shape())).sum()
    }
}

impl<P: ParamSlot> crate::AddParamGroup<P> for Lbfgs<P> {
    fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()> {
        Lbfgs::add_param_group(self, group)
    }
}

impl<P: ParamSlot> Optimizer for Lbfgs<P> {
    fn name(&self) -> &'static str {
        LbfgsConfig::NAME
    }

    fn group_store(&self) -> &dyn GroupStore {
        &self.groups
    }

    fn group_store_mut(&mut self) -> &mut dyn GroupStore {
        &mut self.groups
    }

    fn hooks(&self) -> &OptimizerHooks {
        &self.hooks
    }

    fn step(&mut self) -> Result<()> {
        Err(Error::ClosureRequired {
            optimizer: LbfgsConfig::NAME,
        })
    }

    fn step_if_finite(&mut self) -> Result<StepOutcome> {
        // LBFGS computes its gradients inside the closure; there is nothing to scan first.
        Err(Error::ClosureRequired {
            optimizer: LbfgsConfig::NAME,
        })
    }

    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        hooked_step(self, |opt| match opt.dtype {
            Dtype::F32 => iterate::step::<f32, P>(opt, closure),
            Dtype::F64 => iterate::step::<f64, P>(opt, closure),
            // The constructor refuses them.
            dtype @ (Dtype::BF16 | Dtype::F16) => Err(Error::DtypeUnsupported {
                what: "parameter 0".into(),
                dtype,
                refused_by: LbfgsConfig::NAME,
                supported: "float32 and float64",
            }),
        })
    }

    fn state_dict(&self) -> StateDict {
        hooked_state_dict(self, || {
            let mut sd = StateDict {
                param_groups: self.groups.param_groups_json(),
                ..StateDict::default()
            };
            if let Some(state) = &self.state {
                sd.state.insert(0, state.to_entries(self.dtype));
            }
            sd
        })
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        hooked_load(self, sd, |opt, sd| {
            let saved = opt.groups.read_saved(&sd.param_groups, false)?;
            let first = saved[0].ids.first().copied().unwrap_or(0);
            let numel = opt.numel();
            let mut state = None;
            for (&id, entries) in &sd.state {
                if id != first {
                    return Err(Error::state(
                        format!("state[{id}]"),
                        format!("LBFGS keeps its state under its first parameter, {first}"),
                    ));
                }
                let reader =
                    StateEntries::new(id, std::slice::from_ref(&numel), opt.dtype, entries);
                state = Some(LbfgsState::from_entries(reader, numel)?);
            }
            opt.groups.commit(saved);
            opt.state = state;
            Ok(())
        })
    }
}

/// torch's default `max_eval`, `max_iter * 5 // 4` (at most `usize::MAX`).
pub(super) fn default_max_eval(max_iter: usize) -> usize {
    usize::try_from(max_iter as u128 * 5 / 4).unwrap_or(usize::MAX)
}
