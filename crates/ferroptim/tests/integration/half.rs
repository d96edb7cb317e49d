//! bfloat16 and float16 parameters against torch's default CPU path
//! (tools/torch_reference/half.py): every configuration torch's
//! `optim_inputs_func_<name>` runs, replayed through ferroptim, its
//! parameters and state (kept in the parameter's dtype, as torch keeps it)
//! compared after every step in units in the last place of that dtype.
//!
//! torch computes each tensor operation of the step in `float` (Python
//! scalars as `float`) and rounds its result to the parameter's dtype;
//! ferroptim's kernels round at the same points (`Storage::round`).

use std::collections::BTreeMap;

use std::path::PathBuf;

use ferroptim::half::{bf16, f16};
use ferroptim::{Dtype, Optimizer, Param, StateDict, StateValue, Tensor};

use crate::common::{load_in, Case};

/// How far apart two values of `dtype` are, in representable values
/// between them (0: the same bits; NaN matches NaN).
fn ulps(got: f64, want: f64, dtype: Dtype) -> u64 {
    if got.is_nan() && want.is_nan() {
        return 0;
    }
    if got.is_nan() || want.is_nan() {
        return u64::MAX;
    }
    let bits = |x: f64| -> i64 {
        let b = match dtype {
            Dtype::BF16 => bf16::from_f64(x).to_bits(),
            Dtype::F16 => f16::from_f64(x).to_bits(),
            other => panic!("{other} is not a 16-bit dtype"),
        };
        // Sign-magnitude to a line on which neighbours differ by one.
        if b & 0x8000 != 0 {
            -i64::from(b & 0x7fff)
        } else {
            i64::from(b)
        }
    };
    bits(got).abs_diff(bits(want))
}

#[derive(Default)]
struct Ulps {
    values: usize,
    exact: usize,
    one_ulp: usize,
    max: u64,
    worst: String,
}

impl Ulps {
    fn tensor(&mut self, what: &str, got: &Tensor, want: &Tensor) {
        assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
        assert_eq!(got.shape(), want.shape(), "{what}: shape");
        let dtype = got.dtype();
        for (i, (x, y)) in got
            .to_f64_vec()
            .into_iter()
            .zip(want.to_f64_vec())
            .enumerate()
        {
            // A 0-d float32 `step` is compared to the bit.
            let d = if dtype.is_reduced() {
                ulps(x, y, dtype)
            } else if x.to_bits() == y.to_bits() {
                0
            } else {
                u64::MAX
            };
            self.values += 1;
            match d {
                0 => self.exact += 1,
                1 => self.one_ulp += 1,
                _ => {}
            }
            if d > self.max {
                self.max = d;
                self.worst = format!("{what} element {i}: ours {x:e}, torch {y:e}");
            }
        }
    }

    fn state(
        &mut self,
        what: &str,
        got: &BTreeMap<usize, BTreeMap<String, StateValue>>,
        want: &BTreeMap<usize, BTreeMap<String, StateValue>>,
    ) {
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what}: params with state"
        );
        for ((i, g), w) in got.iter().zip(want.values()) {
            assert_eq!(
                g.keys().collect::<Vec<_>>(),
                w.keys().collect::<Vec<_>>(),
                "{what}: state keys of {i}"
            );
            for (key, value) in g {
                let what = format!("{what} state[{i}].{key}");
                match (value, &w[key]) {
                    (StateValue::Tensor(a), StateValue::Tensor(b)) => self.tensor(&what, a, b),
                    (a, b) => assert_eq!(a, b, "{what}"),
                }
            }
        }
    }

    fn merge(&mut self, other: Ulps) {
        if other.max > self.max {
            self.max = other.max;
            self.worst = other.worst;
        }
        self.values += other.values;
        self.exact += other.exact;
        self.one_ulp += other.one_ulp;
    }
}

/// Replays every case of `half/{name}.json`; each case must agree with
/// torch to the bit on all but `max_off` of its values, and those within
/// one ulp. Returns the agreement per dtype.
fn replay(name: &str, max_off: f64) -> BTreeMap<String, Ulps> {
    replay_in("half", name, max_off)
}

/// [`replay`] for the fixtures in `tests/fixtures/{dir}`.
fn replay_in(dir: &str, name: &str, max_off: f64) -> BTreeMap<String, Ulps> {
    let fixture = load_in(dir, name);
    assert!(
        fixture.cases.len() >= 12,
        "{name}: {} cases",
        fixture.cases.len()
    );
    let mut per_dtype: BTreeMap<String, Ulps> = BTreeMap::new();
    for case in &fixture.cases {
        let agreement = replay_case(name, case);
        let off = (agreement.values - agreement.exact) as f64 / agreement.values as f64;
        assert!(
            agreement.max <= 1 && off <= max_off,
            "{name} [{}] {}: {} of {} values differ from torch ({off:.4}), by up to {} ulp; worst: {}",
            case.desc,
            case.dtype,
            agreement.values - agreement.exact,
            agreement.values,
            agreement.max,
            agreement.worst
        );
        per_dtype
            .entry(case.dtype.clone())
            .or_default()
            .merge(agreement);
    }
    for (dtype, a) in &per_dtype {
        println!(
            "{dir}/{name} {dtype}: {} configs, {} values compared, {} bit-exact, {} one ulp off, max {} ulp",
            fixture.cases.len() / per_dtype.len(),
            a.values,
            a.exact,
            a.one_ulp,
            a.max
        );
    }
    per_dtype
}

fn replay_case(name: &str, case: &Case) -> Ulps {
    let (mut opt, params) = case.build(name, &case.initial_params);
    let mut agreement = Ulps::default();
    for (i, step) in case.steps.iter().enumerate() {
        case.step(i, opt.as_mut(), &params);
        let what = format!("{name} [{}] {} step {}", case.desc, case.dtype, i + 1);
        for (j, (p, want)) in params.iter().zip(&step.params).enumerate() {
            agreement.tensor(&format!("{what} param {j}"), &p.value(), want);
        }
        agreement.state(&what, &opt.state_dict().state, &step.state);
    }
    let what = format!("{name} [{}] {} final state_dict", case.desc, case.dtype);
    let sd = opt.state_dict();
    agreement.state(&what, &sd.state, &case.state_dict_final.state);
    // The groups too: every hyperparameter, `fused` among them.
    for (g, w) in sd
        .param_groups
        .iter()
        .zip(&case.state_dict_final.param_groups)
    {
        assert!(
            crate::common::json_close(&g.clone().into(), &w.clone().into(), 1e-15),
            "{what}: param_groups differ:\n ours  {g:?}\n torch {w:?}"
        );
    }
    agreement
}

#[test]
fn ulps_count_representable_values_between() {
    assert_eq!(ulps(1.0, 1.0, Dtype::BF16), 0);
    assert_eq!(ulps(1.0, 1.0078125, Dtype::BF16), 1);
    assert_eq!(ulps(1.0, 1.0009765625, Dtype::F16), 1);
    assert_eq!(ulps(-0.0, 0.0, Dtype::BF16), 0);
    assert_eq!(ulps(f64::NAN, 1.0, Dtype::F16), u64::MAX);
}

#[test]
fn sgd_matches_torch_in_16_bits() {
    replay("sgd", 0.0);
}

#[test]
fn adam_matches_torch_in_16_bits() {
    replay("adam", 0.0);
}

#[test]
fn adamw_matches_torch_in_16_bits() {
    replay("adamw", 0.0);
}

#[test]
fn adagrad_matches_torch_in_16_bits() {
    replay("adagrad", 0.0);
}

#[test]
fn rmsprop_matches_torch_in_16_bits() {
    replay("rmsprop", 0.0);
}

#[test]
fn adadelta_matches_torch_in_16_bits() {
    replay("adadelta", 0.0);
}

#[test]
fn adamax_matches_torch_in_16_bits() {
    replay("adamax", 0.0);
}

#[test]
fn nadam_matches_torch_in_16_bits() {
    replay("nadam", 0.0);
}

#[test]
fn radam_matches_torch_in_16_bits() {
    replay("radam", 0.0);
}

/// torch's fused CPU Adam, AdamW, SGD and Adagrad (`fused=True`) in
/// float32, float64, bfloat16 and float16, selected by the config's `fused`
/// and recorded in the state_dict's groups.
#[test]
fn fused_optimizers_match_torch_in_every_dtype() {
    for name in ["adam", "adamw", "sgd", "adagrad"] {
        let per_dtype = replay_in("fused", name, 0.0);
        assert_eq!(per_dtype.len(), 4, "{name}: {:?}", per_dtype.keys());
    }
}

/// One run of `fused/{name}-grad_scale.json` (half.py grad_scale).
#[derive(serde::Deserialize)]
struct ScaledCase {
    desc: String,
    dtype: String,
    kwargs: serde_json::Value,
    grad_scale: f32,
    initial_params: Vec<Tensor>,
    steps: Vec<ScaledStep>,
}

#[derive(serde::Deserialize)]
struct ScaledStep {
    grads: Vec<Tensor>,
    found_inf: bool,
    grads_after: Vec<Tensor>,
    params: Vec<Tensor>,
    state: BTreeMap<usize, BTreeMap<String, StateValue>>,
}

/// AMP's gradient scaling as torch's fused Adam, AdamW, SGD and Adagrad
/// take it (`optimizer.grad_scale`, `optimizer.found_inf`), in every
/// dtype: scaled gradients divided inside the step and left unscaled, and
/// a step with `found_inf` that changes nothing; parameters, gradients and
/// state bit for bit after every step.
#[test]
fn fused_optimizers_take_grad_scale_and_found_inf_as_torch() {
    for name in ["adam", "adamw", "sgd", "adagrad"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/fused/{name}-grad_scale.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(fixture["torch_version"]
            .as_str()
            .unwrap()
            .starts_with("2.15"));
        let cases: Vec<ScaledCase> = serde_json::from_value(fixture["cases"].clone()).unwrap();
        assert!(cases.len() >= 24, "{name}: {} cases", cases.len());
        let mut per_dtype: BTreeMap<String, Ulps> = BTreeMap::new();
        for case in &cases {
            let params: Vec<Param> = case
                .initial_params
                .iter()
                .cloned()
                .map(Param::new)
                .collect();
            let kwargs = case.kwargs.to_string();
            let mut opt = ferroptim::optim::build(name, &kwargs, params.clone()).unwrap();
            let mut agreement = Ulps::default();
            assert!(case.steps.iter().any(|s| s.found_inf));
            for (i, step) in case.steps.iter().enumerate() {
                for (p, g) in params.iter().zip(&step.grads) {
                    p.set_grad(g.clone()).unwrap();
                }
                opt.step_scaled(Some(case.grad_scale), step.found_inf)
                    .unwrap_or_else(|e| panic!("{name} [{}] {}: {e}", case.desc, case.dtype));
                let what = format!("{name} [{}] {} step {}", case.desc, case.dtype, i + 1);
                for (j, p) in params.iter().enumerate() {
                    agreement.tensor(&format!("{what} param {j}"), &p.value(), &step.params[j]);
                    let Some(ferroptim::Grad::Dense(grad)) = p.grad() else {
                        panic!("{what}: no dense gradient");
                    };
                    agreement.tensor(&format!("{what} grad {j}"), &grad, &step.grads_after[j]);
                }
                agreement.state(&what, &opt.state_dict().state, &step.state);
            }
            assert_eq!(agreement.exact, agreement.values, "{}", agreement.worst);
            per_dtype
                .entry(case.dtype.clone())
                .or_default()
                .merge(agreement);
        }
        for (dtype, a) in &per_dtype {
            println!(
                "fused/{name}-grad_scale {dtype}: {} values, {} bit-exact",
                a.values, a.exact
            );
        }
        assert_eq!(per_dtype.len(), 4, "{name}");
    }
}

fn dense_grad(p: &Param) -> Vec<f32> {
    match p.grad() {
        Some(ferroptim::Grad::Dense(g)) => g.as_slice::<f32>().unwrap().to_vec(),
        other => panic!("not a dense gradient: {other:?}"),
    }
}

/// Gradient scaling is for torch's fused kernels: elsewhere (an unfused
/// group, a float32 mode's group, LBFGS) and with a scale that is not finite
/// and positive it is a typed error, and nothing changes.
#[test]
fn grad_scaling_elsewhere_is_a_typed_error() {
    use ferroptim::optim::{self, Lbfgs, LbfgsConfig};
    use ferroptim::{Error, GroupSpec};
    let p = Param::zeros::<f32>(&[2]);
    p.set_grad(Tensor::from_vec(vec![2.0f32, 4.0], &[2]).unwrap())
        .unwrap();
    let refused = |opt: &mut dyn Optimizer| {
        let before = opt.state_dict();
        let err = opt.step_scaled(Some(2.0), false).unwrap_err();
        assert!(
            matches!(err, Error::GradScalingUnsupported { .. }),
            "{}: {err}",
            opt.name()
        );
        assert!(err.to_string().contains("fused=True"), "{err}");
        assert_eq!(opt.state_dict(), before);
        assert_eq!(p.to_vec::<f32>().unwrap(), [0.0, 0.0]);
        assert_eq!(dense_grad(&p), [2.0, 4.0]);
    };
    refused(&mut *optim::build("adam", "{}", [p.clone()]).unwrap());
    refused(&mut *optim::build("lion", "{}", [p.clone()]).unwrap());
    refused(&mut Lbfgs::new([p.clone()], LbfgsConfig::default()).unwrap());
    let half = Param::new(Tensor::from_vec(vec![bf16::from_f32(1.0)], &[1]).unwrap());
    let group = GroupSpec::new([half]).set("master_weights", true);
    refused(&mut *optim::build("adam", r#"{"fused": true}"#, vec![group]).unwrap());
    let mut fused = optim::build("sgd", r#"{"fused": true}"#, [p.clone()]).unwrap();
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = fused.step_scaled(Some(bad), false).unwrap_err();
        assert!(err.to_string().contains("grad_scale"), "{bad}: {err}");
        assert_eq!(p.to_vec::<f32>().unwrap(), [0.0, 0.0]);
    }
    // Without a scale it is a fused step, unscaled.
    fused.step_scaled(None, false).unwrap();
    assert_eq!(dense_grad(&p), [2.0, 4.0]);
    assert!(p.to_vec::<f32>().unwrap()[1] < 0.0);
}

#[test]
fn asgd_matches_torch_in_16_bits() {
    replay("asgd", 0.0);
}

#[test]
fn rprop_matches_torch_in_16_bits() {
    replay("rprop", 0.0);
}

/// Parameters equal to the bit to what torch had after `step`.
fn assert_params_bit_exact(what: &str, params: &[Param], want: &[Tensor]) {
    let mut agreement = Ulps::default();
    for (j, (p, want)) in params.iter().zip(want).enumerate() {
        agreement.tensor(&format!("{what} param {j}"), &p.value(), want);
    }
    assert_eq!(
        agreement.exact, agreement.values,
        "{what}: {}",
        agreement.worst
    );
}

/// Replays steps `from..` of `case` on `opt`, which holds the state after
/// step `from`, and checks each step's parameters against torch's.
fn continue_from(name: &str, case: &Case, from: usize, opt: &mut dyn Optimizer, params: &[Param]) {
    for i in from..case.steps.len() {
        case.step(i, opt, params);
        let what = format!(
            "{name} [{}] {} resumed, step {}",
            case.desc,
            case.dtype,
            i + 1
        );
        assert_params_bit_exact(&what, params, &case.steps[i].params);
    }
}

/// torch's own `torch.save`d state_dict of 16-bit parameters (`BFloat16Storage`,
/// `HalfStorage`) loads, keeps its dtype, and continues as torch continued; and
/// ferroptim's state_dict of that state, through JSON and through safetensors,
/// continues the same way.
#[test]
fn torch_saved_16_bit_state_resumes_where_torch_left_off() {
    for name in [
        "sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta", "adamax", "nadam", "radam",
        "asgd", "rprop",
    ] {
        let fixture = load_in("half", name);
        let saved: Vec<&Case> = fixture
            .cases
            .iter()
            .filter(|c| c.saved_mid.is_some())
            .collect();
        assert_eq!(saved.len(), 2, "{name}: one saved run per dtype");
        for case in saved {
            let mid = case.mid_step;
            let file = case.saved_mid.as_deref().unwrap();
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/half")
                .join(file);
            let sd = StateDict::load_torch(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            let dtypes: Vec<String> = sd
                .state
                .values()
                // `step`, NAdam's `mu_product` and ASGD's `eta` and `mu` are float32 scalars in every dtype.
                .flat_map(|s| {
                    s.iter()
                        .filter(|(k, _)| !["step", "mu_product", "eta", "mu"].contains(&k.as_str()))
                })
                .filter_map(|(_, v)| match v {
                    StateValue::Tensor(t) => Some(t.dtype().to_string()),
                    _ => None,
                })
                .collect();
            assert!(
                !dtypes.is_empty() && dtypes.iter().all(|d| *d == case.dtype),
                "{file}: {dtypes:?}"
            );
            let (mut opt, params) = case.build(name, &case.steps[mid - 1].params);
            opt.load_state_dict(&sd)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let ours = opt.state_dict();
            continue_from(name, case, mid, opt.as_mut(), &params);

            let json: StateDict =
                serde_json::from_str(&serde_json::to_string(&ours).unwrap()).unwrap();
            let bytes = ours.to_safetensors().unwrap();
            let safetensors = StateDict::from_safetensors(&bytes).unwrap();
            for (how, sd) in [("json", json), ("safetensors", safetensors)] {
                assert_eq!(sd.state, ours.state, "{file} through {how}");
                let (mut opt, params) = case.build(name, &case.steps[mid - 1].params);
                opt.load_state_dict(&sd).unwrap();
                continue_from(name, case, mid, opt.as_mut(), &params);
            }
        }
    }
}

fn bf16_param(values: &[f32], shape: &[usize]) -> Param {
    let values = values.iter().map(|&x| bf16::from_f32(x)).collect();
    Param::new(Tensor::from_vec(values, shape).unwrap())
}

fn bf16_tensor(values: &[f32]) -> Tensor {
    let values: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
    let n = values.len();
    Tensor::from_vec(values, &[n]).unwrap()
}

/// An optimizer that does not step 16-bit parameters refuses one when it is
/// handed it (constructor or add_param_group), naming the parameter and the
/// dtypes, and the optimizer is unchanged.
#[test]
fn optimizers_without_a_16_bit_path_refuse_16_bit_parameters() {
    use ferroptim::optim::{self, Lbfgs, LbfgsConfig, Lookahead, LookaheadConfig};
    use ferroptim::{Error, GroupSpec};
    let f32_param = Param::zeros::<f32>(&[2]);
    let err = optim::build(
        "lamb",
        "{}",
        vec![GroupSpec::new([
            f32_param.clone(),
            bf16_param(&[1.0], &[1]),
        ])],
    )
    .err()
    .expect("Lamb steps 16-bit parameters only in a float32 mode's group");
    assert!(
        matches!(&err, Error::DtypeUnsupported { what, dtype: Dtype::BF16, refused_by: "Lamb", .. } if what == "parameter 1"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "parameter 1 has dtype bfloat16, which Lamb does not take (it takes float32 and float64; \
         bfloat16 and float16 in a group with master_weights or kahan_summation, bfloat16 with \
         stochastic_rounding)"
    );
    let mut opt = optim::build("lamb", "{}", vec![GroupSpec::new([f32_param])]).unwrap();
    let half = Param::new(Tensor::zeros(Dtype::F16, &[3]));
    let err = opt
        .add_param_group(GroupSpec::new([half.clone()]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DtypeUnsupported {
                dtype: Dtype::F16,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(opt.num_param_groups(), 1);
    let err = Lbfgs::new([half.clone()], LbfgsConfig::default())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::DtypeUnsupported {
                refused_by: "LBFGS",
                ..
            }
        ),
        "{err}"
    );
    let err = Lookahead::new(
        [half],
        optim::SgdConfig::default(),
        LookaheadConfig::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            Error::DtypeUnsupported {
                refused_by: "Lookahead",
                ..
            }
        ),
        "{err}"
    );
}

/// What cannot run in 16 bits (a gradient of another dtype, a clip of
/// 16-bit gradients, a step with a sparse 16-bit gradient) is refused before
/// any parameter, gradient or state changes.
#[test]
fn bad_16_bit_steps_change_nothing() {
    use ferroptim::optim::{Sgd, SgdConfig};
    use ferroptim::{clip, Error, SparseGrad};
    let a = bf16_param(&[1.0, 2.0], &[2]);
    let b = bf16_param(&[3.0, 4.0], &[2]);
    a.set_grad(bf16_tensor(&[0.5, 0.5])).unwrap();
    let err = b
        .set_grad(Tensor::from_vec(vec![0.5f32, 0.5], &[2]).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gradient has dtype float32, expected bfloat16"
    );
    assert_eq!(b.grad(), None);
    let before = (a.value(), b.value());

    let err = clip::clip_grad_norm(std::slice::from_ref(&a), 0.1, 2.0, false).unwrap_err();
    assert!(matches!(err, Error::DtypeUnsupported { .. }), "{err}");
    assert_eq!(
        a.grad(),
        Some(ferroptim::Grad::Dense(bf16_tensor(&[0.5, 0.5])))
    );

    let mut sgd = Sgd::new(
        [a.clone(), b.clone()],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    b.set_grad(bf16_tensor(&[1.0, 1.0])).unwrap();
    b.set_sparse_grad(SparseGrad::new(vec![0], bf16_tensor(&[1.0])).unwrap())
        .unwrap();
    let err = sgd.step().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sparse gradient of parameter 1 has dtype bfloat16, which SGD does not take \
         (it takes float32 and float64 for sparse gradients)"
    );
    assert_eq!((a.value(), b.value()), before);
    assert!(sgd.state_dict().state.is_empty());
}
