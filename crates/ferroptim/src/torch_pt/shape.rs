//! What the pickle built, shaped into what ferroptim reads: a
//! [`StateDict`] (param groups as JSON, per-parameter state as
//! [`StateValue`]s), a dict of named tensors (a model's state_dict), or
//! plain JSON (a scheduler's state, an epoch); every copy counted against
//! the budget. A key path finds one of them inside a nested checkpoint.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::pickle::{Arena, Obj, StorageKind};
use super::{bad, MAX_DEPTH, NODE_BYTES};
use crate::error::Result;
use crate::state::{ParamStateDict, StateDict, StateValue};
use crate::tensor::{Dtype, Tensor};

impl Arena {
    pub(super) fn json(&self, i: usize, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(bad("nesting deeper than a state_dict's"));
        }
        self.charge(NODE_BYTES, "a param group value")?;
        Ok(match &self[i] {
            Obj::None => Value::Null,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(v) => Value::from(*v),
            // A lr of NaN saves in torch; it loads here too.
            Obj::Float(x) => crate::json::number(*x),
            Obj::Str(s) => {
                self.charge(s.len() as u64, "a string")?;
                Value::String(s.clone())
            }
            Obj::List(v) | Obj::Tuple(v) => Value::Array(
                v.iter()
                    .map(|&j| self.json(j, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            Obj::Dict(kv) => {
                let mut map = Map::new();
                for &(k, v) in kv {
                    map.insert(self.key(k)?, self.json(v, depth + 1)?);
                }
                Value::Object(map)
            }
            Obj::Tensor(..) => {
                return Err(bad(
                    "a tensor where plain values were expected (a param group's \
                     hyperparameters, a scheduler's state)",
                ))
            }
            Obj::Opaque(name) => {
                return Err(bad(format!(
                    "a {name} object where plain values were expected"
                )))
            }
            _ => return Err(bad("an object that is not a plain value")),
        })
    }

    fn key(&self, i: usize) -> Result<String> {
        match &self[i] {
            Obj::Str(s) => Ok(s.clone()),
            Obj::Int(v) => Ok(v.to_string()),
            _ => Err(bad("a dict key that is not a string or an integer")),
        }
    }

    fn dict(&self, i: usize, what: &str) -> Result<&[(usize, usize)]> {
        match &self[i] {
            Obj::Dict(kv) => Ok(kv),
            _ => Err(bad(format!("{what} is not a dict"))),
        }
    }

    /// A copy of tensor `t` for the state_dict, counted against the budget.
    fn tensor_copy(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        let width = t.dtype().size() as u64;
        self.charge(t.numel() as u64 * width + NODE_BYTES, what)?;
        Ok(t.clone())
    }

    /// A tensor of the optimizer's state: of a floating dtype, as ferroptim keeps it.
    fn state_tensor(&self, t: &Tensor, kind: StorageKind, what: &str) -> Result<Tensor> {
        if !matches!(
            kind,
            StorageKind::F32 | StorageKind::F64 | StorageKind::BF16 | StorageKind::F16
        ) {
            return Err(bad(format!(
                "{what} is a {} tensor; ferroptim keeps float32, float64, bfloat16 and float16 state",
                kind.torch_name()
            )));
        }
        self.tensor_copy(t, what)
    }

    fn state_value(&self, i: usize, what: &str) -> Result<StateValue> {
        self.charge(NODE_BYTES, what)?;
        Ok(match &self[i] {
            Obj::Tensor(t, kind) => StateValue::Tensor(self.state_tensor(t, *kind, what)?),
            Obj::Int(v) => StateValue::Int(*v),
            Obj::Float(x) => StateValue::Float(*x),
            // A list of tensors; `None` entries (only LBFGS's scratch `al`
            // has them, for history slots not yet used) are left out, and an
            // empty list in it (SOAP's `[]` for a dimension it does not
            // precondition) is an empty tensor, which the load casts to the
            // parameter's dtype.
            Obj::List(v) | Obj::Tuple(v) => StateValue::TensorList(
                v.iter()
                    .filter(|&&j| !matches!(self[j], Obj::None))
                    .map(|&j| match &self[j] {
                        Obj::Tensor(t, kind) => self.state_tensor(t, *kind, what),
                        Obj::List(inner) if inner.is_empty() => Ok(Tensor::zeros(Dtype::F32, &[0])),
                        _ => Err(bad(format!(
                            "{what}: a list of something other than tensors"
                        ))),
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(bad(format!(
                    "{what}: not a tensor, number or list of tensors"
                )))
            }
        })
    }

    /// The keys of dict `i`, for errors that say what a file holds.
    pub(super) fn keys_of(&self, i: usize) -> Vec<String> {
        match &self[i] {
            Obj::Dict(kv) => kv.iter().filter_map(|&(k, _)| self.key(k).ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// The object at `path` below `root`: keys separated by `/`, each
    /// with list indices after it (`optimizer_states[0]`, `extra/opt`).
    pub(super) fn find(&self, root: usize, path: &str) -> Result<usize> {
        let mut at = root;
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            let (name, indices) = match segment.find('[') {
                Some(b) => segment.split_at(b),
                None => (segment, ""),
            };
            if !name.is_empty() {
                let kv = self.dict(at, &format!("the object holding {name:?}"))?;
                at = kv
                    .iter()
                    .find(|&&(k, _)| self.key(k).is_ok_and(|k| k == name))
                    .map(|&(_, v)| v)
                    .ok_or_else(|| {
                        bad(format!(
                            "no key {name:?} (in {path:?}); the dict holds: {}",
                            self.keys_of(at).join(", ")
                        ))
                    })?;
            }
            for index in indices.split('[').filter(|s| !s.is_empty()) {
                let n: usize = index
                    .strip_suffix(']')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad(format!("{path:?}: {segment:?} is not key[index]")))?;
                let items = self.items(at).ok_or_else(|| {
                    bad(format!("{path:?}: [{n}] of something that is not a list"))
                })?;
                at = *items.get(n).ok_or_else(|| {
                    bad(format!("{path:?}: index {n} of a list of {}", items.len()))
                })?;
            }
        }
        Ok(at)
    }

    /// Dict `i` of names to tensors (a model's `state_dict()`), in its order,
    /// every tensor as float32 or float64 (bfloat16, float16 and integers
    /// exactly). Entries that are not tensors are an error naming them.
    pub(super) fn tensors(&self, i: usize, what: &str) -> Result<Vec<(String, Tensor)>> {
        self.dict(i, what)?
            .iter()
            .map(|&(k, v)| {
                let name = self.key(k)?;
                match &self[v] {
                    Obj::Tensor(t, _) => Ok((name.clone(), self.tensor_copy(t, &name)?)),
                    _ => Err(bad(format!("{what}: {name:?} is not a tensor"))),
                }
            })
            .collect()
    }

    pub(super) fn state_dict(&self, root: usize) -> Result<StateDict> {
        let keys = self.keys_of(root);
        if keys.iter().any(|k| k == "base_optimizer") {
            return self.lookahead_state_dict(root);
        }
        self.plain_state_dict(root, keys)
    }

    /// An optimizer's own `state_dict()`: `state` and `param_groups`.
    fn plain_state_dict(&self, root: usize, keys: Vec<String>) -> Result<StateDict> {
        if !keys.iter().any(|k| k == "state" || k == "param_groups") && !keys.is_empty() {
            return Err(bad(format!(
                "no optimizer state_dict here: the dict holds {}; pick the optimizer's with \
                 StateDict::load_torch_key(path, key) (e.g. \"optimizer\", or Lightning's \
                 \"optimizer_states[0]\")",
                keys.join(", ")
            )));
        }
        let mut state = BTreeMap::new();
        let mut param_groups = None;
        for &(k, v) in self.dict(root, "the checkpoint")? {
            match self.key(k)?.as_str() {
                "state" => {
                    for &(p, entries) in self.dict(v, "state")? {
                        let param = self
                            .int(p)
                            .and_then(|p| usize::try_from(p).ok())
                            .ok_or_else(|| bad("a state key that is not a parameter index"))?;
                        let mut out = ParamStateDict::new();
                        for &(key, value) in self.dict(entries, "a parameter's state")? {
                            let key = self.key(key)?;
                            let what = format!("state[{param}].{key}");
                            out.insert(key, self.state_value(value, &what)?);
                        }
                        state.insert(param, out);
                    }
                }
                "param_groups" => {
                    let groups = self.json(v, 0)?;
                    let groups = match groups {
                        Value::Array(gs) => gs
                            .into_iter()
                            .map(|g| match g {
                                Value::Object(m) => Ok(m),
                                _ => Err(bad("a param group that is not a dict")),
                            })
                            .collect::<Result<Vec<_>>>()?,
                        _ => return Err(bad("param_groups is not a list")),
                    };
                    param_groups = Some(groups);
                }
                other => {
                    return Err(bad(format!(
                        "unexpected top-level key {other:?}; expected state and param_groups"
                    )))
                }
            }
        }
        Ok(StateDict {
            state,
            param_groups: param_groups.ok_or_else(|| bad("no param_groups"))?,
        })
    }

    /// pytorch-optimizer's Lookahead keeps two parts: `base_optimizer`, the
    /// wrapped optimizer's state_dict, and `lookahead_state`, the slow
    /// weights keyed by `(group, index)` tuples. ferroptim's Lookahead keeps
    /// one state_dict: the base's, with the slow weights merged into each
    /// parameter's state (`(group, index)` is `param_groups[group].params[index]`).
    fn lookahead_state_dict(&self, root: usize) -> Result<StateDict> {
        let mut base = None;
        let mut slow = None;
        for &(k, v) in self.dict(root, "the checkpoint")? {
            match self.key(k)?.as_str() {
                // Its own state_dict, not another Lookahead's (nor, in a
                // hostile file, this same dict again).
                "base_optimizer" => base = Some(self.plain_state_dict(v, self.keys_of(v))?),
                "lookahead_state" => slow = Some(v),
                other => {
                    return Err(bad(format!(
                        "unexpected top-level key {other:?} beside base_optimizer; expected \
                         Lookahead's lookahead_state"
                    )))
                }
            }
        }
        let mut sd = base.ok_or_else(|| bad("no base_optimizer"))?;
        let slow = slow.ok_or_else(|| bad("base_optimizer without lookahead_state"))?;
        for &(key, entries) in self.dict(slow, "lookahead_state")? {
            let pair = self.items(key).filter(|v| v.len() == 2);
            let (g, i) = pair
                .and_then(|v| Some((self.int(v[0])?, self.int(v[1])?)))
                .ok_or_else(|| bad("a lookahead_state key that is not a (group, index) pair"))?;
            let flat = usize::try_from(g)
                .ok()
                .and_then(|g| sd.param_groups.get(g))
                .and_then(|group| group.get("params")?.as_array()?.get(usize::try_from(i).ok()?))
                .and_then(Value::as_u64)
                .and_then(|p| usize::try_from(p).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "lookahead_state[({g}, {i})]: base_optimizer has no parameter {i} in param group {g}"
                    ))
                })?;
            let state = sd.state.entry(flat).or_default();
            for &(key, value) in self.dict(entries, "a parameter's lookahead state")? {
                let key = self.key(key)?;
                let what = format!("state[{flat}].{key}");
                let value = self.state_value(value, &what)?;
                if state.insert(key, value).is_some() {
                    return Err(bad(format!(
                        "{what} is in both base_optimizer and lookahead_state"
                    )));
                }
            }
        }
        Ok(sd)
    }
}
