//! LBFGS against torch (tools/torch_reference/lbfgs.py): the same objectives,
//! written with the same formulas, minimized from the same start. The iterate,
//! the returned loss and the state must agree after every `step`, and the
//! closure must be called exactly as many times as torch called it.

use std::cell::Cell;
use std::rc::Rc;

use crate::common::{compare_tensor_in, json_equal, Agreement, Scales};
use ferroptim::optim::{Lbfgs, LbfgsConfig};
use ferroptim::{optim, Element, Optimizer, Param, StateDict, StateValue, Tensor};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixture {
    torch_version: String,
    problems: Problems,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Problems {
    logistic: LogisticData,
}

#[derive(Deserialize)]
struct LogisticData {
    l2: f64,
    x: std::collections::BTreeMap<String, Tensor>,
    y: std::collections::BTreeMap<String, Tensor>,
}

#[derive(Deserialize)]
struct Case {
    desc: String,
    problem: String,
    dtype: String,
    kwargs: Value,
    initial_params: Vec<Tensor>,
    steps: Vec<Step>,
    mid_step: usize,
    state_dict_mid: StateDict,
    state_dict_final: StateDict,
}

#[derive(Deserialize)]
struct Step {
    loss: f64,
    closure_calls: usize,
    params: Vec<Tensor>,
    state: std::collections::BTreeMap<String, StateValue>,
}

fn load() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lbfgs.json");
    let text = std::fs::read_to_string(path).expect("lbfgs fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("lbfgs fixture JSON");
    assert!(fixture.torch_version.starts_with("2.15"));
    fixture
}

/// exp and log1p, which the logistic loss needs in the parameters' dtype.
trait Float: Element {
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
}

impl Float for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln_1p(self) -> Self {
        f32::ln_1p(self)
    }
}

impl Float for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
}

/// A closure evaluating `problem` at `params` (setting their gradients),
/// counting its calls; negated when maximizing, as the generator does.
type Closure = Box<dyn FnMut() -> ferroptim::Result<f64>>;

fn rosenbrock(params: Vec<Param>, sign: f64, calls: Rc<Cell<usize>>) -> Closure {
    Box::new(move || {
        calls.set(calls.get() + 1);
        let mut x = params[0].to_vec::<f64>()?;
        x.extend(params[1].to_vec::<f64>()?);
        let (mut f, mut g) = (0.0, [0.0f64; 4]);
        for i in 0..3 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * (a * a) + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        params[0].set_grad(Tensor::from_vec(vec![sign * g[0], sign * g[1]], &[2])?)?;
        params[1].set_grad(Tensor::from_vec(vec![sign * g[2], sign * g[3]], &[2])?)?;
        Ok(sign * f)
    })
}

fn logistic<T: Float>(
    params: Vec<Param>,
    data: &LogisticData,
    dtype: &str,
    sign: f64,
    calls: Rc<Cell<usize>>,
) -> Closure {
    let x = data.x[dtype].as_slice::<T>().unwrap().to_vec();
    let y = data.y[dtype].as_slice::<T>().unwrap().to_vec();
    let (n, l2) = (y.len(), T::from_f64(data.l2));
    let d = x.len() / n;
    let (half_l2, count) = (T::from_f64(0.5 * data.l2), T::from_f64(n as f64));
    Box::new(move || {
        calls.set(calls.get() + 1);
        let (w, b) = (params[0].to_vec::<T>()?, params[1].to_vec::<T>()?[0]);
        let z: Vec<T> = (0..n)
            .map(|i| (0..d).fold(T::ZERO, |acc, j| x[i * d + j].mul_add(w[j], acc)) + b)
            .collect();
        let softplus = |z: T| {
            if z > T::from_f64(20.0) {
                z
            } else {
                z.exp().ln_1p()
            }
        };
        let data_loss = z
            .iter()
            .zip(&y)
            .fold(T::ZERO, |acc, (&z, &y)| acc + (softplus(z) - y * z));
        let penalty = w.iter().fold(T::ZERO, |acc, &w| acc + w * w);
        let loss = data_loss / count + half_l2 * penalty;
        let r: Vec<T> = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| (T::ONE / (T::ONE + (-z).exp()) - y) / count)
            .collect();
        let s = T::from_f64(sign);
        let gw: Vec<T> = (0..d)
            .map(|j| {
                s * ((0..n).fold(T::ZERO, |acc, i| x[i * d + j].mul_add(r[i], acc)) + l2 * w[j])
            })
            .collect();
        let gb = s * r.iter().fold(T::ZERO, |acc, &r| acc + r);
        params[0].set_grad(Tensor::from_vec(gw, &[d])?)?;
        params[1].set_grad(Tensor::from_vec(vec![gb], &[1])?)?;
        Ok(sign * loss.to_f64())
    })
}

impl Case {
    fn build(&self, data: &Problems, values: &[Tensor]) -> (Lbfgs, Closure, Rc<Cell<usize>>) {
        let params: Vec<Param> = values.iter().map(|t| Param::new(t.clone())).collect();
        let config: LbfgsConfig = serde_json::from_value(self.kwargs.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", self.desc));
        let opt =
            Lbfgs::new(params.clone(), config).unwrap_or_else(|e| panic!("{}: {e}", self.desc));
        let sign = if self.kwargs.get("maximize") == Some(&Value::Bool(true)) {
            -1.0
        } else {
            1.0
        };
        let calls = Rc::new(Cell::new(0));
        let closure = match (self.problem.as_str(), self.dtype.as_str()) {
            ("rosenbrock", _) => rosenbrock(params, sign, calls.clone()),
            ("logistic", "float32") => {
                logistic::<f32>(params, &data.logistic, "float32", sign, calls.clone())
            }
            ("logistic", _) => {
                logistic::<f64>(params, &data.logistic, "float64", sign, calls.clone())
            }
            (other, _) => panic!("unknown problem {other}"),
        };
        (opt, closure, calls)
    }

    fn tolerance(&self) -> f64 {
        match self.dtype.as_str() {
            "float64" => 1e-10,
            _ => 1e-5,
        }
    }
}

fn as_numbers(v: &StateValue) -> Vec<f64> {
    match v {
        StateValue::Int(i) => vec![*i as f64],
        StateValue::Float(x) => vec![*x],
        StateValue::Tensor(t) => t.to_f64_vec(),
        StateValue::TensorList(list) => list.iter().flat_map(Tensor::to_f64_vec).collect(),
    }
}

/// Steps `range` of a case, comparing with torch after each.
fn replay(
    case: &Case,
    opt: &mut Lbfgs,
    closure: &mut Closure,
    calls: &Cell<usize>,
    range: std::ops::Range<usize>,
) -> Agreement {
    let mut agreement = Agreement::default();
    let mut scales = Scales::default();
    let mut state_scales = std::collections::BTreeMap::<String, f64>::new();
    for i in range {
        let want = &case.steps[i];
        let what = format!(
            "lbfgs [{}] {} {} step {}",
            case.desc,
            case.problem,
            case.dtype,
            i + 1
        );
        let before = calls.get();
        let loss = opt
            .step_with_closure(closure.as_mut())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            calls.get() - before,
            want.closure_calls,
            "{what}: closure calls"
        );
        let scale = want.loss.abs().max(1e-300);
        assert!(
            (loss - want.loss).abs() / scale <= case.tolerance() * 10.0
                || (loss - want.loss).abs() < 1e-12,
            "{what}: loss {loss} vs torch {}",
            want.loss
        );
        for (j, (p, w)) in opt.params().iter().zip(&want.params).enumerate() {
            agreement.merge(compare_tensor_in(
                &mut scales,
                &format!("param {j}"),
                &format!("{what} param {j}"),
                &p.value(),
                w,
            ));
        }
        let sd = opt.state_dict();
        let ours = &sd.state[&0];
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            want.state.keys().collect::<Vec<_>>(),
            "{what}: state keys"
        );
        for key in ["func_evals", "n_iter"] {
            assert_eq!(
                as_numbers(&ours[key]),
                as_numbers(&want.state[key]),
                "{what}: {key}"
            );
        }
        // In float32 the closure's own rounding (BLAS order, exp) leaves the
        // gradient near the optimum with ~1e-8 of noise, which the history
        // (y = Δg, ro = 1/yᵀs) amplifies to ~1e-3: there the iterates, the loss
        // and the counts are compared, the flat vectors only in float64.
        for (key, value) in ours.iter().filter(|_| case.dtype == "float64") {
            let (got, exp) = (as_numbers(value), as_numbers(&want.state[key]));
            assert_eq!(got.len(), exp.len(), "{what}: {key} length");
            let here = exp.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let scale = state_scales.entry(key.clone()).or_insert(0.0);
            *scale = scale.max(here);
            let diff = got
                .iter()
                .zip(&exp)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            let rel = if diff == 0.0 { 0.0 } else { diff / *scale };
            if rel > agreement.max_norm_rel {
                agreement.max_norm_rel = rel;
                agreement.worst = format!("{what} state {key}: {rel:e}");
            }
        }
    }
    assert!(
        agreement.max_norm_rel <= case.tolerance(),
        "lbfgs [{}] {} {}: relative error {:e} (worst element: {})",
        case.desc,
        case.problem,
        case.dtype,
        agreement.max_norm_rel,
        agreement.worst
    );
    agreement
}

#[test]
fn lbfgs_matches_torch_iterates_and_closure_calls() {
    let fixture = load();
    let mut worst = std::collections::BTreeMap::<String, f64>::new();
    for case in &fixture.cases {
        let (mut opt, mut closure, calls) = case.build(&fixture.problems, &case.initial_params);
        let a = replay(case, &mut opt, &mut closure, &calls, 0..case.steps.len());
        let sd = opt.state_dict();
        let want = &case.state_dict_final;
        assert!(
            json_equal(
                &sd.param_groups[0].clone().into(),
                &want.param_groups[0].clone().into()
            ),
            "[{}] param_groups:\n ours  {:?}\n torch {:?}",
            case.desc,
            sd.param_groups[0],
            want.param_groups[0]
        );
        let e = worst
            .entry(format!("{} {}", case.problem, case.dtype))
            .or_default();
        *e = e.max(a.max_norm_rel);
    }
    for (k, v) in worst {
        println!("lbfgs {k}: max relative error {v:e}");
    }
}

#[test]
fn lbfgs_resumes_from_torch_state_dict_like_torch() {
    let fixture = load();
    for case in &fixture.cases {
        let mid = case.mid_step;
        let (mut opt, mut closure, calls) =
            case.build(&fixture.problems, &case.steps[mid - 1].params);
        opt.load_state_dict(&case.state_dict_mid)
            .unwrap_or_else(|e| panic!("[{}] {e}", case.desc));
        replay(case, &mut opt, &mut closure, &calls, mid..case.steps.len());
    }
}

#[test]
fn lbfgs_resumes_from_a_torch_save_checkpoint_like_torch() {
    // tools/torch_reference/checkpoints.py saved cases 0 and 1 with torch.save at mid_step.
    let fixture = load();
    for (i, case) in fixture.cases[..2].iter().enumerate() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/torch_pt/lbfgs-{i}.pt"));
        let sd = StateDict::load_torch(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mid = case.mid_step;
        let (mut opt, mut closure, calls) =
            case.build(&fixture.problems, &case.steps[mid - 1].params);
        opt.load_state_dict(&sd)
            .unwrap_or_else(|e| panic!("[{}] {e}", case.desc));
        replay(case, &mut opt, &mut closure, &calls, mid..case.steps.len());
    }
}

#[test]
fn a_json_round_trip_midway_changes_nothing() {
    let fixture = load();
    for case in &fixture.cases {
        let n = case.steps.len();
        let (mut straight, mut closure, _) = case.build(&fixture.problems, &case.initial_params);
        for _ in 0..n {
            straight.step_with_closure(closure.as_mut()).unwrap();
        }
        let (mut first, mut closure, _) = case.build(&fixture.problems, &case.initial_params);
        for _ in 0..n / 2 {
            first.step_with_closure(closure.as_mut()).unwrap();
        }
        let json = first.state_dict().to_json().unwrap();
        let values: Vec<Tensor> = first.params().iter().map(Param::value).collect();
        let (mut resumed, mut closure, _) = case.build(&fixture.problems, &values);
        resumed
            .load_state_dict(&StateDict::from_json(&json).unwrap())
            .unwrap();
        for _ in n / 2..n {
            resumed.step_with_closure(closure.as_mut()).unwrap();
        }
        for (a, b) in straight.params().iter().zip(resumed.params()) {
            assert_eq!(
                a.value(),
                b.value(),
                "[{}] {} {}",
                case.desc,
                case.problem,
                case.dtype
            );
        }
        assert_eq!(
            straight.state_dict(),
            resumed.state_dict(),
            "[{}]",
            case.desc
        );
    }
}

fn quadratic_closure(p: &Param, fail_after: Option<usize>) -> Closure {
    let (p, calls) = (p.clone(), Rc::new(Cell::new(0)));
    Box::new(move || {
        calls.set(calls.get() + 1);
        if fail_after.is_some_and(|n| calls.get() > n) {
            return Err(ferroptim::Error::closure(std::io::Error::other(
                "data loader died",
            )));
        }
        let v = p.to_vec::<f64>()?;
        p.set_grad(Tensor::from_vec(
            v.iter().map(|x| 2.0 * (x - 1.0)).collect(),
            &[v.len()],
        )?)?;
        Ok(v.iter().map(|x| (x - 1.0) * (x - 1.0)).sum())
    })
}

#[test]
fn lbfgs_refuses_what_it_cannot_do_with_typed_errors() {
    use ferroptim::optim::{Lbfgs, LbfgsConfig};
    use ferroptim::{Error, GroupSpec};
    let p = Param::from_vec(vec![0.0f64, 3.0], &[2]).unwrap();
    let mut opt = Lbfgs::new([p.clone()], LbfgsConfig::default()).unwrap();
    assert_eq!(
        opt.hyperparameter(0, "max_eval"),
        Some(serde_json::json!(25))
    );
    assert!(matches!(
        opt.step(),
        Err(Error::ClosureRequired { optimizer: "LBFGS" })
    ));
    assert!(matches!(
        opt.add_param_group(GroupSpec::new([Param::zeros::<f64>(&[1])])),
        Err(Error::InvalidConfig { .. })
    ));
    let groups = [
        GroupSpec::new([Param::zeros::<f64>(&[1])]),
        GroupSpec::new([Param::zeros::<f64>(&[1])]),
    ];
    let err = Lbfgs::new(groups, LbfgsConfig::default()).unwrap_err();
    assert!(err.to_string().contains("parameter groups"), "{err}");
    let mixed = [Param::zeros::<f64>(&[1]), Param::zeros::<f32>(&[1])];
    assert!(matches!(
        Lbfgs::new(mixed, LbfgsConfig::default()),
        Err(Error::DtypeMismatch { .. })
    ));
    let zero_history = LbfgsConfig {
        history_size: 0,
        ..Default::default()
    };
    assert!(matches!(
        Lbfgs::new([p.clone()], zero_history),
        Err(Error::InvalidHyperparameter {
            name: "history_size",
            ..
        })
    ));
    let err = optim::build("lbfgs", r#"{"line_search_fn": "backtracking"}"#, [p])
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::InvalidConfig { .. }) && err.to_string().contains("backtracking"),
        "{err}"
    );
}

#[test]
fn a_failing_closure_leaves_parameters_and_state_as_they_were() {
    use ferroptim::optim::{Lbfgs, LbfgsConfig, LineSearch};
    for line_search_fn in [None, Some(LineSearch::StrongWolfe)] {
        let p = Param::from_vec(vec![0.0f64, 3.0], &[2]).unwrap();
        let config = LbfgsConfig {
            line_search_fn,
            max_iter: 1,
            ..Default::default()
        };
        let mut opt = Lbfgs::new([p.clone()], config).unwrap();
        opt.step_with_closure(quadratic_closure(&p, None).as_mut())
            .unwrap();
        opt.set_hyperparameter(0, "max_iter", serde_json::json!(3))
            .unwrap();
        let (value, state) = (p.value(), opt.state_dict());
        // Fails on its second call, with the parameters moved along the direction.
        let err = opt
            .step_with_closure(quadratic_closure(&p, Some(1)).as_mut())
            .unwrap_err();
        assert!(err.to_string().contains("data loader died"), "{err}");
        assert_eq!(p.value(), value, "{line_search_fn:?}");
        assert_eq!(opt.state_dict(), state, "{line_search_fn:?}");
    }
}

#[test]
fn a_broken_lbfgs_state_dict_is_refused_and_changes_nothing() {
    use ferroptim::optim::{Lbfgs, LbfgsConfig};
    let p = Param::from_vec(vec![0.0f64, 3.0], &[2]).unwrap();
    let mut opt = Lbfgs::new([p.clone()], LbfgsConfig::default()).unwrap();
    opt.step_with_closure(quadratic_closure(&p, None).as_mut())
        .unwrap();
    let good = opt.state_dict();
    type Breaker = Box<dyn Fn(&mut StateDict)>;
    let breakers: Vec<(&str, Breaker)> = vec![
        (
            "state under another index",
            Box::new(|sd: &mut StateDict| {
                let s = sd.state.remove(&0).unwrap();
                sd.state.insert(1, s);
            }),
        ),
        (
            "no direction although n_iter > 0",
            Box::new(|sd: &mut StateDict| {
                sd.state.get_mut(&0).unwrap().remove("d");
            }),
        ),
        (
            "a direction of the wrong length",
            Box::new(|sd: &mut StateDict| {
                sd.state.get_mut(&0).unwrap().insert(
                    "d".into(),
                    StateValue::Tensor(Tensor::from_vec(vec![1.0f64; 3], &[3]).unwrap()),
                );
            }),
        ),
        (
            "ro shorter than the history",
            Box::new(|sd: &mut StateDict| {
                sd.state
                    .get_mut(&0)
                    .unwrap()
                    .insert("ro".into(), StateValue::TensorList(vec![]));
            }),
        ),
        (
            // A NaN loss is not broken: torch keeps it, and so must a checkpoint.
            "a loss that is not a number",
            Box::new(|sd: &mut StateDict| {
                sd.state
                    .get_mut(&0)
                    .unwrap()
                    .insert("prev_loss".into(), StateValue::TensorList(vec![]));
            }),
        ),
        (
            "an unknown key",
            Box::new(|sd: &mut StateDict| {
                sd.state
                    .get_mut(&0)
                    .unwrap()
                    .insert("momentum".into(), StateValue::Int(1));
            }),
        ),
        (
            "two groups",
            Box::new(|sd: &mut StateDict| {
                let g = sd.param_groups[0].clone();
                sd.param_groups.push(g);
            }),
        ),
    ];
    for (what, breaker) in breakers {
        let mut broken = good.clone();
        breaker(&mut broken);
        assert!(opt.load_state_dict(&broken).is_err(), "{what} was accepted");
        assert_eq!(opt.state_dict(), good, "{what} changed the optimizer");
    }
    opt.load_state_dict(&good).unwrap();
}
