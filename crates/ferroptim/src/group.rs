//! Param groups: which parameters an optimizer updates, and with which hyperparameters.
//!
//! As in torch, each group carries its own copy of the hyperparameters; keys a
//! group does not set fall back to the optimizer's `defaults`. [`GroupSpec`]
//! is what a user hands in (torch's `{"params": [...], "lr": 0.1}`);
//! [`ParamGroup`] is the live group inside an optimizer, whose `options` can
//! be read and changed between steps, as schedulers do.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::optimizer::{Algorithm, Hyperparameters};
use crate::param::Param;
use crate::slot::ParamSlot;

/// torch's implementation switches, present in its state_dict groups but
/// meaningless here (ferroptim has one path, and it is the fast one). They are
/// written with torch's defaults, so torch can load our state_dicts, and
/// ignored when read.
pub(crate) const TORCH_IMPL_FLAGS: [&str; 4] = ["foreach", "fused", "capturable", "differentiable"];

/// A parameter group as handed to a constructor or to `add_param_group`:
/// parameters plus the hyperparameters that differ from the defaults.
///
/// ```
/// use ferroptim::{optim::{Sgd, SgdConfig}, GroupSpec, Optimizer, Param};
/// let (w, b) = (Param::zeros::<f32>(&[3, 3]), Param::zeros::<f32>(&[3]));
/// let opt = Sgd::new(
///     [GroupSpec::new([w]), GroupSpec::new([b]).set("lr", 0.5).set("momentum", 0.9)],
///     SgdConfig { lr: 0.1, ..Default::default() },
/// )?;
/// assert_eq!(opt.param_groups()[0].options.lr, 0.1);
/// assert_eq!(opt.param_groups()[1].options.momentum, 0.9);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GroupSpec<P: ParamSlot = Param> {
    pub(crate) params: Vec<P>,
    pub(crate) options: Map<String, Value>,
}

impl<P: ParamSlot> Default for GroupSpec<P> {
    fn default() -> Self {
        GroupSpec {
            params: Vec::new(),
            options: Map::new(),
        }
    }
}

impl<P: ParamSlot> GroupSpec<P> {
    /// A group of `params` using the optimizer's defaults.
    pub fn new(params: impl IntoIterator<Item = P>) -> Self {
        GroupSpec {
            params: params.into_iter().collect(),
            options: Map::new(),
        }
    }

    /// Overrides one hyperparameter, by torch's name (`"lr"`, `"betas"`, ...).
    /// Any serialisable value will do (a float, a pair, a JSON value); a NaN
    /// or infinite float is kept as such (see [`json`](crate::json)).
    #[must_use]
    pub fn set(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let value = crate::json::to_value(&value).unwrap_or(Value::Null);
        self.options.insert(key.to_string(), value);
        self
    }

    /// The parameters.
    pub fn params(&self) -> &[P] {
        &self.params
    }
}

/// Anything that can be turned into param groups: a list of parameters (one
/// group) or a list of [`GroupSpec`]s.
pub trait IntoParamGroups<P: ParamSlot = Param> {
    /// The groups; an empty list means no parameters at all.
    fn into_param_groups(self) -> Vec<GroupSpec<P>>;
}

fn single_group<P: ParamSlot>(params: Vec<P>) -> Vec<GroupSpec<P>> {
    if params.is_empty() {
        Vec::new()
    } else {
        vec![GroupSpec::new(params)]
    }
}

impl<P: ParamSlot> IntoParamGroups<P> for Vec<P> {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        single_group(self)
    }
}

impl<P: ParamSlot, const N: usize> IntoParamGroups<P> for [P; N] {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        single_group(self.into())
    }
}

impl<P: ParamSlot> IntoParamGroups<P> for &[P] {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        single_group(self.to_vec())
    }
}

impl<P: ParamSlot> IntoParamGroups<P> for Vec<GroupSpec<P>> {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        self
    }
}

impl<P: ParamSlot, const N: usize> IntoParamGroups<P> for [GroupSpec<P>; N] {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        self.into()
    }
}

impl<P: ParamSlot> IntoParamGroups<P> for GroupSpec<P> {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        vec![self]
    }
}

/// Checks that `group` repeats no parameter and shares none with `others`
/// (the keys of the parameters already in other groups; torch: "some
/// parameters appear in more than one parameter group"). Linear in the
/// group's size, however many groups there are.
pub(crate) fn check_no_duplicates<P: ParamSlot>(
    group: &[P],
    others: &HashSet<P::Key>,
) -> Result<()> {
    let mut first_at = std::collections::HashMap::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        if let Some(&first) = first_at.get(&p.key()) {
            return Err(Error::DuplicateParamInGroup { first, second: i });
        }
        first_at.insert(p.key(), i);
    }
    if first_at.keys().any(|k| others.contains(k)) {
        return Err(Error::DuplicateParamAcrossGroups);
    }
    Ok(())
}

/// A live parameter group of an optimizer running algorithm `A`.
#[derive(Clone, Debug)]
pub struct ParamGroup<A: Algorithm, P: ParamSlot = Param> {
    pub(crate) params: Vec<P>,
    pub(crate) state: Vec<Option<A::State>>,
    /// This group's hyperparameters; change them between steps as a scheduler would.
    pub options: A,
    /// Keys torch allows in a group beyond the hyperparameters (e.g. a
    /// scheduler's `initial_lr`); kept through `state_dict` round trips.
    pub extra: Map<String, Value>,
}

impl<A: Algorithm, P: ParamSlot> ParamGroup<A, P> {
    /// The group's parameters, in order.
    pub fn params(&self) -> &[P] {
        &self.params
    }

    /// The state of the group's `i`-th parameter (`None` before its first step).
    pub fn state(&self, i: usize) -> Option<&A::State> {
        self.state.get(i)?.as_ref()
    }

    /// The hyperparameters as torch writes them in a state_dict group
    /// (without `params`).
    pub(crate) fn options_json(&self) -> Map<String, Value> {
        let mut map = options_map(&self.options);
        for flag in A::TORCH_FLAGS {
            let default =
                matches!(*flag, "capturable" | "differentiable").then_some(Value::Bool(false));
            map.insert(flag.to_string(), default.unwrap_or(Value::Null));
        }
        map.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        map
    }
}

/// `options` as a JSON object. A config is a plain struct of numbers and
/// booleans, which always serialises to an object.
pub(crate) fn options_map<A: Hyperparameters>(options: &A) -> Map<String, Value> {
    match crate::json::to_value(options) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn config_error<A: Hyperparameters>(e: serde_json::Error) -> Error {
    Error::InvalidConfig {
        optimizer: A::NAME,
        reason: e.to_string(),
    }
}

/// `defaults` with `overrides` applied, checked: unknown keys are an error
/// (a typo must not pass silently), and the result is validated.
pub(crate) fn merge_options<A: Hyperparameters>(
    defaults: &A,
    overrides: &Map<String, Value>,
) -> Result<A> {
    let mut map = options_map(defaults);
    for (key, value) in overrides {
        if !map.contains_key(key) {
            return Err(Error::UnknownHyperparameter {
                optimizer: A::NAME,
                key: key.clone(),
                expected: map.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if value.is_null() && map.get(key).and_then(crate::json::as_f64).is_some() {
            return Err(Error::InvalidConfig {
                optimizer: A::NAME,
                reason: format!(
                    "`{key}` is null, expected a number; serde_json turns NaN and infinities \
                     into null, pass them as ferroptim::json::number(x)"
                ),
            });
        }
        map.insert(key.clone(), value.clone());
    }
    let options: A = crate::json::from_value(Value::Object(map)).map_err(config_error::<A>)?;
    options.validate()?;
    Ok(options)
}

/// Reads the hyperparameters of saved group `group` (torch's layout): torch's
/// implementation flags are dropped, keys the algorithm does not have are kept
/// as `extra`, and a missing hyperparameter is an error unless torch itself
/// fills it in for old checkpoints (`A::OPTIONAL_KEYS`).
pub(crate) fn options_from_saved<A: Hyperparameters>(
    saved: &Map<String, Value>,
    group: usize,
) -> Result<(A, Map<String, Value>)> {
    let mut map = options_map(&A::default());
    let mut extra = Map::new();
    let mut seen = 0;
    for (key, value) in saved {
        if key == "params" || TORCH_IMPL_FLAGS.contains(&key.as_str()) {
            continue;
        }
        if map.contains_key(key) {
            map.insert(key.clone(), value.clone());
            seen += 1;
        } else {
            extra.insert(key.clone(), value.clone());
        }
    }
    if seen < map.len() {
        if let Some(key) = map
            .keys()
            .find(|k| !saved.contains_key(*k) && !A::OPTIONAL_KEYS.contains(&k.as_str()))
        {
            return Err(Error::MissingGroupKey {
                optimizer: A::NAME,
                group,
                key: key.clone(),
            });
        }
    }
    let options: A = crate::json::from_value(Value::Object(map))
        .map_err(|e| Error::state(format!("param_groups[{group}]"), e.to_string()))?;
    // Everything the constructor checks, except `lr`: torch lets schedulers
    // and users set a group's lr to anything between steps (negative, NaN),
    // and what was saved must load.
    let mut checked = options.clone();
    checked.set_lr(A::default().lr());
    checked.validate()?;
    Ok((options, extra))
}
