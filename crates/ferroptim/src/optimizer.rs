//! The stateful optimizer of torch's `torch.optim.Optimizer`, written once.
//!
//! [`Optimizer`] is the interface every optimizer offers (`zero_grad`, `step`,
//! `state_dict`, `load_state_dict`, the groups' hyperparameters, ...); it is
//! object safe, so `Box<dyn Optimizer>` works (see
//! [`optim::build`](crate::optim::build)) and the schedulers take any
//! optimizer. [`Optim<A, P>`] implements it for every algorithm `A` whose
//! update is per parameter and every kind of parameter `P` (a
//! [`ParamSlot`]): the algorithm module only supplies its hyperparameters (an
//! [`Algorithm`]), its per-parameter state (a [`ParamState`]) and the update
//! of one parameter. Param groups, lazy state, validation and checkpoints
//! live here; `add_param_group` and `params`, whose types depend on `P`, are
//! `Optim`'s own methods.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::group::{
    check_no_duplicates, merge_options, options_from_saved, GroupSpec, IntoParamGroups, ParamGroup,
};
use crate::parallel::Exec;
use crate::param::Param;
use crate::slot::{GradKind, GradRef, ParamMeta, ParamSlot, SlotData};
use crate::state::{ParamStateDict, StateDict, StateEntries};
use crate::tensor::Element;

/// What every optimizer offers: torch's `Optimizer` methods.
pub trait Optimizer: Send {
    /// torch's class name, e.g. `"Adam"`.
    fn name(&self) -> &'static str;

    /// Drops every gradient (torch's default `zero_grad(set_to_none=True)`).
    fn zero_grad(&mut self) {
        self.zero_grad_with(true);
    }

    /// `zero_grad(set_to_none)`: drop the gradients, or set them to zero in place.
    fn zero_grad_with(&mut self, set_to_none: bool);

    /// One update of every parameter that has a gradient. Parameters without a
    /// gradient are skipped, as in torch. If any gradient is unusable the call
    /// fails before anything changes.
    fn step(&mut self) -> Result<()>;

    /// Steps only if every gradient is finite (torch's GradScaler skips a
    /// step on `found_inf` the same way). With a NaN or infinite gradient
    /// nothing changes, parameters nor state, and the outcome names the
    /// first such parameter (state_dict numbering); the gradients are left
    /// for the caller to inspect or clear.
    ///
    /// ```
    /// use ferroptim::{optim::{Sgd, SgdConfig}, Optimizer, Param, StepOutcome, Tensor};
    /// let p = Param::from_vec(vec![1.0f32], &[1])?;
    /// let mut opt = Sgd::new([p.clone()], SgdConfig { lr: 0.1, ..Default::default() })?;
    /// p.set_grad(Tensor::from_vec(vec![f32::NAN], &[1])?)?;
    /// assert_eq!(opt.step_if_finite()?, StepOutcome::Skipped { param: 0 });
    /// assert_eq!(p.to_vec::<f32>()?, [1.0]);
    /// p.set_grad(Tensor::from_vec(vec![1.0f32], &[1])?)?;
    /// assert_eq!(opt.step_if_finite()?, StepOutcome::Stepped);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    fn step_if_finite(&mut self) -> Result<StepOutcome>;

    /// Calls `closure` (which recomputes the loss and gradients), then steps,
    /// and returns the loss, as torch's `step(closure)`.
    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64>;

    /// The state and hyperparameters, shaped like torch's `state_dict()`.
    fn state_dict(&self) -> StateDict;

    /// Restores a state_dict. Everything is checked first; on error the
    /// optimizer is exactly as it was.
    fn load_state_dict(&mut self, state_dict: &StateDict) -> Result<()>;

    /// Every group's hyperparameters and extra keys, with `params`: the
    /// `param_groups` of [`Optimizer::state_dict`], without copying any state.
    fn param_groups_json(&self) -> Vec<Map<String, Value>>;

    /// Restores groups saved by [`Optimizer::param_groups_json`] (or the
    /// `param_groups` of a state_dict), leaving the state alone. Checked
    /// first, as `load_state_dict` checks them; on error nothing changes.
    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()>;

    /// The number of param groups.
    fn num_param_groups(&self) -> usize;

    /// The defaults, as JSON (torch's `optimizer.defaults`).
    fn defaults_json(&self) -> Map<String, Value>;

    /// A group's hyperparameter by torch's name (`group["momentum"]`).
    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value>;

    /// Sets a group's hyperparameter by name; the result is validated.
    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()>;

    /// Sets a key of a group that is not one of this optimizer's
    /// hyperparameters, as torch's schedulers add `initial_lr` or `max_lr` to
    /// its group dicts; it is kept through `state_dict` round trips and read
    /// back with [`Optimizer::hyperparameter`]. Hyperparameters themselves go
    /// through [`Optimizer::set_hyperparameter`], which validates them.
    /// `null` is refused: it is what serde_json makes of a NaN or infinite
    /// float, which [`json::number`](crate::json::number) writes instead.
    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()>;

    /// A group's learning rate (`None` if there is no such group).
    fn lr(&self, group: usize) -> Option<f64>;

    /// Sets a group's learning rate, as schedulers do (not validated, as in torch).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
}

/// What [`Optimizer::step_if_finite`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Every gradient was finite and the step was taken.
    Stepped,
    /// Parameter `param` had a NaN or infinite gradient: nothing changed.
    Skipped {
        /// The first such parameter, in state_dict numbering.
        param: usize,
    },
}

/// The state an algorithm keeps for one parameter, and its state_dict form.
pub trait ParamState: Clone + Debug + Send + Sync + 'static {
    /// The state under torch's key names. Empty means "no state" (omitted from the state_dict).
    fn to_entries(&self) -> ParamStateDict;
    /// Reads saved state, checking it against the parameter.
    fn from_entries(entries: StateEntries<'_>) -> Result<Self>;
}

/// A param group's hyperparameters: torch's argument names and defaults (via
/// serde), torch's checks, and the learning rate that schedulers move.
pub trait Hyperparameters:
    Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// torch's class name.
    const NAME: &'static str;
    /// The implementation flags torch keeps in this optimizer's groups.
    const TORCH_FLAGS: &'static [&'static str];
    /// Hyperparameters that torch's `__setstate__` fills in when an older
    /// checkpoint lacks them; any other missing one fails `load_state_dict`.
    const OPTIONAL_KEYS: &'static [&'static str];

    /// torch's constructor checks, with torch's messages.
    fn validate(&self) -> Result<()>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
}

/// An optimization algorithm whose update is per parameter: its value is a
/// param group's hyperparameters.
pub trait Algorithm: Hyperparameters {
    /// Whether the constructor creates every parameter's state at once, as
    /// torch's Adagrad does (groups added later still get it lazily, as in torch).
    const EAGER_STATE: bool = false;
    /// Per-parameter state.
    type State: ParamState;

    /// The state of a parameter on its first step.
    fn init_state(&self, param: &ParamMeta<'_>) -> Self::State;
    /// One update of one parameter of `shape` with a dense gradient. The
    /// state's tensors have the parameter's dtype `T` and shape.
    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut Self::State,
    ) -> Result<()>;

    /// Whether a parameter of `shape` can be optimized at all (Muon takes
    /// only matrices). Checked when a group is added, so a bad parameter
    /// never reaches a step. By default every shape is.
    fn check_param(&self, shape: &[usize], param: usize) -> Result<()> {
        let _ = (shape, param);
        Ok(())
    }

    /// Whether a gradient of this kind (sparse or dense) is usable for
    /// parameter number `param` with these hyperparameters. Checked for every
    /// parameter before a step changes anything. By default only dense
    /// gradients are, as in most of torch's optimizers.
    fn check_grad(&self, sparse: bool, param: usize) -> Result<()> {
        if sparse {
            Err(Error::SparseGradUnsupported {
                optimizer: Self::NAME,
                param,
            })
        } else {
            Ok(())
        }
    }

    /// One update from a sparse gradient, already coalesced: `rows` are
    /// distinct and increasing, `values` holds their rows one after another
    /// (each `numel / shape[0]` long). Only those rows may change. Called only
    /// when [`Algorithm::check_grad`] accepts sparse gradients.
    fn update_sparse<T: Element>(
        &self,
        param: &mut [T],
        shape: &[usize],
        rows: &[usize],
        values: &[T],
        state: &mut Self::State,
    ) -> Result<()> {
        let _ = (param, shape, rows, values, state);
        Err(Error::SparseGradUnsupported {
            optimizer: Self::NAME,
            param: 0,
        })
    }
}

/// An optimizer running algorithm `A` over param groups: `Optim<AdamConfig>`
/// is [`Adam`](crate::optim::Adam).
///
/// Parameters are ferroptim's [`Param`]s by default; `P` may be any
/// [`ParamSlot`], such as an adapter's handle on a framework's tensor.
#[derive(Clone, Debug)]
pub struct Optim<A: Algorithm, P: ParamSlot = Param> {
    defaults: A,
    param_groups: Vec<ParamGroup<A, P>>,
    /// Every parameter's key: adding a group checks for repeats in O(its size).
    keys: std::collections::HashSet<P::Key>,
}

impl<A: Algorithm, P: ParamSlot> Optim<A, P> {
    /// An optimizer over `params` (a list of [`Param`]s or of [`GroupSpec`]s)
    /// with `defaults` for every hyperparameter a group does not set.
    pub fn new(params: impl IntoParamGroups<P>, defaults: A) -> Result<Self> {
        defaults.validate()?;
        let groups = params.into_param_groups();
        if groups.is_empty() {
            return Err(Error::EmptyParamList);
        }
        let mut opt = Optim {
            defaults,
            param_groups: Vec::with_capacity(groups.len()),
            keys: std::collections::HashSet::new(),
        };
        for group in groups {
            opt.add_param_group(group)?;
        }
        if A::EAGER_STATE {
            for group in &mut opt.param_groups {
                for (p, slot) in group.params.iter().zip(group.state.iter_mut()) {
                    let shape = p.shape();
                    let meta = ParamMeta::new(&shape, p.dtype());
                    *slot = Some(group.options.init_state(&meta));
                }
            }
        }
        Ok(opt)
    }

    /// The defaults (torch's `optimizer.defaults`).
    pub fn defaults(&self) -> &A {
        &self.defaults
    }

    /// The param groups.
    pub fn param_groups(&self) -> &[ParamGroup<A, P>] {
        &self.param_groups
    }

    /// The param groups, to change hyperparameters between steps.
    pub fn param_groups_mut(&mut self) -> &mut [ParamGroup<A, P>] {
        &mut self.param_groups
    }

    /// The state of `param` (torch's `optimizer.state[param]`); `None` before its first step.
    pub fn state(&self, param: &P) -> Option<&A::State> {
        self.param_groups.iter().find_map(|g| {
            let i = g.params.iter().position(|p| p.same_as(param))?;
            g.state[i].as_ref()
        })
    }

    /// Checks every gradient before anything is updated.
    fn check_grads(&self) -> Result<()> {
        let mut index = 0;
        for group in &self.param_groups {
            for p in &group.params {
                if let Some(kind) = p.grad_kind(index)? {
                    group.options.check_grad(kind == GradKind::Sparse, index)?;
                }
                index += 1;
            }
        }
        Ok(())
    }

    /// Adds a param group; hyperparameters it leaves out come from the defaults.
    pub fn add_param_group(&mut self, group: GroupSpec<P>) -> Result<()> {
        check_no_duplicates(&group.params, &self.keys)?;
        let options = merge_options(&self.defaults, &group.options)?;
        let first = self.keys.len();
        for (i, p) in group.params.iter().enumerate() {
            options.check_param(&p.shape(), first + i)?;
        }
        self.keys.extend(group.params.iter().map(ParamSlot::key));
        let state = vec![None; group.params.len()];
        self.param_groups.push(ParamGroup {
            params: group.params,
            state,
            options,
            extra: Map::new(),
        });
        Ok(())
    }

    /// Every parameter, numbered as in the state_dict.
    pub fn params(&self) -> Vec<P> {
        self.param_groups
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }

    /// Each saved group's hyperparameters and extra keys, checked against
    /// this optimizer's groups (their number and sizes).
    fn read_param_groups(
        &self,
        saved: &[Map<String, Value>],
    ) -> Result<Vec<(A, Map<String, Value>)>> {
        let (expected, found) = (self.param_groups.len(), saved.len());
        if expected != found {
            return Err(Error::GroupCountMismatch { expected, found });
        }
        saved
            .iter()
            .zip(&self.param_groups)
            .enumerate()
            .map(|(g, (saved, group))| {
                let ids = saved_param_ids(saved, g)?;
                if ids.len() != group.params.len() {
                    return Err(Error::GroupSizeMismatch {
                        group: g,
                        expected: group.params.len(),
                        found: ids.len(),
                    });
                }
                options_from_saved::<A>(saved, g)
            })
            .collect()
    }

    fn commit_param_groups(&mut self, options: Vec<(A, Map<String, Value>)>) {
        for (group, (opts, extra)) in self.param_groups.iter_mut().zip(options) {
            group.options = opts;
            group.extra = extra;
        }
    }

    fn group(&self, group: usize) -> Result<&ParamGroup<A, P>> {
        let groups = self.param_groups.len();
        self.param_groups
            .get(group)
            .ok_or(Error::NoSuchGroup { group, groups })
    }
}

impl<A: Algorithm, P: ParamSlot> Optimizer for Optim<A, P> {
    fn name(&self) -> &'static str {
        A::NAME
    }

    fn zero_grad_with(&mut self, set_to_none: bool) {
        for p in self.param_groups.iter().flat_map(|g| &g.params) {
            if set_to_none {
                p.clear_grad();
            } else {
                p.zero_grad_in_place();
            }
        }
    }

    fn step(&mut self) -> Result<()> {
        self.check_grads()?;
        crate::parallel::with_pool(|exec| {
            let mut first = 0;
            for group in &mut self.param_groups {
                let options = &group.options;
                match &exec {
                    // Parameters are independent: spread them over the threads.
                    Exec::Install(pool) if group.params.len() > 1 => pool.install(|| {
                        use rayon::prelude::*;
                        let pairs = group.params.par_iter().zip(group.state.par_iter_mut());
                        pairs
                            .enumerate()
                            .try_for_each(|(i, (p, slot))| update_one(options, first + i, p, slot))
                    })?,
                    _ => {
                        let pairs = group.params.iter().zip(group.state.iter_mut());
                        for (i, (p, slot)) in pairs.enumerate() {
                            update_one(options, first + i, p, slot)?;
                        }
                    }
                }
                first += group.params.len();
            }
            Ok(())
        })
    }

    fn step_if_finite(&mut self) -> Result<StepOutcome> {
        let mut params = self.param_groups.iter().flat_map(|g| &g.params);
        if let Some(param) = params.position(|p| !p.grad_is_finite()) {
            return Ok(StepOutcome::Skipped { param });
        }
        self.step()?;
        Ok(StepOutcome::Stepped)
    }

    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        let loss = closure()?;
        self.step()?;
        Ok(loss)
    }

    fn state_dict(&self) -> StateDict {
        let states = self.param_groups.iter().flat_map(|g| &g.state);
        let state = states
            .enumerate()
            .filter_map(|(index, state)| {
                let entries = state.as_ref()?.to_entries();
                (!entries.is_empty()).then_some((index, entries))
            })
            .collect();
        StateDict {
            state,
            param_groups: self.param_groups_json(),
        }
    }

    fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        let options = self.read_param_groups(&sd.param_groups)?;
        // Saved index -> (group, position), pairing saved and current params in order, as torch does.
        let mut slot_of = std::collections::BTreeMap::new();
        for (g, saved) in sd.param_groups.iter().enumerate() {
            for (i, id) in saved_param_ids(saved, g)?.into_iter().enumerate() {
                if slot_of.insert(id, (g, i)).is_some() {
                    return Err(Error::state(
                        format!("param_groups[{g}].params"),
                        format!("index {id} appears twice"),
                    ));
                }
            }
        }
        let mut states: Vec<Vec<Option<A::State>>> = self
            .param_groups
            .iter()
            .map(|g| vec![None; g.params.len()])
            .collect();
        for (&id, entries) in &sd.state {
            let &(g, i) = slot_of.get(&id).ok_or_else(|| {
                Error::state(
                    format!("state[{id}]"),
                    "no param group lists this parameter index",
                )
            })?;
            let param = &self.param_groups[g].params[i];
            let shape = param.shape();
            let reader = StateEntries::new(id, &shape, param.dtype(), entries);
            states[g][i] = Some(A::State::from_entries(reader)?);
        }
        // Everything checked: commit.
        self.commit_param_groups(options);
        for (group, state) in self.param_groups.iter_mut().zip(states) {
            group.state = state;
        }
        Ok(())
    }

    fn param_groups_json(&self) -> Vec<Map<String, Value>> {
        let mut index = 0;
        self.param_groups
            .iter()
            .map(|group| {
                let ids = (index..index + group.params.len()).map(Value::from);
                index += group.params.len();
                let mut map = group.options_json();
                map.insert("params".into(), Value::Array(ids.collect()));
                map
            })
            .collect()
    }

    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()> {
        let options = self.read_param_groups(groups)?;
        self.commit_param_groups(options);
        Ok(())
    }

    fn num_param_groups(&self) -> usize {
        self.param_groups.len()
    }

    fn defaults_json(&self) -> Map<String, Value> {
        crate::group::options_map(&self.defaults)
    }

    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value> {
        self.group(group).ok()?.options_json().remove(key)
    }

    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        let current = self.group(group)?.options.clone();
        let updated = merge_options(&current, &Map::from_iter([(key.to_string(), value)]))?;
        self.param_groups[group].options = updated;
        Ok(())
    }

    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.group(group)?;
        check_extra_key::<A>(key, &value)?;
        self.param_groups[group]
            .extra
            .insert(key.to_string(), value);
        Ok(())
    }

    fn lr(&self, group: usize) -> Option<f64> {
        self.param_groups.get(group).map(|g| g.options.lr())
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let groups = self.param_groups.len();
        let g = self
            .param_groups
            .get_mut(group)
            .ok_or(Error::NoSuchGroup { group, groups })?;
        g.options.set_lr(lr);
        Ok(())
    }
}

/// One update of parameter `index` (state_dict numbering), creating its
/// state on its first step.
fn update_one<A: Algorithm, P: ParamSlot>(
    options: &A,
    index: usize,
    p: &P,
    slot: &mut Option<A::State>,
) -> Result<()> {
    p.update_in_place(index, &mut |shape, data| {
        let meta = ParamMeta::new(shape, data.dtype());
        let state = slot.get_or_insert_with(|| options.init_state(&meta));
        match data {
            SlotData::F32(v, GradRef::Dense(g)) => options.update(v, g, shape, state),
            SlotData::F64(v, GradRef::Dense(g)) => options.update(v, g, shape, state),
            SlotData::F32(v, GradRef::Sparse(g)) => {
                let (rows, values) = g.coalesced::<f32>()?;
                options.update_sparse(v, shape, &rows, &values, state)
            }
            SlotData::F64(v, GradRef::Sparse(g)) => {
                let (rows, values) = g.coalesced::<f64>()?;
                options.update_sparse(v, shape, &rows, &values, state)
            }
        }
    })
}

/// Refuses, as a group's extra key, a name that is one of `A`'s
/// hyperparameters (or `params`).
pub(crate) fn check_extra_key<A: Hyperparameters>(key: &str, value: &Value) -> Result<()> {
    if value.is_null() {
        return Err(Error::InvalidConfig {
            optimizer: A::NAME,
            reason: format!(
                "`{key}` is null: serde_json turns NaN and infinities into null, which would \
                 not read back as a number; pass them as ferroptim::json::number(x)"
            ),
        });
    }
    let reserved = key == "params"
        || A::TORCH_FLAGS.contains(&key)
        || crate::group::options_map(&A::default()).contains_key(key);
    if reserved {
        return Err(Error::InvalidConfig {
            optimizer: A::NAME,
            reason: format!(
                "`{key}` is a hyperparameter of the group, set it with set_hyperparameter"
            ),
        });
    }
    Ok(())
}

pub(crate) fn saved_param_ids(saved: &Map<String, Value>, group: usize) -> Result<Vec<usize>> {
    let path = || format!("param_groups[{group}].params");
    let list = saved
        .get("params")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::state(
                path(),
                "missing or not a list; expected the indices of the group's parameters",
            )
        })?;
    list.iter()
        .map(|v| {
            v.as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| {
                    Error::state(
                        path(),
                        format!("{v} is not a parameter index (an integer >= 0)"),
                    )
                })
        })
        .collect()
}
