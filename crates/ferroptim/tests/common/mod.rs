//! Reading the fixtures that tools/torch_reference/generate.py wrote with torch,
//! and comparing ferroptim's numbers with them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferroptim::{optim, GroupSpec, Optimizer, Param, SparseGrad, StateDict, StateValue, Tensor};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
pub struct Fixture {
    pub torch_version: String,
    pub optimizer: String,
    pub cases: Vec<Case>,
    pub errors: Vec<ErrorCase>,
}

#[derive(Deserialize)]
pub struct Case {
    pub desc: String,
    pub dtype: String,
    pub kwargs: Value,
    pub groups: Vec<Map<String, Value>>,
    pub initial_params: Vec<Tensor>,
    pub steps: Vec<Step>,
    pub mid_step: usize,
    pub state_dict_mid: StateDict,
    pub state_dict_final: StateDict,
    /// Schedule-Free's: the parameters and state_dict after `eval()` at the end.
    #[serde(default)]
    pub eval: Option<EvalRecord>,
    /// The file (beside the fixture) holding torch's `torch.save`d
    /// state_dict at `mid_step`, where the generator saved one.
    #[serde(default)]
    pub saved_mid: Option<String>,
}

/// What a reference with train/eval modes held after `eval()`.
#[derive(Deserialize)]
pub struct EvalRecord {
    pub params: Vec<Tensor>,
    pub state_dict: StateDict,
}

/// A gradient torch was fed: dense, or sparse rows (uncoalesced, as recorded).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum GradRecord {
    Dense(Tensor),
    Sparse { indices: Vec<usize>, values: Tensor },
}

#[derive(Deserialize)]
pub struct Step {
    pub grads: Vec<Option<GradRecord>>,
    pub params: Vec<Tensor>,
    pub state: BTreeMap<usize, BTreeMap<String, StateValue>>,
}

#[derive(Deserialize)]
pub struct ErrorCase {
    pub desc: String,
    pub params: String,
    pub kwargs: Value,
    pub error_type: String,
    pub error_regex: Option<String>,
    pub torch_message: String,
}

/// Only the error inputs of a fixture (LBFGS's cases have their own shape).
pub fn load_errors(name: &str) -> Vec<ErrorCase> {
    #[derive(Deserialize)]
    struct Errors {
        optimizer: String,
        errors: Vec<ErrorCase>,
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Errors =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(fixture.optimizer, name);
    fixture.errors
}

pub fn load(name: &str) -> Fixture {
    load_in("", name)
}

/// The fixture of optimizer `name` in `tests/fixtures/{dir}` (`half` holds
/// the 16-bit runs of tools/torch_reference/half.py).
pub fn load_in(dir: &str, name: &str) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Fixture =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(fixture.optimizer, name);
    assert!(
        fixture.torch_version.starts_with("2.15"),
        "fixtures must come from torch 2.15"
    );
    fixture
}

/// The param groups a fixture records (`params` as indices, and each
/// group's own hyperparameters) over `params`.
pub fn group_specs(groups: &[Map<String, Value>], params: &[Param]) -> Vec<GroupSpec> {
    groups
        .iter()
        .map(|g| {
            let ids = g["params"].as_array().expect("params list");
            let mut spec = GroupSpec::new(
                ids.iter()
                    .map(|i| params[i.as_u64().unwrap() as usize].clone()),
            );
            for (k, v) in g.iter().filter(|(k, _)| *k != "params") {
                spec = spec.set(k, v.clone());
            }
            spec
        })
        .collect()
}

impl Case {
    /// Fresh parameters holding `values`, and an optimizer built by name from
    /// the case's torch kwargs, with the case's param groups.
    pub fn build(&self, optimizer: &str, values: &[Tensor]) -> (Box<dyn Optimizer>, Vec<Param>) {
        let params: Vec<Param> = values.iter().map(|t| Param::new(t.clone())).collect();
        let groups = group_specs(&self.groups, &params);
        let mut opt = optim::build(optimizer, &self.kwargs.to_string(), groups)
            .unwrap_or_else(|e| panic!("{}: {e}", self.desc));
        // As the generator does: Schedule-Free steps in train mode (for the
        // other optimizers this does nothing).
        opt.train().unwrap();
        (opt, params)
    }

    /// Feeds step `i`'s recorded gradients and steps.
    pub fn step(&self, i: usize, opt: &mut dyn Optimizer, params: &[Param]) {
        for (p, g) in params.iter().zip(&self.steps[i].grads) {
            match g {
                Some(GradRecord::Dense(g)) => p.set_grad(g.clone()).unwrap(),
                Some(GradRecord::Sparse { indices, values }) => p
                    .set_sparse_grad(SparseGrad::new(indices.clone(), values.clone()).unwrap())
                    .unwrap(),
                None => p.clear_grad(),
            }
        }
        opt.step()
            .unwrap_or_else(|e| panic!("{} step {i}: {e}", self.desc));
    }

    /// Feeds step `i` as [`Case::step`] does, then, after SOAP's first
    /// step, takes the reference's state: SOAP's first eigenbases are
    /// arbitrary where its statistics are rank-deficient, so a run that is
    /// to follow the fixture starts from the reference's (see
    /// tests/integration/soap.rs).
    pub fn step_as_reference(
        &self,
        name: &str,
        i: usize,
        opt: &mut dyn Optimizer,
        params: &[Param],
    ) {
        self.step(i, opt, params);
        if name == "soap" && i == 0 {
            let mut sd = opt.state_dict();
            sd.state = self.steps[0].state.clone();
            opt.load_state_dict(&sd).unwrap();
        }
    }
}

/// How closely two sets of tensors agree.
///
/// `max_rel` is the largest element-wise relative error; it is large where a
/// value crosses zero and one ulp of its inputs is most of what is left.
/// `max_norm_rel` is the largest per-tensor `max|a − b| / scale`, the
/// tolerance the tests assert, where `scale` is the largest magnitude that
/// quantity (a parameter, or one state tensor) has had so far in the run:
/// a value that cancels down after reaching 10 carries errors of the size of
/// 10's ulp, and its error is measured against that.
#[derive(Clone, Debug, Default)]
pub struct Agreement {
    pub max_rel: f64,
    pub max_norm_rel: f64,
    pub values: usize,
    pub exact: usize,
    /// Where the largest error was first seen, with both values.
    pub worst: String,
}

impl Agreement {
    pub fn merge(&mut self, other: Agreement) {
        if other.max_rel > self.max_rel {
            self.max_rel = other.max_rel;
            self.worst = other.worst;
        }
        self.max_norm_rel = self.max_norm_rel.max(other.max_norm_rel);
        self.values += other.values;
        self.exact += other.exact;
    }
}

/// Relative error of `got` against `want`: 0 when identical (NaN matching NaN),
/// infinite when one is NaN or an infinity and the other not.
pub fn rel_err(got: f64, want: f64) -> f64 {
    if got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()) || got == want {
        return 0.0;
    }
    if !got.is_finite() || !want.is_finite() {
        return f64::INFINITY;
    }
    (got - want).abs() / got.abs().max(want.abs())
}

/// The largest magnitude each quantity has had so far in a run, by name.
#[derive(Default)]
pub struct Scales(BTreeMap<String, f64>);

impl Scales {
    fn update(&mut self, key: &str, values: &[f64]) -> f64 {
        let here = values.iter().fold(
            0.0f64,
            |m, y| if y.is_finite() { m.max(y.abs()) } else { m },
        );
        let scale = self.0.entry(key.to_string()).or_insert(0.0);
        *scale = scale.max(here);
        *scale
    }
}

pub fn compare_tensor(what: &str, got: &Tensor, want: &Tensor) -> Agreement {
    compare_tensor_in(&mut Scales::default(), what, what, got, want)
}

/// Compares every parameter's value with the reference's, quantity
/// `param j` for the j-th, named `{what} param j` in messages.
pub fn compare_params(
    scales: &mut Scales,
    what: &str,
    params: &[Param],
    want: &[Tensor],
) -> Agreement {
    assert_eq!(params.len(), want.len(), "{what}: parameters");
    let mut a = Agreement::default();
    for (j, (p, want)) in params.iter().zip(want).enumerate() {
        let key = format!("param {j}");
        a.merge(compare_tensor_in(
            scales,
            &key,
            &format!("{what} {key}"),
            &p.value(),
            want,
        ));
    }
    a
}

/// Compares one tensor of quantity `key` (e.g. `param 1`, `state[0].exp_avg`).
pub fn compare_tensor_in(
    scales: &mut Scales,
    key: &str,
    what: &str,
    got: &Tensor,
    want: &Tensor,
) -> Agreement {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let mut a = Agreement::default();
    let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = scales.update(key, &want);
    let max_diff = got.iter().zip(&want).fold(0.0f64, |m, (x, y)| {
        if rel_err(*x, *y) == 0.0 {
            m
        } else {
            m.max((x - y).abs())
        }
    });
    a.max_norm_rel = if max_diff == 0.0 {
        0.0
    } else {
        max_diff / scale
    };
    for (i, (x, y)) in got.into_iter().zip(want).enumerate() {
        let e = rel_err(x, y);
        if e > a.max_rel {
            a.max_rel = e;
            a.worst = format!("{what} element {i}: ours {x:e}, torch {y:e}");
        }
        a.values += 1;
        a.exact += usize::from(e == 0.0);
    }
    a
}

pub fn compare_value(
    scales: &mut Scales,
    key: &str,
    what: &str,
    got: &StateValue,
    want: &StateValue,
) -> Agreement {
    match (got, want) {
        (StateValue::Tensor(g), StateValue::Tensor(w)) => {
            compare_tensor_in(scales, key, what, g, w)
        }
        (StateValue::TensorList(g), StateValue::TensorList(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: list length");
            let mut a = Agreement::default();
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                a.merge(compare_tensor_in(
                    scales,
                    &format!("{key}[{i}]"),
                    &format!("{what}[{i}]"),
                    g,
                    w,
                ));
            }
            a
        }
        (g, w) => {
            assert_eq!(g, w, "{what}");
            Agreement {
                values: 1,
                exact: 1,
                ..Default::default()
            }
        }
    }
}

pub fn compare_state(
    scales: &mut Scales,
    what: &str,
    got: &BTreeMap<usize, BTreeMap<String, StateValue>>,
    want: &BTreeMap<usize, BTreeMap<String, StateValue>>,
) -> Agreement {
    // An empty entry is no state: torch's `self.state` is a defaultdict, and
    // Schedule-Free's train() touches every parameter's entry.
    let want: BTreeMap<_, _> = want.iter().filter(|(_, w)| !w.is_empty()).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "{what}: params with state"
    );
    let mut a = Agreement::default();
    for ((i, g), w) in got.iter().zip(want.values()) {
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>(),
            "{what}: state keys of {i}"
        );
        for (key, value) in g {
            let quantity = format!("state[{i}].{key}");
            let what = format!("{what} {quantity}");
            a.merge(compare_value(scales, &quantity, &what, value, &w[key]));
        }
    }
    a
}

/// JSON values equal, numbers compared as f64 (torch writes `0`, serde `0.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// [`json_equal`], with numbers equal within `rel_tol` of their size
/// (Prodigy's D estimate, kept in its groups, sums dot products that torch
/// adds in BLAS's order); `0` is `json_equal`.
pub fn json_close(a: &Value, b: &Value, rel_tol: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= rel_tol * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y, rel_tol))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w, rel_tol)))
        }
        _ => a == b,
    }
}

/// The tolerance of the numbers in a param group: exact, but for
/// Prodigy's D estimate (`d`, `d_numerator`, ...), whose dot products torch
/// adds in BLAS's order; its numerator is a sum of terms of either sign, so
/// it is held to a looser bound than the parameters.
pub fn group_tolerance(name: &str, case: &Case) -> f64 {
    if name == "prodigy" {
        PRODIGY_GROUP_TOLERANCE * tolerance(&case.dtype) / tolerance("float32")
    } else {
        0.0
    }
}

/// Prodigy's group tolerance in float32 (see [`group_tolerance`]).
pub const PRODIGY_GROUP_TOLERANCE: f64 = 1e-5;

/// Whether `case` is SGD with sparse gradients and momentum: torch keeps
/// that buffer as an uncoalesced sparse tensor and adds its entries one by
/// one, ferroptim keeps it dense, so the same sums round in another order
/// (within the tolerance, not to the bit; see `optim/sgd.rs`).
pub fn sparse_sgd_with_momentum(name: &str, case: &Case) -> bool {
    let momentum = case.kwargs.get("momentum").and_then(Value::as_f64);
    name == "sgd" && case.desc.starts_with("sparse grads: ") && momentum > Some(0.0)
}

/// The tolerance the issue sets for a dtype.
/// Muon's tolerance per tensor, whatever the dtype: its update is rounded to
/// bfloat16 by matrix products whose float32 summation order is oneDNN's (see
/// `Expect::BFloat16Update` in parity.rs).
pub const MUON_TOLERANCE: f64 = 2e-4;

/// SOAP's tolerance per tensor, relative to its largest magnitude: its bases
/// are refreshed by a QR in float32 whatever the dtype (as in the
/// reference), whose rounding is faer's, not LAPACK's, so float64 agrees to
/// float32's precision (measured in tests/integration/soap.rs: 1.0·10⁻⁷
/// float32, 4.1·10⁻⁸ float64).
pub fn soap_tolerance(dtype: &str) -> f64 {
    match dtype {
        "float32" => 3e-7,
        _ => 1e-7,
    }
}

/// The tolerance of a case that scales its gradients by pytorch-optimizer's
/// global norm (LAMB's `pre_norm`, Adan's `max_grad_norm`), in any dtype:
/// every gradient is scaled by one float32 factor whose `√` is MKL's, one
/// float32 ulp from ours at times, so a step's gradients can all be 10⁻⁷
/// apart (relative).
///
/// Measured: with MKL's `√` the worst case is 4.2·10⁻⁶ (float32) and
/// 7.6·10⁻⁷ (float64). With the reference's global-norm `√` replaced by the
/// correctly rounded one (a patched run of the generator, not committed),
/// every LAMB and Adan case holds 3·10⁻⁷ in float32 and 4·10⁻¹⁶ in float64:
/// the factor is the only difference.
pub const GLOBAL_NORM_TOLERANCE: f64 = 5e-6;

impl Case {
    /// Whether optimizer `name` scales this case's gradients by their global
    /// norm (see [`GLOBAL_NORM_TOLERANCE`]).
    pub fn uses_global_norm(&self, name: &str) -> bool {
        let max = self.kwargs.get("max_grad_norm").and_then(Value::as_f64);
        match name {
            // max_grad_norm defaults to 1 and takes effect with pre_norm.
            "lamb" => self.kwargs.get("pre_norm") == Some(&Value::Bool(true)) && max != Some(0.0),
            "adan" => max > Some(0.0),
            _ => false,
        }
    }
}

/// The tolerance for optimizer `name`'s results in `case`.
pub fn tolerance_for(name: &str, case: &Case) -> f64 {
    if name == "muon" {
        MUON_TOLERANCE
    } else if name == "soap" {
        soap_tolerance(&case.dtype)
    } else if case.uses_global_norm(name) {
        GLOBAL_NORM_TOLERANCE
    } else {
        tolerance(&case.dtype)
    }
}

pub fn tolerance(dtype: &str) -> f64 {
    match dtype {
        "float64" => 1e-12,
        "float32" => 1e-6,
        other => panic!("unknown dtype {other}"),
    }
}
