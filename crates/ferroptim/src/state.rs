//! The `state_dict`: torch's checkpoint shape, and the checked reading of it.
//!
//! ```text
//! {"state": {"0": {"step": <tensor>, "exp_avg": <tensor>, ...}, ...},
//!  "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], ..., "params": [0, 1]}, ...]}
//! ```
//!
//! Parameters are numbered in group order, as torch numbers them. A
//! parameter with no state (never stepped) has no entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensor::{Dtype, Tensor};

/// One value of a parameter's state: a tensor, a number or a list of tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StateValue {
    /// An integer (e.g. LBFGS's `func_evals`).
    Int(i64),
    /// A float (NaN and infinities included: JSON writes them by name).
    Float(#[serde(with = "crate::json::float")] f64),
    /// A tensor (e.g. `exp_avg`, or `step` as torch's 0-d float32 tensor).
    Tensor(Tensor),
    /// A list of tensors (e.g. LBFGS's `old_dirs`).
    TensorList(Vec<Tensor>),
}

/// A number torch keeps in a state as a 0-d tensor of the parameter's
/// dtype, or as a Python float: held by value (a step that writes one
/// allocates nothing), made a [`StateValue`] when saved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StateScalar {
    /// A 0-d tensor of this dtype, whose value is exact in `f64`.
    Tensor(f64, Dtype),
    /// A Python float.
    Float(f64),
}

impl StateScalar {
    /// A 0-d tensor of `T` holding `x`.
    pub fn tensor<T: crate::tensor::Element>(x: T) -> Self {
        StateScalar::Tensor(x.to_f64(), T::DTYPE)
    }

    /// Its state_dict form.
    pub fn to_value(self) -> StateValue {
        match self {
            StateScalar::Tensor(x, dtype) => StateValue::Tensor(Tensor::scalar_of(dtype, x)),
            StateScalar::Float(x) => StateValue::Float(x),
        }
    }
}

/// The state of one parameter: torch's state keys and their values.
pub type ParamStateDict = BTreeMap<String, StateValue>;

/// An optimizer's full state, shaped like torch's `optimizer.state_dict()`.
///
/// ```
/// use ferroptim::{optim::{Sgd, SgdConfig}, Optimizer, Param, StateDict, Tensor};
/// let p = Param::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let mut opt = Sgd::new([p.clone()], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![1.0f64, 1.0], &[2])?)?;
/// opt.step()?;
/// let json = opt.state_dict().to_json()?;
/// assert!(json.contains("momentum_buffer"));
/// let restored = StateDict::from_json(&json)?;
/// assert_eq!(restored, opt.state_dict());
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDict {
    /// Per-parameter state, keyed by the parameter's index in group order.
    pub state: BTreeMap<usize, ParamStateDict>,
    /// Each group's hyperparameters, plus `params`: the indices of its parameters.
    pub param_groups: Vec<Map<String, Value>>,
}

impl StateDict {
    /// The state_dict as JSON. Floats are written so that they read back bit for bit.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// Reads a state_dict written by [`StateDict::to_json`] (or by torch's
    /// layout converted to JSON).
    pub fn from_json(json: &str) -> Result<Self> {
        Ok(serde_json::from_str(json)?)
    }
}

/// The largest step count a state_dict may hold: 2^53, the last integer
/// that every form a count takes (an `f64`, torch's `int`, an `i64`) holds
/// exactly. No training reaches it; a larger count is a corrupt file.
pub const MAX_STEP: f64 = 9_007_199_254_740_992.0;

/// Reads one parameter's saved state, checking every entry against the parameter.
///
/// Optimizers implement [`ParamState::from_entries`](crate::ParamState::from_entries)
/// with it: each accessor takes a key, checks its kind and shape, converts
/// floating tensors to the parameter's dtype (as torch's `load_state_dict`
/// does, except for `step`), and [`StateEntries::finish`] rejects keys nobody
/// asked for. Errors name the parameter and the key.
pub struct StateEntries<'a> {
    index: usize,
    shape: &'a [usize],
    dtype: Dtype,
    entries: &'a ParamStateDict,
    used: BTreeSet<&'a str>,
}

impl<'a> StateEntries<'a> {
    /// Entries of parameter `index` (state_dict numbering) whose value has `shape` and `dtype`.
    pub fn new(
        index: usize,
        shape: &'a [usize],
        dtype: Dtype,
        entries: &'a ParamStateDict,
    ) -> Self {
        StateEntries {
            index,
            shape,
            dtype,
            entries,
            used: BTreeSet::new(),
        }
    }

    /// The parameter's shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    fn path(&self, key: &str) -> String {
        format!("state[{}].{key}", self.index)
    }

    fn get(&mut self, key: &str) -> Option<&'a StateValue> {
        let (k, v) = self.entries.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    /// A tensor with the parameter's shape, converted to its dtype; an error if absent.
    pub fn tensor(&mut self, key: &str) -> Result<Tensor> {
        self.optional_tensor(key)?.ok_or_else(|| {
            Error::state(
                self.path(key),
                "missing; this optimizer keeps it for every parameter",
            )
        })
    }

    /// Like [`StateEntries::tensor`], but `None` if the key is absent.
    pub fn optional_tensor(&mut self, key: &str) -> Result<Option<Tensor>> {
        self.optional_tensor_shaped(key, self.shape)
    }

    /// A tensor of `shape` (not the parameter's: Adafactor's row and column
    /// factors), converted to the parameter's dtype; an error if absent.
    pub fn tensor_shaped(&mut self, key: &str, shape: &[usize]) -> Result<Tensor> {
        self.optional_tensor_shaped(key, shape)?.ok_or_else(|| {
            Error::state(
                self.path(key),
                "missing; this optimizer keeps it for every parameter of this shape",
            )
        })
    }

    /// A 1-D tensor (or, with `or_scalar`, a 0-d one) of at most the
    /// parameter's number of elements, converted to its dtype: a state whose
    /// length depends on a hyperparameter (Prodigy's `s` and `p0`, one per
    /// `slice_p` elements), which the algorithm checks against it.
    pub fn flat_tensor(&mut self, key: &str, or_scalar: bool) -> Result<Tensor> {
        let numel: usize = self.shape.iter().product();
        let value = self.get(key).ok_or_else(|| {
            Error::state(
                self.path(key),
                "missing; this optimizer keeps it for every parameter",
            )
        })?;
        let t = match value {
            StateValue::Tensor(t) => t,
            other => {
                return Err(Error::state(
                    self.path(key),
                    format!("expected a tensor, found {}", kind(other)),
                ))
            }
        };
        let fits = match t.shape() {
            [] => or_scalar,
            [n] => *n <= numel,
            _ => false,
        };
        if !fits {
            let expected = if or_scalar { "a 0-d or 1-D" } else { "a 1-D" };
            return Err(Error::state(
                self.path(key),
                format!(
                    "expected {expected} tensor of at most {numel} elements (the parameter's), \
                     found shape {:?}",
                    t.shape()
                ),
            ));
        }
        Ok(t.to_dtype(self.dtype))
    }

    fn optional_tensor_shaped(&mut self, key: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let StateValue::Tensor(t) = value else {
            return Err(Error::state(
                self.path(key),
                format!("expected a tensor, found {}", kind(value)),
            ));
        };
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: format!("state_dict {}", self.path(key)),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        Ok(Some(t.to_dtype(self.dtype)))
    }

    /// A number written by torch as an int, a float or a one-element tensor;
    /// `None` if absent.
    fn number(&mut self, key: &str, expected: &str) -> Result<Option<f64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value {
            StateValue::Int(i) => Ok(Some(*i as f64)),
            StateValue::Float(x) => Ok(Some(*x)),
            StateValue::Tensor(t) if t.numel() == 1 => Ok(Some(t.to_f64_vec()[0])),
            other => Err(Error::state(
                self.path(key),
                format!(
                    "expected {expected} (a number or a one-element tensor), found {}",
                    kind(other)
                ),
            )),
        }
    }

    /// A step count: a 0-d tensor (torch's float32 `step`) or a number, which
    /// must be a finite, non-negative whole number.
    pub fn step(&mut self, key: &str) -> Result<f64> {
        let step = self.number(key, "a step count")?.ok_or_else(|| {
            Error::state(
                self.path(key),
                "missing; expected the number of steps taken",
            )
        })?;
        if !(step.is_finite() && (0.0..=MAX_STEP).contains(&step) && step.fract() == 0.0) {
            return Err(Error::state(
                self.path(key),
                format!(
                    "step count must be a whole number from 0 to 2^53 (exact in a float \
                     and an integer alike), found {step}"
                ),
            ));
        }
        Ok(step)
    }

    /// A float, NaN and infinities included (LBFGS's `prev_loss` after a NaN
    /// loss), written by torch as a float, an int or a one-element tensor;
    /// `None` if the key is absent.
    pub fn optional_float(&mut self, key: &str) -> Result<Option<f64>> {
        self.number(key, "a number")
    }

    /// A scalar kept by torch as a 0-d float32 tensor (ASGD's `eta` and
    /// `mu`), or a number; returned rounded to `f32` as torch keeps it. Any
    /// float32 value is one: a NaN lr makes them NaN in torch too.
    pub fn scalar_f32(&mut self, key: &str) -> Result<f32> {
        let x = self.optional_float(key)?.ok_or_else(|| {
            Error::state(
                self.path(key),
                "missing; this optimizer keeps it for every parameter",
            )
        })?;
        Ok(x as f32)
    }

    /// A finite number, written by torch as a float, an int or a one-element
    /// tensor; `None` if the key is absent.
    pub fn optional_number(&mut self, key: &str) -> Result<Option<f64>> {
        let x = self.number(key, "a number")?;
        if let Some(x) = x.filter(|x| !x.is_finite()) {
            return Err(Error::state(
                self.path(key),
                format!("expected a finite number, found {x}"),
            ));
        }
        Ok(x)
    }

    /// A number torch keeps either as a 0-d tensor (read here in the
    /// parameter's dtype) or as a Python float (LAMB's `trust_ratio`, a
    /// float where a norm is zero); `None` if the key is absent.
    pub fn optional_scalar(&mut self, key: &str) -> Result<Option<StateScalar>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value {
            StateValue::Tensor(t) if t.shape().is_empty() => {
                let x = t.to_dtype(self.dtype).to_f64_vec()[0];
                Ok(Some(StateScalar::Tensor(x, self.dtype)))
            }
            StateValue::Float(x) => Ok(Some(StateScalar::Float(*x))),
            StateValue::Int(i) => Ok(Some(StateScalar::Float(*i as f64))),
            StateValue::Tensor(t) => Err(Error::ShapeMismatch {
                what: format!("state_dict {}", self.path(key)),
                expected: Vec::new(),
                found: t.shape().to_vec(),
            }),
            other => Err(Error::state(
                self.path(key),
                format!("expected a 0-d tensor or a float, found {}", kind(other)),
            )),
        }
    }

    /// A list of tensors of `shape`, converted to the parameter's dtype
    /// (LBFGS's history); an error if absent.
    pub fn tensor_list(&mut self, key: &str, shape: &[usize]) -> Result<Vec<Tensor>> {
        let value = self
            .get(key)
            .ok_or_else(|| Error::state(self.path(key), "missing; expected a list of tensors"))?;
        let list = match value {
            StateValue::TensorList(list) => list,
            other => {
                return Err(Error::state(
                    self.path(key),
                    format!("expected a list of tensors, found {}", kind(other)),
                ))
            }
        };
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                if t.shape() == shape {
                    Ok(t.to_dtype(self.dtype))
                } else {
                    Err(Error::ShapeMismatch {
                        what: format!("state_dict {}[{i}]", self.path(key)),
                        expected: shape.to_vec(),
                        found: t.shape().to_vec(),
                    })
                }
            })
            .collect()
    }

    /// A list of tensors of any shapes (SOAP's per-dimension matrices),
    /// converted to the parameter's dtype; the algorithm checks the shapes.
    pub fn tensors(&mut self, key: &str) -> Result<Vec<Tensor>> {
        let value = self
            .get(key)
            .ok_or_else(|| Error::state(self.path(key), "missing; expected a list of tensors"))?;
        match value {
            StateValue::TensorList(list) => {
                Ok(list.iter().map(|t| t.to_dtype(self.dtype)).collect())
            }
            other => Err(Error::state(
                self.path(key),
                format!("expected a list of tensors, found {}", kind(other)),
            )),
        }
    }

    /// The parameter's state_dict number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Marks `key` as read without reading it: a key torch saves that this
    /// optimizer has no use for (LBFGS's scratch `al`).
    pub fn ignore(&mut self, key: &str) {
        self.get(key);
    }

    /// Errors if the saved state holds keys that were not read.
    pub fn finish(self) -> Result<()> {
        if let Some(extra) = self
            .entries
            .keys()
            .find(|k| !self.used.contains(k.as_str()))
        {
            return Err(Error::state(
                self.path(extra),
                "unknown state key for this optimizer",
            ));
        }
        Ok(())
    }
}

fn kind(value: &StateValue) -> &'static str {
    match value {
        StateValue::Int(_) => "an integer",
        StateValue::Float(_) => "a float",
        StateValue::Tensor(_) => "a tensor",
        StateValue::TensorList(_) => "a list of tensors",
    }
}

/// The state an algorithm keeps for one parameter, and its state_dict form.
///
/// Algorithms declare their keys once with [`param_state!`](crate::param_state),
/// which writes both directions; a state of another shape (Adafactor's
/// factored moments) implements the two methods by hand.
pub trait ParamState: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The state under torch's key names. Empty means "no state" (omitted from the state_dict).
    fn to_entries(&self) -> ParamStateDict;
    /// Reads saved state, checking it against the parameter.
    fn from_entries(entries: StateEntries<'_>) -> Result<Self>;
}

/// How one field of a [`ParamState`] is saved and read back, named in
/// [`param_state!`](crate::param_state) by its kind: `step`, `int_step`,
/// `tensor`, `optional_tensor`, `optional_scalar`, `scalar_f32`.
#[doc(hidden)]
pub mod field {
    use super::{StateEntries, StateValue};
    use crate::error::Result;
    use crate::tensor::Tensor;

    /// A step count, written as torch's 0-d float32 tensor.
    pub mod step {
        use super::*;
        pub fn save(step: &f64) -> Option<StateValue> {
            Some(super::super::step_value(*step))
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<f64> {
            entries.step(key)
        }
    }

    /// A step count, written as a Python int (SparseAdam).
    pub mod int_step {
        use super::*;
        pub fn save(step: &f64) -> Option<StateValue> {
            Some(StateValue::Int(*step as i64))
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<f64> {
            entries.step(key)
        }
    }

    /// A tensor of the parameter's shape, kept for every parameter.
    pub mod tensor {
        use super::*;
        pub fn save(t: &Tensor) -> Option<StateValue> {
            Some(StateValue::Tensor(t.clone()))
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<Tensor> {
            entries.tensor(key)
        }
    }

    /// A tensor of the parameter's shape that only some settings keep.
    pub mod optional_tensor {
        use super::*;
        pub fn save(t: &Option<Tensor>) -> Option<StateValue> {
            t.clone().map(StateValue::Tensor)
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<Option<Tensor>> {
            entries.optional_tensor(key)
        }
    }

    /// A number kept as a 0-d tensor of the parameter's dtype or a float,
    /// that only some steps write (LAMB's norms and trust ratio).
    pub mod optional_scalar {
        use super::*;
        use crate::state::StateScalar;
        pub fn save(x: &Option<StateScalar>) -> Option<StateValue> {
            x.map(StateScalar::to_value)
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<Option<StateScalar>> {
            entries.optional_scalar(key)
        }
    }

    /// A scalar torch keeps as a 0-d float32 tensor (ASGD's `eta`, NAdam's `mu_product`).
    pub mod scalar_f32 {
        use super::*;
        pub fn save(x: &f32) -> Option<StateValue> {
            Some(StateValue::Tensor(Tensor::scalar(*x)))
        }
        pub fn load(entries: &mut StateEntries<'_>, key: &str) -> Result<f32> {
            entries.scalar_f32(key)
        }
    }
}

/// Implements [`ParamState`] from one list of the state's saved fields,
/// each named as torch's key and given its kind (see [`field`]); fields after
/// `skip` are workspace, not saved, and start from `Default`.
///
/// ```ignore
/// param_state!(AdamState {
///     step: step,
///     exp_avg: tensor,
///     exp_avg_sq: tensor,
///     max_exp_avg_sq: optional_tensor,
/// });
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! param_state {
    ($ty:ident { $($field:ident: $kind:ident),+ $(,)? } $(skip { $($skip:ident),+ $(,)? })?) => {
        impl $crate::ParamState for $ty {
            fn to_entries(&self) -> $crate::ParamStateDict {
                let mut entries = $crate::ParamStateDict::new();
                $(
                    if let Some(value) = $crate::state_field::$kind::save(&self.$field) {
                        entries.insert(stringify!($field).into(), value);
                    }
                )+
                entries
            }

            fn from_entries(mut entries: $crate::StateEntries<'_>) -> $crate::Result<Self> {
                let state = $ty {
                    $($field: $crate::state_field::$kind::load(&mut entries, stringify!($field))?,)+
                    $($($skip: Default::default(),)+)?
                };
                entries.finish()?;
                Ok(state)
            }
        }
    };
}

/// torch's `step` as it appears in a state_dict: a 0-d float32 tensor.
pub(crate) fn step_value(step: f64) -> StateValue {
    StateValue::Tensor(Tensor::scalar(step as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, StateValue)]) -> ParamStateDict {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn tensors_are_cast_to_the_param_dtype_and_shape_checked() {
        let e = entries(&[(
            "m",
            StateValue::Tensor(Tensor::from_vec(vec![0.5f64, 1.5], &[2]).unwrap()),
        )]);
        let mut r = StateEntries::new(3, &[2], Dtype::F32, &e);
        let t = r.tensor("m").unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.5, 1.5]);
        r.finish().unwrap();

        let mut r = StateEntries::new(3, &[3], Dtype::F32, &e);
        let err = r.tensor("m").unwrap_err().to_string();
        assert!(err.contains("state[3].m") && err.contains("[3]"), "{err}");
        let mut r = StateEntries::new(3, &[2], Dtype::F32, &e);
        assert!(r
            .tensor("v")
            .unwrap_err()
            .to_string()
            .contains("state[3].v"));
    }

    #[test]
    fn steps_must_be_whole_non_negative_numbers() {
        for (value, ok) in [
            (StateValue::Tensor(Tensor::scalar(4.0f32)), true),
            (StateValue::Int(7), true),
            (StateValue::Float(2.0), true),
            (StateValue::Float(f64::NAN), false),
            (StateValue::Float(-1.0), false),
            (StateValue::Float(1.5), false),
            (StateValue::TensorList(vec![]), false),
        ] {
            let e = entries(&[("step", value.clone())]);
            let got = StateEntries::new(0, &[], Dtype::F64, &e).step("step");
            assert_eq!(got.is_ok(), ok, "{value:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = entries(&[("exp_avg", StateValue::Int(1))]);
        let err = StateEntries::new(2, &[], Dtype::F64, &e)
            .finish()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state[2].exp_avg") && err.contains("unknown"),
            "{err}"
        );
    }
}
