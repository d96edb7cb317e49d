//! Param groups: which parameters an optimizer updates, and with which hyperparameters.
//!
//! As in torch, each group carries its own copy of the hyperparameters; keys a
//! group does not set fall back to the optimizer's `defaults`. [`GroupSpec`]
//! is what a user hands in (torch's `{"params": [...], "lr": 0.1}`, or
//! `named_parameters()`); [`ParamGroup`] is the live group inside an
//! optimizer, whose `options` can be read and changed between steps, as
//! schedulers do. [`Groups`] is every optimizer's store of them, written
//! once: adding groups, their part of the state_dict, and the
//! hyperparameter access of [`GroupStore`].

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::algorithm::Hyperparameters;
use crate::error::{Error, Result};
use crate::param::Param;
use crate::slot::ParamSlot;
use crate::tensor::Dtype;

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
    pub(crate) names: Option<Vec<String>>,
    pub(crate) options: Map<String, Value>,
}

impl<P: ParamSlot> Default for GroupSpec<P> {
    fn default() -> Self {
        GroupSpec {
            params: Vec::new(),
            names: None,
            options: Map::new(),
        }
    }
}

impl<P: ParamSlot> GroupSpec<P> {
    /// A group of `params` using the optimizer's defaults.
    pub fn new(params: impl IntoIterator<Item = P>) -> Self {
        GroupSpec {
            params: params.into_iter().collect(),
            names: None,
            options: Map::new(),
        }
    }

    /// A group of named parameters (torch's `named_parameters()`, 2.6+):
    /// the state_dict then lists each group's `param_names`, and
    /// `load_state_dict` refuses a checkpoint whose names differ.
    ///
    /// ```
    /// use ferroptim::{optim::{Sgd, SgdConfig}, GroupSpec, Optimizer, Param};
    /// let (w, b) = (Param::zeros::<f32>(&[2, 2]), Param::zeros::<f32>(&[2]));
    /// let opt = Sgd::new(GroupSpec::named([("fc.weight", w), ("fc.bias", b)]), SgdConfig::default())?;
    /// let names = &opt.state_dict().param_groups[0]["param_names"];
    /// assert_eq!(names, &serde_json::json!(["fc.weight", "fc.bias"]));
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    pub fn named<S: Into<String>>(params: impl IntoIterator<Item = (S, P)>) -> Self {
        let (names, params): (Vec<String>, Vec<P>) =
            params.into_iter().map(|(n, p)| (n.into(), p)).unzip();
        GroupSpec {
            params,
            names: Some(names),
            options: Map::new(),
        }
    }

    /// The parameters' names, for a group made by [`GroupSpec::named`].
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
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

/// Named parameters, as torch's `model.named_parameters()`: one group.
impl<S: Into<String>, P: ParamSlot> IntoParamGroups<P> for Vec<(S, P)> {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        if self.is_empty() {
            Vec::new()
        } else {
            vec![GroupSpec::named(self)]
        }
    }
}

impl<S: Into<String>, P: ParamSlot, const N: usize> IntoParamGroups<P> for [(S, P); N] {
    fn into_param_groups(self) -> Vec<GroupSpec<P>> {
        Vec::from(self).into_param_groups()
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
    let mut first_at = HashMap::with_capacity(group.len());
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

/// `options` as a JSON object. A config is a plain struct of numbers and
/// booleans, which always serialises to an object.
pub(crate) fn options_map<A: Hyperparameters>(options: &A) -> Map<String, Value> {
    match crate::json::to_value(options) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Whether `key` is one of `A`'s hyperparameters: in `map` (a config as
/// JSON), or one a group holds only once set ([`Hyperparameters::KEYS_WHEN_SET`]).
fn is_hyperparameter<A: Hyperparameters>(map: &Map<String, Value>, key: &str) -> bool {
    map.contains_key(key) || A::KEYS_WHEN_SET.contains(&key)
}

/// torch's arguments `given` (a JSON object of kwargs, or a group's
/// overrides) without torch's implementation flags, checked first.
///
/// A flag this optimizer has in torch is accepted at a value ferroptim
/// honours: `foreach` at any (ferroptim has one implementation, torch's
/// single-tensor arithmetic, run fused), `fused` at `None`/`False`, and
/// `capturable`/`differentiable` at `False` (CUDA graphs and autograd
/// through the step have no meaning here). Any other value, or a flag
/// torch's class does not take, is a typed error saying so. A list shorter
/// or longer than its default (`betas`, `etas`) is an error that says how
/// many elements it must have, before serde's message would.
pub(crate) fn strip_torch_flags<A: Hyperparameters>(
    given: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let invalid = |reason: String| Error::InvalidConfig {
        optimizer: A::NAME,
        reason,
    };
    let defaults = options_map(&A::default());
    let on = |key: &str| given.get(key) == Some(&Value::Bool(true));
    if on("fused") && on("foreach") {
        return Err(invalid(
            "`fused` and `foreach` cannot be `True` together.".into(),
        ));
    }
    let mut out = Map::new();
    for (key, value) in given {
        // A reference that keeps `foreach` as a group setting of its own
        // (schedulefree) has it as a hyperparameter, not a flag.
        if TORCH_IMPL_FLAGS.contains(&key.as_str()) && !defaults.contains_key(key) {
            if !A::TORCH_FLAGS.contains(&key.as_str()) {
                return Err(invalid(format!(
                    "`{key}`: torch.optim.{} has no such argument (its implementation flags: {})",
                    A::NAME,
                    if A::TORCH_FLAGS.is_empty() {
                        "none".to_string()
                    } else {
                        A::TORCH_FLAGS.join(", ")
                    }
                )));
            }
            let honoured = match (key.as_str(), value) {
                (_, Value::Null) if matches!(key.as_str(), "foreach" | "fused") => true,
                ("foreach", Value::Bool(_)) => true,
                (_, Value::Bool(b)) => !b,
                _ => {
                    return Err(invalid(format!(
                        "`{key}` is {value}, expected true, false or null"
                    )))
                }
            };
            if !honoured {
                let why = match key.as_str() {
                    "capturable" => "capturable is for CUDA graphs; ferroptim steps on the CPU, pass capturable=False",
                    _ => "ferroptim's step is not differentiable (no autograd through the update), pass differentiable=False",
                };
                return Err(invalid(format!("`{key}={value}`: {why}")));
            }
            continue;
        }
        if let (Some(Value::Array(default)), Value::Array(found)) = (defaults.get(key), value) {
            if default.len() != found.len() {
                return Err(invalid(format!(
                    "`{key}` must have {} elements, found {}",
                    default.len(),
                    found.len()
                )));
            }
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
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
    for (key, value) in &strip_torch_flags::<A>(overrides)? {
        if !is_hyperparameter::<A>(&map, key) {
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
    let mut options: A = crate::json::from_value(Value::Object(map)).map_err(config_error::<A>)?;
    options.inherit(defaults);
    options.validate_group()?;
    options.resolve();
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
        let flag = TORCH_IMPL_FLAGS.contains(&key.as_str()) && !map.contains_key(key);
        if key == "params" || key == "param_names" || flag {
            continue;
        }
        if map.contains_key(key) {
            map.insert(key.clone(), value.clone());
            seen += 1;
        } else if A::KEYS_WHEN_SET.contains(&key.as_str()) {
            map.insert(key.clone(), value.clone());
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
    let mut options: A = crate::json::from_value(Value::Object(map))
        .map_err(|e| Error::state(format!("param_groups[{group}]"), e.to_string()))?;
    options.resolve();
    // Everything the constructor checks, except `lr`: torch lets schedulers
    // and users set a group's lr to anything between steps (negative, NaN),
    // and what was saved must load.
    let mut checked = options.clone();
    checked.set_lr(A::default().lr());
    checked.validate()?;
    Ok((options, extra))
}

/// A live parameter group of an optimizer with hyperparameters `H`.
#[derive(Clone, Debug)]
pub struct ParamGroup<H: Hyperparameters, P: ParamSlot = Param> {
    pub(crate) params: Vec<P>,
    pub(crate) names: Option<Vec<String>>,
    /// This group's hyperparameters; change them between steps as a scheduler would.
    pub options: H,
    /// Keys torch allows in a group beyond the hyperparameters (e.g. a
    /// scheduler's `initial_lr`); kept through `state_dict` round trips.
    pub extra: Map<String, Value>,
}

impl<H: Hyperparameters, P: ParamSlot> ParamGroup<H, P> {
    /// The group's parameters, in order.
    pub fn params(&self) -> &[P] {
        &self.params
    }

    /// The parameters' names (torch's `param_names`), if the group was built from named parameters.
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// The hyperparameters as torch writes them in a state_dict group
    /// (without `params`).
    fn options_json(&self) -> Map<String, Value> {
        let mut map = options_map(&self.options);
        for flag in H::TORCH_FLAGS {
            let default =
                matches!(*flag, "capturable" | "differentiable").then_some(Value::Bool(false));
            map.insert(flag.to_string(), default.unwrap_or(Value::Null));
        }
        map.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        map
    }
}

/// A saved group, read and checked, ready to replace a live group's settings.
pub(crate) struct SavedGroup<H> {
    /// The saved hyperparameters.
    pub options: H,
    extra: Map<String, Value>,
    names: Option<Vec<String>>,
    /// The saved parameter indices, in order.
    pub ids: Vec<usize>,
}

impl<H> SavedGroup<H> {
    /// How the saved group writes its 16-bit parameters back.
    pub fn precision(&self) -> Precision {
        Precision::of(&self.extra)
    }
}

/// The param groups of an optimizer, with its defaults: what every
/// optimizer keeps whatever its update ([`Optim`](crate::Optim) adds a
/// state per parameter, [`Lbfgs`](crate::optim::Lbfgs) one for all).
#[derive(Clone, Debug)]
pub struct Groups<H: Hyperparameters, P: ParamSlot = Param> {
    defaults: H,
    groups: Vec<ParamGroup<H, P>>,
    /// Every parameter's key: adding a group checks for repeats in O(its size).
    keys: HashSet<P::Key>,
}

/// A check of each new parameter (its group's options, the parameter, its
/// state_dict index, how its group writes it back), as Muon refuses vectors.
pub(crate) type ParamCheck<'c, H, P> = &'c dyn Fn(&H, &P, usize, Precision) -> Result<()>;

impl<H: Hyperparameters, P: ParamSlot> Groups<H, P> {
    /// Groups from `params`, hyperparameters a group leaves out taken from
    /// `defaults`; at least one group is required (it may be empty, as in torch).
    pub(crate) fn new(
        params: impl IntoParamGroups<P>,
        mut defaults: H,
        check: ParamCheck<'_, H, P>,
    ) -> Result<Self> {
        defaults.validate()?;
        defaults.resolve();
        let specs = params.into_param_groups();
        if specs.is_empty() {
            return Err(Error::EmptyParamList);
        }
        let mut groups = Groups {
            defaults,
            groups: Vec::with_capacity(specs.len()),
            keys: HashSet::new(),
        };
        for spec in specs {
            groups.add(spec, check)?;
        }
        Ok(groups)
    }

    /// Adds a group, checked first: no parameter twice, names on all groups
    /// or none, known and valid hyperparameters, and `check` on each parameter.
    pub(crate) fn add(&mut self, spec: GroupSpec<P>, check: ParamCheck<'_, H, P>) -> Result<()> {
        check_no_duplicates(&spec.params, &self.keys)?;
        if let Some(first) = self.groups.first() {
            let with = |named: bool| if named { "with names" } else { "without names" };
            if first.names.is_some() != spec.names.is_some() {
                return Err(Error::MixedParamNames {
                    group: self.groups.len(),
                    expected: with(first.names.is_some()),
                    found: with(spec.names.is_some()),
                });
            }
        }
        let mut overrides = spec.options;
        let invalid = |reason| Error::InvalidConfig {
            optimizer: H::NAME,
            reason,
        };
        let precision = Precision::read(&mut overrides, true, &invalid)?;
        let options = merge_options(&self.defaults, &overrides)?;
        let first = self.keys.len();
        for (i, p) in spec.params.iter().enumerate() {
            precision.check_dtype::<H>(p.dtype(), first + i)?;
            check(&options, p, first + i, precision)?;
        }
        let mut extra = Map::new();
        if let Some(key) = precision.key() {
            extra.insert(key.into(), Value::Bool(true));
        }
        self.keys.extend(spec.params.iter().map(ParamSlot::key));
        self.groups.push(ParamGroup {
            params: spec.params,
            names: spec.names,
            options,
            extra,
        });
        Ok(())
    }

    /// The defaults (torch's `optimizer.defaults`).
    pub fn defaults(&self) -> &H {
        &self.defaults
    }

    /// The groups.
    pub fn as_slice(&self) -> &[ParamGroup<H, P>] {
        &self.groups
    }

    /// The groups, to change hyperparameters between steps.
    pub fn as_mut_slice(&mut self) -> &mut [ParamGroup<H, P>] {
        &mut self.groups
    }

    /// Every parameter, in state_dict order.
    pub fn params(&self) -> impl Iterator<Item = &P> {
        self.groups.iter().flat_map(|g| &g.params)
    }

    /// The number of parameters.
    pub fn num_params(&self) -> usize {
        self.keys.len()
    }

    /// The group, or [`Error::NoSuchGroup`].
    pub(crate) fn group(&self, group: usize) -> Result<&ParamGroup<H, P>> {
        let groups = self.groups.len();
        self.groups
            .get(group)
            .ok_or(Error::NoSuchGroup { group, groups })
    }

    fn group_mut(&mut self, group: usize) -> Result<&mut ParamGroup<H, P>> {
        let groups = self.groups.len();
        self.groups
            .get_mut(group)
            .ok_or(Error::NoSuchGroup { group, groups })
    }

    /// Reads saved groups (torch's `param_groups`), checked against these:
    /// their number and sizes, the parameters' names where both sides
    /// have them, and each group's hyperparameters.
    ///
    /// With `by_name`, names decide where both sides have them: a saved
    /// group that lists the same names in another order (a framework that
    /// hands its parameters over in hash order) is matched name by name,
    /// and only a name that is not there is an error. Without it the names
    /// must agree position by position (LBFGS's state is one flat vector).
    pub(crate) fn read_saved(
        &self,
        saved: &[Map<String, Value>],
        by_name: bool,
    ) -> Result<Vec<SavedGroup<H>>> {
        let (expected, found) = (self.groups.len(), saved.len());
        if expected != found {
            return Err(Error::GroupCountMismatch { expected, found });
        }
        saved
            .iter()
            .zip(&self.groups)
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
                let mut ids = ids;
                let mut names = saved_param_names(saved, g, ids.len())?;
                if let (Some(ours), Some(theirs)) = (&group.names, &names) {
                    if by_name && ours != theirs {
                        ids = match_by_name(g, ours, theirs, &ids)?;
                        names = Some(ours.clone());
                    } else if let Some(index) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                        return Err(Error::ParamNameMismatch {
                            group: g,
                            index,
                            expected: ours[index].clone(),
                            found: theirs[index].clone(),
                        });
                    }
                }
                let (mut options, extra) = options_from_saved::<H>(saved, g)?;
                options.keep_unsaved(&group.options);
                let at = |reason| Error::state(format!("param_groups[{g}]"), reason);
                let precision = Precision::read(&mut extra.clone(), false, &at)?;
                for (p, &id) in group.params.iter().zip(&ids) {
                    precision.check_dtype::<H>(p.dtype(), id)?;
                }
                Ok(SavedGroup {
                    options,
                    extra,
                    names,
                    ids,
                })
            })
            .collect()
    }

    /// Each saved parameter index's (group, position) in these groups,
    /// pairing saved and current parameters in order, as torch does.
    pub(crate) fn positions(saved: &[SavedGroup<H>]) -> Result<BTreeMap<usize, (usize, usize)>> {
        let mut at = BTreeMap::new();
        for (g, group) in saved.iter().enumerate() {
            for (i, &id) in group.ids.iter().enumerate() {
                if at.insert(id, (g, i)).is_some() {
                    return Err(Error::state(
                        format!("param_groups[{g}].params"),
                        format!("index {id} appears twice"),
                    ));
                }
            }
        }
        Ok(at)
    }

    /// Replaces each group's settings with the saved ones (read by
    /// [`Groups::read_saved`], so this cannot fail). Saved names replace
    /// ours, as in torch; without saved names ours stay.
    pub(crate) fn commit(&mut self, saved: Vec<SavedGroup<H>>) {
        for (group, saved) in self.groups.iter_mut().zip(saved) {
            group.options = saved.options;
            group.extra = saved.extra;
            if saved.names.is_some() {
                group.names = saved.names;
            }
        }
    }
}

/// What every optimizer offers about its groups, whatever its
/// hyperparameters' type: the object-safe face of [`Groups`], which the
/// [`Optimizer`](crate::Optimizer) trait's group methods call.
pub trait GroupStore: Send + Sync {
    /// The number of param groups.
    fn len(&self) -> usize;
    /// Whether there are no groups (never, for a built optimizer).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every group's hyperparameters, extra keys, `params` (state_dict
    /// indices) and `param_names` if named: the state_dict's `param_groups`.
    fn param_groups_json(&self) -> Vec<Map<String, Value>>;
    /// Restores groups saved by [`GroupStore::param_groups_json`]; checked
    /// first, on error nothing changes.
    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()>;
    /// The defaults as JSON.
    fn defaults_json(&self) -> Map<String, Value>;
    /// A group's hyperparameter or extra key by torch's name.
    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value>;
    /// Sets a group's hyperparameter; the result is validated.
    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()>;
    /// Sets a group key that is not a hyperparameter.
    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()>;
    /// A group's learning rate.
    fn lr(&self, group: usize) -> Option<f64>;
    /// Sets a group's learning rate (not validated, as in torch).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// Drops every gradient, or zeroes it in place.
    fn zero_grad_with(&mut self, set_to_none: bool);
    /// A handle that does [`GroupStore::zero_grad_with`] on these
    /// parameters later, without borrowing the optimizer: what a closure
    /// called during a step uses ([`LossContext::zero_grad`](crate::LossContext::zero_grad)).
    fn grad_zeroer(&self) -> Box<dyn Fn(bool) + Send + Sync>;
}

impl<H: Hyperparameters, P: ParamSlot> GroupStore for Groups<H, P> {
    fn len(&self) -> usize {
        self.groups.len()
    }

    fn param_groups_json(&self) -> Vec<Map<String, Value>> {
        let mut index = 0;
        self.groups
            .iter()
            .map(|group| {
                let ids = (index..index + group.params.len()).map(Value::from);
                index += group.params.len();
                let mut map = group.options_json();
                map.insert("params".into(), Value::Array(ids.collect()));
                if let Some(names) = &group.names {
                    let names = names.iter().cloned().map(Value::String).collect();
                    map.insert("param_names".into(), Value::Array(names));
                }
                map
            })
            .collect()
    }

    fn load_param_groups(&mut self, groups: &[Map<String, Value>]) -> Result<()> {
        let saved = self.read_saved(groups, true)?;
        self.commit(saved);
        Ok(())
    }

    fn defaults_json(&self) -> Map<String, Value> {
        options_map(&self.defaults)
    }

    fn hyperparameter(&self, group: usize, key: &str) -> Option<Value> {
        self.group(group).ok()?.options_json().remove(key)
    }

    fn set_hyperparameter(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        let current = &self.group(group)?.options;
        let updated = merge_options(current, &Map::from_iter([(key.to_string(), value)]))?;
        self.groups[group].options = updated;
        Ok(())
    }

    fn set_group_extra(&mut self, group: usize, key: &str, value: Value) -> Result<()> {
        self.group(group)?;
        check_extra_key::<H>(key, &value)?;
        self.groups[group].extra.insert(key.to_string(), value);
        Ok(())
    }

    fn lr(&self, group: usize) -> Option<f64> {
        self.groups.get(group).map(|g| g.options.lr())
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.group_mut(group)?.options.set_lr(lr);
        Ok(())
    }

    fn zero_grad_with(&mut self, set_to_none: bool) {
        zero_grads(self.params(), set_to_none);
    }

    fn grad_zeroer(&self) -> Box<dyn Fn(bool) + Send + Sync> {
        let params: Vec<P> = self.params().cloned().collect();
        Box::new(move |set_to_none| zero_grads(params.iter(), set_to_none))
    }
}

fn zero_grads<'a, P: ParamSlot>(params: impl Iterator<Item = &'a P>, set_to_none: bool) {
    for p in params {
        if set_to_none {
            p.clear_grad();
        } else {
            p.zero_grad_in_place();
        }
    }
}

/// How a group writes its 16-bit parameters back: torch's round to nearest
/// (`Plain`), or one of ferroptim's opt-in modes (see
/// [`Optim`](crate::Optim)), chosen by a group key and saved with the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Precision {
    /// torch's: every operation rounded to the parameter's dtype.
    Plain,
    /// `master_weights`: a float32 copy in the state, rounded to nearest.
    MasterWeights,
    /// `stochastic_rounding`: the float32 update of the bfloat16 value,
    /// rounded up or down with probability by distance.
    StochasticRounding,
    /// `kahan_summation`: the float32 update added to the 16-bit value
    /// through a compensation buffer in the parameter's dtype.
    KahanSummation,
}

impl Precision {
    /// The group keys, each a bool, at most one true.
    pub(crate) const KEYS: [(&'static str, Precision); 3] = [
        ("master_weights", Precision::MasterWeights),
        ("stochastic_rounding", Precision::StochasticRounding),
        ("kahan_summation", Precision::KahanSummation),
    ];

    /// A group's mode, from its extra keys.
    pub(crate) fn of(extra: &Map<String, Value>) -> Precision {
        Self::KEYS
            .iter()
            .find(|(key, _)| extra.get(*key) == Some(&Value::Bool(true)))
            .map_or(Precision::Plain, |&(_, mode)| mode)
    }

    /// The dtype a parameter's state is kept in: float32 in either mode
    /// (its update runs in float32), the parameter's otherwise.
    pub(crate) fn state_dtype(self, param: Dtype) -> Dtype {
        match self {
            Precision::Plain => param,
            Precision::MasterWeights
            | Precision::StochasticRounding
            | Precision::KahanSummation => Dtype::F32,
        }
    }

    fn key(self) -> Option<&'static str> {
        Self::KEYS.iter().find(|(_, m)| *m == self).map(|(k, _)| *k)
    }

    /// Reads the keys from `map` (taking them out with `take`): bools, at
    /// most one of them true. `why` names an error's place.
    fn read(
        map: &mut Map<String, Value>,
        take: bool,
        error: &dyn Fn(String) -> Error,
    ) -> Result<Precision> {
        let mut mode = Precision::Plain;
        for (key, this) in Self::KEYS {
            let value = if take {
                map.remove(key)
            } else {
                map.get(key).cloned()
            };
            match value {
                None | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) if mode == Precision::Plain => mode = this,
                Some(Value::Bool(true)) => {
                    return Err(error(format!(
                        "`{}` and `{key}` cannot both be true: pick one way of writing the \
                         parameter back",
                        mode.key().unwrap_or_default()
                    )))
                }
                Some(other) => {
                    return Err(error(format!("`{key}` is {other}, expected true or false")))
                }
            }
        }
        Ok(mode)
    }

    /// The mode is for 16-bit parameters (stochastic rounding for
    /// bfloat16): a float32 or float64 parameter is its own master copy.
    pub(crate) fn check_dtype<A: Hyperparameters>(self, dtype: Dtype, param: usize) -> Result<()> {
        let (fits, supported) = match self {
            Precision::Plain => return Ok(()),
            Precision::KahanSummation => (
                dtype.is_reduced(),
                "bfloat16 and float16 parameters (a float32 or float64 parameter needs no compensation)",
            ),
            Precision::MasterWeights => (
                dtype.is_reduced(),
                "bfloat16 and float16 parameters (a float32 or float64 parameter is its own master copy)",
            ),
            Precision::StochasticRounding => (
                dtype == Dtype::BF16,
                "bfloat16 parameters (for float16, use master_weights)",
            ),
        };
        if fits {
            return Ok(());
        }
        Err(Error::DtypeUnsupported {
            what: format!("{} for parameter {param}", self.key().unwrap_or_default()),
            dtype,
            refused_by: A::NAME,
            supported,
        })
    }
}

/// Refuses, as a group's extra key, a name that is one of `A`'s
/// hyperparameters (or `params`, `param_names`).
fn check_extra_key<A: Hyperparameters>(key: &str, value: &Value) -> Result<()> {
    if value.is_null() {
        return Err(Error::InvalidConfig {
            optimizer: A::NAME,
            reason: format!(
                "`{key}` is null: serde_json turns NaN and infinities into null, which would \
                 not read back as a number; pass them as ferroptim::json::number(x)"
            ),
        });
    }
    if Precision::KEYS.iter().any(|(k, _)| *k == key) {
        return Err(Error::InvalidConfig {
            optimizer: A::NAME,
            reason: format!(
                "`{key}` is fixed when the group is added (GroupSpec::set), since it decides \
                 what the state holds"
            ),
        });
    }
    let reserved = key == "params"
        || key == "param_names"
        || A::TORCH_FLAGS.contains(&key)
        || is_hyperparameter::<A>(&options_map(&A::default()), key);
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

/// The saved ids of group `group` reordered to follow `ours`: the saved
/// parameter named `ours[i]` is the one at position `i`. Names must be
/// unique on both sides; the first of ours that the checkpoint lacks is
/// the error, next to the saved name at its position.
fn match_by_name(
    group: usize,
    ours: &[String],
    theirs: &[String],
    ids: &[usize],
) -> Result<Vec<usize>> {
    let saved: BTreeMap<&str, usize> = theirs
        .iter()
        .map(String::as_str)
        .zip(ids.iter().copied())
        .collect();
    let unique = |names: &[String]| {
        names
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == names.len()
    };
    // Checked once: with a repeated name, matching by name means nothing.
    let both_unique = saved.len() == theirs.len() && unique(ours);
    let mut out = Vec::with_capacity(ours.len());
    for (index, name) in ours.iter().enumerate() {
        match saved.get(name.as_str()) {
            Some(&id) if both_unique => out.push(id),
            _ => {
                return Err(Error::ParamNameMismatch {
                    group,
                    index,
                    expected: name.clone(),
                    found: theirs[index].clone(),
                })
            }
        }
    }
    Ok(out)
}

fn saved_param_ids(saved: &Map<String, Value>, group: usize) -> Result<Vec<usize>> {
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

/// A saved group's `param_names` (torch 2.6+), if it has them: a list of
/// strings as long as its `params`.
fn saved_param_names(
    saved: &Map<String, Value>,
    group: usize,
    len: usize,
) -> Result<Option<Vec<String>>> {
    let Some(value) = saved.get("param_names") else {
        return Ok(None);
    };
    let path = || format!("param_groups[{group}].param_names");
    let names = value
        .as_array()
        .and_then(|list| {
            list.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| Error::state(path(), "expected a list of parameter names (strings)"))?;
    if names.len() != len {
        return Err(Error::state(
            path(),
            format!("{} names for {len} parameters", names.len()),
        ));
    }
    Ok(Some(names))
}
