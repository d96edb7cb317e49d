//! Every schedule torch ran (tools/torch_reference/schedulers.py) replayed
//! through ferroptim's `lr_scheduler`: each group's lr and momentum after
//! construction and after each of 250 steps, within 1e-12 (relative), and a
//! resume at step 120 from torch's own scheduler state_dict and from ours.

use std::path::PathBuf;

use ferroptim::lr_scheduler::*;
use ferroptim::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use ferroptim::swa_utils::SWALR;
use ferroptim::{Error, GroupSpec, Optimizer, Param};
use serde::Deserialize;
use serde_json::{Map, Value};

const TOLERANCE: f64 = 1e-12;

#[derive(Deserialize)]
struct Fixture {
    metrics: Vec<f64>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    optimizer: String,
    spec: Value,
    values: Vec<Snapshot>,
    mid: usize,
    state_dict_mid: Map<String, Value>,
    resumed: Vec<Snapshot>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Snapshot {
    lr: Vec<f64>,
    momentum: Vec<f64>,
    last_lr: Vec<f64>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lr_scheduler.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The same functions as `LAMBDAS` in schedulers.py.
fn lambda(name: &str) -> LrLambda {
    match name {
        "exp95" => LrLambda::new(|e| 0.95f64.powf(e as f64)),
        "inverse" => LrLambda::new(|e| 1.0 / (1.0 + 0.05 * e as f64)),
        "const97" => LrLambda::new(|_| 0.97),
        "halve_every_10" => LrLambda::new(|e| if e % 10 == 0 { 0.5 } else { 1.0 }),
        other => panic!("no lambda {other}"),
    }
}

fn optimizer(name: &str) -> Box<dyn Optimizer> {
    let p = || Param::zeros::<f32>(&[2]);
    match name {
        "sgd" => {
            let groups = [GroupSpec::new([p()]), GroupSpec::new([p()]).set("lr", 0.05)];
            let config = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            };
            Box::new(Sgd::new(groups, config).unwrap())
        }
        "adam" => {
            let groups = [GroupSpec::new([p()]), GroupSpec::new([p()]).set("lr", 0.02)];
            let config = AdamConfig {
                lr: 0.01,
                ..Default::default()
            };
            Box::new(Adam::new(groups, config).unwrap())
        }
        other => panic!("no optimizer {other}"),
    }
}

enum Sched {
    Epoch(Box<dyn LrScheduler>),
    Plateau(ReduceLROnPlateau),
}

impl Sched {
    fn step(&mut self, opt: &mut dyn Optimizer, metric: f64) {
        match self {
            Sched::Epoch(s) => s.step(opt).unwrap(),
            Sched::Plateau(s) => s.step(opt, metric).unwrap(),
        }
    }
    fn last_lr(&self) -> Vec<f64> {
        match self {
            Sched::Epoch(s) => s.get_last_lr().to_vec(),
            Sched::Plateau(s) => s.get_last_lr().to_vec(),
        }
    }
    fn state_dict(&self) -> Map<String, Value> {
        match self {
            Sched::Epoch(s) => s.state_dict(),
            Sched::Plateau(s) => s.state_dict(),
        }
    }
    fn load_state_dict(&mut self, sd: &Map<String, Value>) -> ferroptim::Result<()> {
        match self {
            Sched::Epoch(s) => s.load_state_dict(sd),
            Sched::Plateau(s) => s.load_state_dict(sd),
        }
    }
}

fn config<T: serde::de::DeserializeOwned>(kwargs: &Value) -> T {
    serde_json::from_value(kwargs.clone()).unwrap_or_else(|e| panic!("{kwargs}: {e}"))
}

fn lambdas(v: &Value) -> Vec<LrLambda> {
    match v {
        Value::String(s) => vec![lambda(s)],
        Value::Array(names) => names.iter().map(|n| lambda(n.as_str().unwrap())).collect(),
        other => panic!("lr_lambda {other}"),
    }
}

fn build_epoch(spec: &Value, opt: &mut dyn Optimizer) -> Box<dyn LrScheduler> {
    if let Some(children) = spec.get("chained") {
        let children = children
            .as_array()
            .unwrap()
            .iter()
            .map(|s| build_epoch(s, opt))
            .collect();
        return Box::new(ChainedScheduler::new(opt, children).unwrap());
    }
    if let Some(children) = spec.get("sequential") {
        let children = children
            .as_array()
            .unwrap()
            .iter()
            .map(|s| build_epoch(s, opt))
            .collect();
        let milestones = config(&spec["milestones"]);
        return Box::new(SequentialLR::new(opt, children, milestones).unwrap());
    }
    let kwargs = &spec["kwargs"];
    match spec["scheduler"].as_str().unwrap() {
        "LambdaLR" => Box::new(LambdaLR::new(opt, lambdas(&kwargs["lr_lambda"])).unwrap()),
        "MultiplicativeLR" => {
            Box::new(MultiplicativeLR::new(opt, lambdas(&kwargs["lr_lambda"])).unwrap())
        }
        "StepLR" => Box::new(StepLR::new(opt, config(kwargs)).unwrap()),
        "MultiStepLR" => Box::new(MultiStepLR::new(opt, config(kwargs)).unwrap()),
        "ConstantLR" => Box::new(ConstantLR::new(opt, config(kwargs)).unwrap()),
        "LinearLR" => Box::new(LinearLR::new(opt, config(kwargs)).unwrap()),
        "ExponentialLR" => Box::new(ExponentialLR::new(opt, config(kwargs)).unwrap()),
        "PolynomialLR" => Box::new(PolynomialLR::new(opt, config(kwargs)).unwrap()),
        "CosineAnnealingLR" => Box::new(CosineAnnealingLR::new(opt, config(kwargs)).unwrap()),
        "CosineAnnealingWarmRestarts" => {
            Box::new(CosineAnnealingWarmRestarts::new(opt, config(kwargs)).unwrap())
        }
        "OneCycleLR" => Box::new(OneCycleLR::new(opt, config(kwargs)).unwrap()),
        "SWALR" => Box::new(SWALR::new(opt, config(kwargs)).unwrap()),
        "CyclicLR" => {
            let mut kwargs = kwargs.as_object().unwrap().clone();
            let scale_fn = kwargs.remove("scale_fn");
            let mut c: CyclicLRConfig = config(&Value::Object(kwargs));
            if let Some(name) = scale_fn {
                assert_eq!(name, "decay_by_cycle");
                c.scale_fn = Some(ScaleFn::new(|x| 1.0 / (1.0 + 0.1 * x)));
            }
            Box::new(CyclicLR::new(opt, c).unwrap())
        }
        other => panic!("no scheduler {other}"),
    }
}

fn build(spec: &Value, opt: &mut dyn Optimizer) -> Sched {
    if spec.get("scheduler").and_then(Value::as_str) == Some("ReduceLROnPlateau") {
        Sched::Plateau(ReduceLROnPlateau::new(opt, config(&spec["kwargs"])).unwrap())
    } else {
        Sched::Epoch(build_epoch(spec, opt))
    }
}

fn snapshot(opt: &dyn Optimizer, sched: &Sched) -> Snapshot {
    let groups = 0..opt.num_param_groups();
    let momentum = groups
        .clone()
        .map(|g| match opt.hyperparameter(g, "betas") {
            Some(b) => b[0].as_f64().unwrap(),
            None => opt.hyperparameter(g, "momentum").unwrap().as_f64().unwrap(),
        })
        .collect();
    Snapshot {
        lr: groups.map(|g| opt.lr(g).unwrap()).collect(),
        momentum,
        last_lr: sched.last_lr(),
    }
}

#[derive(Default)]
struct Agreement {
    values: usize,
    exact: usize,
    worst: f64,
}

impl Agreement {
    fn compare(&mut self, what: &str, ours: &Snapshot, torch: &Snapshot) {
        let pairs = [
            ("lr", &ours.lr, &torch.lr),
            ("momentum", &ours.momentum, &torch.momentum),
            ("get_last_lr", &ours.last_lr, &torch.last_lr),
        ];
        for (name, a, b) in pairs {
            assert_eq!(a.len(), b.len(), "{what} {name}");
            for (g, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
                let err = (x - y).abs() / y.abs().max(f64::MIN_POSITIVE);
                assert!(
                    err <= TOLERANCE || x == y,
                    "{what}: {name} of group {g}: ours {x:e}, torch {y:e} (relative error {err:e})"
                );
                self.values += 1;
                self.exact += usize::from(x == y);
                self.worst = self.worst.max(if x == y { 0.0 } else { err });
            }
        }
    }
}

fn describe(case: &Case) -> String {
    format!("{} on {}", case.spec, case.optimizer)
}

#[test]
fn every_schedule_matches_torch_for_250_steps() {
    let fixture = fixture();
    let mut total = Agreement::default();
    for case in &fixture.cases {
        let mut opt = optimizer(&case.optimizer);
        let mut sched = build(&case.spec, opt.as_mut());
        let what = describe(case);
        total.compare(
            &format!("{what} after construction"),
            &snapshot(opt.as_ref(), &sched),
            &case.values[0],
        );
        for (i, want) in case.values[1..].iter().enumerate() {
            sched.step(opt.as_mut(), fixture.metrics[i]);
            total.compare(
                &format!("{what} step {}", i + 1),
                &snapshot(opt.as_ref(), &sched),
                want,
            );
        }
    }
    println!(
        "{} cases, {} values, {} bit-exact, worst relative error {:e}",
        fixture.cases.len(),
        total.values,
        total.exact,
        total.worst
    );
    assert!(fixture.cases.len() >= 38);
}

/// Runs a case to its middle, then resumes it in a fresh optimizer and
/// scheduler from the optimizer's state_dict and `scheduler_state(ours, torch)`.
fn resume_each(
    scheduler_state: impl Fn(Map<String, Value>, &Map<String, Value>) -> Map<String, Value>,
) {
    let fixture = fixture();
    for case in &fixture.cases {
        let what = describe(case);
        let mut opt = optimizer(&case.optimizer);
        let mut sched = build(&case.spec, opt.as_mut());
        for i in 0..case.mid {
            sched.step(opt.as_mut(), fixture.metrics[i]);
        }
        let opt_state = opt.state_dict();
        let sched_state = scheduler_state(sched.state_dict(), &case.state_dict_mid);
        let mut opt2 = optimizer(&case.optimizer);
        let mut sched2 = build(&case.spec, opt2.as_mut());
        opt2.load_state_dict(&opt_state).unwrap();
        sched2
            .load_state_dict(&sched_state)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut agreement = Agreement::default();
        for (i, want) in (case.mid..).zip(&case.resumed) {
            sched2.step(opt2.as_mut(), fixture.metrics[i]);
            agreement.compare(
                &format!("{what} resumed, step {}", i + 1),
                &snapshot(opt2.as_ref(), &sched2),
                want,
            );
        }
        assert_eq!(agreement.values, 3 * 2 * (case.values.len() - 1 - case.mid));
    }
}

#[test]
fn a_schedule_resumes_from_torchs_state_dict() {
    resume_each(|_, torch| torch.clone());
}

#[test]
fn a_schedule_resumes_from_its_own_state_dict_through_json() {
    resume_each(|ours, _| {
        let text = serde_json::to_string(&ours).unwrap();
        serde_json::from_str(&text).unwrap()
    });
}

#[test]
fn our_state_dicts_use_torchs_keys_and_values() {
    let fixture = fixture();
    for case in &fixture.cases {
        let mut opt = optimizer(&case.optimizer);
        let mut sched = build(&case.spec, opt.as_mut());
        for i in 0..case.mid {
            sched.step(opt.as_mut(), fixture.metrics[i]);
        }
        let ours = Value::Object(sched.state_dict());
        let torch = Value::Object(case.state_dict_mid.clone());
        assert_subset(&describe(case), &ours, &torch);
    }
}

/// Every key we write is torch's, with torch's value (numbers within the tolerance).
fn assert_subset(what: &str, ours: &Value, torch: &Value) {
    match (ours, torch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let w = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: torch has no key {k:?}"));
                assert_subset(&format!("{what}.{k}"), v, w);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_subset(&format!("{what}[{i}]"), x, y);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= TOLERANCE * y.abs() || x == y,
                "{what}: ours {x}, torch {y}"
            );
        }
        (a, b) => assert_eq!(a, b, "{what}"),
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let mut opt = optimizer("sgd");
    let opt = opt.as_mut();
    let step = StepLR::new(
        opt,
        StepLRConfig {
            step_size: 0,
            gamma: 0.1,
            last_epoch: -1,
        },
    );
    assert!(matches!(
        step,
        Err(Error::Scheduler {
            scheduler: "StepLR",
            ..
        })
    ));
    let c = ConstantLRConfig {
        factor: 1.5,
        ..Default::default()
    };
    let err = ConstantLR::new(opt, c).err().unwrap();
    assert_eq!(
        err.to_string(),
        "ConstantLR: Constant multiplicative factor expected to be between 0 and 1."
    );
    let lambdas = vec![lambda("exp95"); 3];
    let err = LambdaLR::new(opt, lambdas).err().unwrap();
    assert!(
        err.to_string().contains("Expected 2 lr_lambdas, but got 3"),
        "{err}"
    );
    let mut c = OneCycleLRConfig::new(0.1, 10);
    c.pct_start = 1.5;
    assert!(OneCycleLR::new(opt, c).is_err());
    let c = ReduceLROnPlateauConfig {
        mode: "lowest".into(),
        ..Default::default()
    };
    let err = ReduceLROnPlateau::new(opt, c).err().unwrap();
    assert_eq!(
        err.to_string(),
        "ReduceLROnPlateau: mode lowest is unknown!"
    );
    // A resumed schedule needs the groups' initial_lr.
    let mut fresh = optimizer("adam");
    let err = ExponentialLR::new(
        fresh.as_mut(),
        ExponentialLRConfig {
            gamma: 0.9,
            last_epoch: 5,
        },
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("'initial_lr' is not specified in param_groups[0]"),
        "{err}"
    );
    // Cycling momentum needs an optimizer that has one.
    let mut rprop = ferroptim::optim::build("rprop", "{}", [Param::zeros::<f32>(&[1])]).unwrap();
    let err = CyclicLR::new(rprop.as_mut(), CyclicLRConfig::new(0.01, 0.1))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("must support momentum or beta1"),
        "{err}"
    );
}

#[test]
fn one_cycle_past_its_end_is_an_error_that_changes_nothing() {
    let mut opt = optimizer("sgd");
    let mut sched = OneCycleLR::new(opt.as_mut(), OneCycleLRConfig::new(0.1, 3)).unwrap();
    for _ in 0..3 {
        sched.step(opt.as_mut()).unwrap();
    }
    let (lr, last_epoch) = (opt.lr(0), sched.last_epoch());
    let err = sched.step(opt.as_mut()).unwrap_err();
    assert!(err
        .to_string()
        .contains("Tried to step 4 times. The specified number of total steps is 3"));
    assert_eq!((opt.lr(0), sched.last_epoch()), (lr, last_epoch));
}

#[test]
fn a_corrupt_state_dict_is_refused_and_changes_nothing() {
    let mut opt = optimizer("sgd");
    let mut sched = StepLR::new(
        opt.as_mut(),
        StepLRConfig {
            step_size: 3,
            gamma: 0.5,
            last_epoch: -1,
        },
    )
    .unwrap();
    sched.step(opt.as_mut()).unwrap();
    let before = sched.state_dict();
    let mut bad = before.clone();
    bad.insert("last_epoch".into(), Value::from("seven"));
    assert!(sched.load_state_dict(&bad).is_err());
    bad.remove("last_epoch");
    assert!(sched.load_state_dict(&bad).is_err());
    assert_eq!(sched.state_dict(), before);
}
