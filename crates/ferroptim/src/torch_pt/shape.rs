//! What the pickle built, shaped into a [`StateDict`]: param groups as
//! JSON, per-parameter state as [`StateValue`]s, every copy counted against
//! the budget.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::pickle::{Machine, Obj};
use super::{bad, MAX_DEPTH, NODE_BYTES};
use crate::error::Result;
use crate::state::{ParamStateDict, StateDict, StateValue};
use crate::tensor::Tensor;

impl Machine<'_> {
    fn json(&self, i: usize, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(bad("nesting deeper than a state_dict's"));
        }
        self.charge(NODE_BYTES, "a param group value")?;
        Ok(match &self.arena[i] {
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
            Obj::Tensor(_) => {
                return Err(bad(
                    "a tensor-valued hyperparameter (ferroptim's are numbers)",
                ))
            }
            _ => return Err(bad("an object a param group does not hold")),
        })
    }

    fn key(&self, i: usize) -> Result<String> {
        match &self.arena[i] {
            Obj::Str(s) => Ok(s.clone()),
            Obj::Int(v) => Ok(v.to_string()),
            _ => Err(bad("a dict key that is not a string or an integer")),
        }
    }

    fn dict(&self, i: usize, what: &str) -> Result<&[(usize, usize)]> {
        match &self.arena[i] {
            Obj::Dict(kv) => Ok(kv),
            _ => Err(bad(format!("{what} is not a dict"))),
        }
    }

    /// A copy of tensor `t` for the state_dict, counted against the budget.
    fn tensor_copy(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        let width = match t.dtype() {
            crate::tensor::Dtype::F32 => 4,
            crate::tensor::Dtype::F64 => 8,
        };
        self.charge(t.numel() as u64 * width + NODE_BYTES, what)?;
        Ok(t.clone())
    }

    fn state_value(&self, i: usize, what: &str) -> Result<StateValue> {
        self.charge(NODE_BYTES, what)?;
        Ok(match &self.arena[i] {
            Obj::Tensor(t) => StateValue::Tensor(self.tensor_copy(t, what)?),
            Obj::Int(v) => StateValue::Int(*v),
            Obj::Float(x) => StateValue::Float(*x),
            // A list of tensors; `None` entries (only LBFGS's scratch `al`
            // has them, for history slots not yet used) are left out.
            Obj::List(v) | Obj::Tuple(v) => StateValue::TensorList(
                v.iter()
                    .filter(|&&j| !matches!(self.arena[j], Obj::None))
                    .map(|&j| match &self.arena[j] {
                        Obj::Tensor(t) => self.tensor_copy(t, what),
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

    pub(super) fn state_dict(&self, root: usize) -> Result<StateDict> {
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
}
