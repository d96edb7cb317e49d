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
//! takes one param group of parameters of one dtype. Each step allocates
//! flat copies of the gradient, the direction and the history pairs.

mod iterate;
mod state;
mod strong_wolfe;

pub use state::LbfgsState;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{check_non_negative, Error, Result};
use crate::group::{
    check_no_duplicates, merge_options, options_from_saved, options_map, GroupSpec, IntoParamGroups,
};
use crate::optimizer::{check_extra_key, Hyperparameters, Optimizer, StepOutcome};
use crate::param::{Grad, Param};
use crate::state::{StateDict, StateEntries};
use crate::tensor::{Dtype, Element};

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

impl Hyperparameters for LbfgsConfig {
    const NAME: &'static str = "LBFGS";
    const TORCH_FLAGS: &'static [&'static str] = &[];
    const OPTIONAL_KEYS: &'static [&'static str] = &["maximize"];

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

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// L-BFGS over one group of parameters: `step_with_closure` only.
#[derive(Clone, Debug)]
pub struct Lbfgs {
    defaults: LbfgsConfig,
    params: Vec<Param>,
    dtype: Dtype,
    /// The hyperparameters of the one param group.
    pub options: LbfgsConfig,
    extra: Map<String, Value>,
    state: Option<LbfgsState>,
}

fn single_group() -> Error {
    Error::InvalidConfig {
        optimizer: LbfgsConfig::NAME,
        reason: "LBFGS doesn't support per-parameter options (parameter groups)".into(),
    }
}

impl Lbfgs {
    /// LBFGS over `params`: one group, every parameter of the same dtype.
    /// `max_eval` left as `None` becomes `max_iter * 5 / 4`, as in torch.
    pub fn new(params: impl IntoParamGroups, defaults: LbfgsConfig) -> Result<Self> {
        let mut defaults = defaults;
        defaults.validate()?;
        defaults.max_eval = defaults
            .max_eval
            .or(Some(default_max_eval(defaults.max_iter)));
        let mut groups = params.into_param_groups();
        if groups.iter().all(|g| g.params.is_empty()) {
            return Err(Error::EmptyParamList);
        }
        let mut seen = std::collections::HashSet::new();
        for group in &groups {
            check_no_duplicates(&group.params, &seen)?;
            seen.extend(group.params.iter().map(|p| p.id()));
        }
        if groups.len() != 1 {
            return Err(single_group());
        }
        let group = groups.remove(0);
        let dtype = group.params[0].dtype();
        if let Some((i, p)) = group
            .params
            .iter()
            .enumerate()
            .find(|(_, p)| p.dtype() != dtype)
        {
            return Err(Error::DtypeMismatch {
                what: format!("parameter {i} (LBFGS works on all parameters as one vector)"),
                expected: dtype,
                found: p.dtype(),
            });
        }
        let options = merge_options(&defaults, &group.options)?;
        Ok(Lbfgs {
            defaults,
            params: group.params,
            dtype,
            options,
            extra: Map::new(),
            state: None,
        })
    }

    /// The state (torch's `optimizer.state[params[0]]`); `None` before the first step.
    pub fn state(&self) -> Option<&LbfgsState> {
        self.state.as_ref()
    }

    fn numel(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// The one saved group's hyperparameters, extra keys and first
    /// parameter index, checked against this optimizer's group.
    fn read_param_groups(
        &self,
        saved: &[Map<String, Value>],
    ) -> Result<(LbfgsConfig, Map<String, Value>, usize)> {
        let [saved] = saved else {
            return Err(Error::GroupCountMismatch {
                expected: 1,
                found: saved.len(),
            });
        };
        let ids = crate::optimizer::saved_param_ids(saved, 0)?;
        if ids.len() != self.params.len() {
            return Err(Error::GroupSizeMismatch {
                group: 0,
                expected: self.params.len(),
                found: ids.len(),
            });
        }
        let (mut options, extra) = options_from_saved::<LbfgsConfig>(saved, 0)?;
        options.max_eval = options
            .max_eval
            .or(Some(default_max_eval(options.max_iter)));
        Ok((options, extra, ids.first().copied().unwrap_or(0)))
    }

    fn check_group(&self, group: usize) -> Result<()> {
        if group == 0 {
            Ok(())
        } else {
            Err(Error::NoSuchGroup { group, groups: 1 })
        }
    }
}

impl Lbfgs {
    /// Refused: torch's LBFGS "doesn't support per-parameter options (parameter groups)".
    pub fn add_param_group(&mut self, _: GroupSpec) -> Result<()> {
        Err(single_group())
    }

    /// The parameters, in order.
    pub fn params(&self) -> Vec<Param> {
        self.params.clone()
    }
}

impl Optimizer for Lbfgs {
    fn name(&self) -> &'static str {
        LbfgsConfig::NAME
    }

    fn zero_grad_with(&mut self, set_to_none: bool) {
        for p in &self.params {
            if set_to_none {
                p.clear_grad();
            } else {
                p.zero_grad_in_place();
            }
        }
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
        match self.dtype {
            Dtype::F32 => iterate::step::<f32>(self, closure),
            Dtype::F64 => iterate::step::<f64>(self, closure),
        }
    }

    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict {
            param_groups: self.param_groups_json(),
            ..StateDict::default()
        };
        if let Some(state) = &self.state {
            sd.state.insert(0, state.to_entries(self.dtype));
        }
        sd
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let (options, extra, first) = self.read_param_groups(&sd.param_groups)?;
        let numel = self.numel();
        let mut state = None;
        for (&id, entries) in &sd.state {
            if id != first {
                return Err(Error::state(
                    format!("state[{id}]"),
                    format!("LBFGS keeps its state under its first parameter, {first}"),
                ));
            }
            let reader = StateEntries::new(id, std::slice::from_ref(&numel), self.dtype, entries);
            state = Some(LbfgsState::from_entries(reader, numel)?);
        }
        self.options = options;
        self.extra = extra;
        self.state = state;
        Ok(())
    }

    fn param_groups_json(&self) -> Vec<Map<String, Value>> {
        let mut group = options_map(&self.options);
        group.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let ids = (0..self.params.len()).map(Value::from).collect();
        group.insert("params".into(), Value::Array(ids));
        vec![group]
    }

    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()> {
        let (options, extra, _) = self.read_param_groups(groups)?;
        self.options = options;
        self.extra = extra;
        Ok(())
    }

    fn num_param_groups(&self) -> usize {
        1
    }

    fn defaults_json(&self) -> Map<String, Value> {
        options_map(&self.defaults)
    }

    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value> {
        self.check_group(group).ok()?;
        let mut options = options_map(&self.options);
        options.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        options.remove(key)
    }

    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.check_group(group)?;
        self.options = merge_options(&self.options, &Map::from_iter([(key.to_string(), value)]))?;
        Ok(())
    }

    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.check_group(group)?;
        check_extra_key::<LbfgsConfig>(key, &value)?;
        self.extra.insert(key.to_string(), value);
        Ok(())
    }

    fn lr(&self, group: usize) -> Option<f64> {
        self.check_group(group).ok().map(|_| self.options.lr)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.check_group(group)?;
        self.options.lr = lr;
        Ok(())
    }
}

/// torch's default `max_eval`, `max_iter * 5 // 4` (at most `usize::MAX`).
pub(super) fn default_max_eval(max_iter: usize) -> usize {
    usize::try_from(max_iter as u128 * 5 / 4).unwrap_or(usize::MAX)
}

fn grad_of<T: Element>(p: &Param, out: &mut Vec<T>) -> Result<()> {
    let inner = p.read();
    let numel = inner.value.numel();
    let start = out.len();
    match &inner.grad {
        None => out.resize(start + numel, T::ZERO),
        Some(Grad::Dense(g)) => out.extend_from_slice(g.as_slice::<T>()?),
        Some(Grad::Sparse(g)) => {
            out.resize(start + numel, T::ZERO);
            let (rows, values) = g.coalesced::<T>()?;
            let width = if rows.is_empty() {
                0
            } else {
                values.len() / rows.len()
            };
            for (k, &r) in rows.iter().enumerate() {
                let dst = start + r * width;
                out[dst..dst + width].copy_from_slice(&values[k * width..(k + 1) * width]);
            }
        }
    }
    Ok(())
}
