//! Lookahead against pytorch-optimizer 4.1.0's, wrapped around torch's
//! optimizers (tools/torch_reference/lookahead.py): the parameters and the
//! slow weights after every step, the state_dicts (the reference's nested
//! layout merged into one, see `ferroptim::optim::Lookahead`), a resume from
//! the reference's mid-run state_dict (as JSON and as its own `torch.save`
//! file), a checkpoint the reference resumes from (checkpoints.py), a run
//! through `add_param_group`, `backup_and_load_cache` and
//! `clear_and_load_backup`, and the reference's errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferroptim::optim::{Lookahead, LookaheadConfig};
use ferroptim::{AddParamGroup, GroupSpec, Optimizer, Param, StateDict, StateValue, Tensor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::common::{
    compare_params, compare_state, group_specs, json_equal, tolerance, Agreement, Scales,
};

#[derive(Deserialize)]
struct Fixture {
    optimizer: String,
    reference: String,
    cases: Vec<Case>,
    errors: Vec<ErrorCase>,
    scenarios: Vec<Scenario>,
}

/// The reference run through `add_param_group` (after `add_after` steps)
/// and a swap of the slow weights in and out (after `cache_after` steps).
#[derive(Deserialize)]
struct Scenario {
    dtype: String,
    base: String,
    base_kwargs: Value,
    kwargs: Value,
    added_group: Map<String, Value>,
    add_after: usize,
    cache_after: usize,
    initial_params: Vec<Tensor>,
    steps: Vec<ScenarioStep>,
    cached: Cached,
    state_dict_final: ReferenceStateDict,
}

#[derive(Deserialize)]
struct ScenarioStep {
    grads: Vec<Tensor>,
    params: Vec<Tensor>,
}

/// After `backup_and_load_cache`: the parameters (the slow weights) and the
/// state_dict (with `backup_params`); after `clear_and_load_backup`, the
/// parameters again.
#[derive(Deserialize)]
struct Cached {
    params: Vec<Tensor>,
    state_dict: ReferenceStateDict,
    restored_params: Vec<Tensor>,
}

#[derive(Deserialize)]
struct Case {
    desc: String,
    dtype: String,
    base: String,
    base_kwargs: Value,
    kwargs: Value,
    groups: Vec<Map<String, Value>>,
    initial_params: Vec<Tensor>,
    steps: Vec<Step>,
    mid_step: usize,
    state_dict_mid: ReferenceStateDict,
    state_dict_final: ReferenceStateDict,
}

#[derive(Deserialize)]
struct Step {
    grads: Vec<Option<Tensor>>,
    params: Vec<Tensor>,
    lookahead_state: BTreeMap<usize, BTreeMap<String, StateValue>>,
}

/// The reference's `state_dict()`: `lookahead_state` keyed by "group,index".
#[derive(Deserialize)]
struct ReferenceStateDict {
    lookahead_state: BTreeMap<String, BTreeMap<String, StateValue>>,
    base_optimizer: StateDict,
}

#[derive(Deserialize)]
struct ErrorCase {
    desc: String,
    kwargs: Value,
    message: String,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lookahead.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert_eq!(fixture.optimizer, "lookahead");
    assert!(fixture.reference.starts_with("pytorch-optimizer 4.1.0"));
    fixture
}

impl ReferenceStateDict {
    /// The one-level state_dict ferroptim's Lookahead keeps.
    fn merged(&self, group_sizes: &[usize]) -> StateDict {
        let mut sd = self.base_optimizer.clone();
        for (key, entries) in &self.lookahead_state {
            let (g, i) = key.split_once(',').unwrap();
            let (g, i): (usize, usize) = (g.parse().unwrap(), i.parse().unwrap());
            let flat = group_sizes[..g].iter().sum::<usize>() + i;
            sd.state.entry(flat).or_default().extend(entries.clone());
        }
        sd
    }
}

impl Case {
    fn build(&self) -> (Lookahead, Vec<Param>) {
        let params: Vec<Param> = self
            .initial_params
            .iter()
            .map(|t| Param::new(t.clone()))
            .collect();
        let groups = group_specs(&self.groups, &params);
        let config: LookaheadConfig = serde_json::from_value(self.kwargs.clone()).unwrap();
        let opt = Lookahead::build(&self.base, &self.base_kwargs.to_string(), groups, config)
            .unwrap_or_else(|e| panic!("{}: {e}", self.desc));
        (opt, params)
    }

    fn group_sizes(&self) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| g["params"].as_array().unwrap().len())
            .collect()
    }

    fn step(&self, i: usize, opt: &mut Lookahead, params: &[Param]) {
        for (p, g) in params.iter().zip(&self.steps[i].grads) {
            match g {
                Some(g) => p.set_grad(g.clone()).unwrap(),
                None => p.clear_grad(),
            }
        }
        opt.step()
            .unwrap_or_else(|e| panic!("{} step {i}: {e}", self.desc));
    }

    /// What the replay must reach: the bit with SGD, whose update and
    /// Lookahead's `lerp` are torch's roundings; the tolerance with the
    /// bases that take torch's `sqrt` (see `parity`).
    fn tolerance(&self) -> f64 {
        if self.base == "sgd" {
            0.0
        } else {
            tolerance(&self.dtype)
        }
    }
}

fn assert_within(case: &Case, what: &str, a: &Agreement) {
    // A wrong formula anywhere moves most values: all but 1% stay exact
    // even where torch's `sqrt` is one ulp off (RMSprop's 17 of 3612).
    assert!(
        a.exact * 100 >= a.values * 99,
        "{} {} {what}: only {} of {} values bit-exact",
        case.desc,
        case.dtype,
        a.exact,
        a.values
    );
    assert!(
        a.max_norm_rel <= case.tolerance(),
        "{} {} {what}: {:e} > {:e} ({})",
        case.desc,
        case.dtype,
        a.max_norm_rel,
        case.tolerance(),
        a.worst
    );
}

fn compare_state_dicts(
    scales: &mut Scales,
    what: &str,
    got: &StateDict,
    want: &StateDict,
) -> Agreement {
    assert_eq!(
        got.param_groups.len(),
        want.param_groups.len(),
        "{what}: groups"
    );
    for (g, (a, b)) in got.param_groups.iter().zip(&want.param_groups).enumerate() {
        let (a, b) = (Value::Object(a.clone()), Value::Object(b.clone()));
        assert!(
            json_equal(&a, &b),
            "{what} param_groups[{g}]: ours {a}, reference {b}"
        );
    }
    compare_state(scales, what, &got.state, &want.state)
}

#[test]
fn lookahead_matches_pytorch_optimizer() {
    let fixture = fixture();
    assert_eq!(fixture.cases.len(), 16);
    for case in &fixture.cases {
        let (mut opt, params) = case.build();
        let sizes = case.group_sizes();
        let mut scales = Scales::default();
        let mut agreement = Agreement::default();
        for (i, step) in case.steps.iter().enumerate() {
            case.step(i, &mut opt, &params);
            let what = format!("step {}", i + 1);
            agreement.merge(compare_params(&mut scales, &what, &params, &step.params));
            let slow: BTreeMap<usize, BTreeMap<String, StateValue>> = opt
                .state_dict()
                .state
                .into_iter()
                .map(|(i, s)| {
                    (
                        i,
                        s.into_iter()
                            .filter(|(k, _)| k.starts_with("slow_"))
                            .collect(),
                    )
                })
                .collect();
            agreement.merge(compare_state(
                &mut scales,
                &what,
                &slow,
                &step.lookahead_state,
            ));
            if i + 1 == case.mid_step {
                let want = case.state_dict_mid.merged(&sizes);
                agreement.merge(compare_state_dicts(
                    &mut scales,
                    "mid state_dict",
                    &opt.state_dict(),
                    &want,
                ));
            }
        }
        let want = case.state_dict_final.merged(&sizes);
        agreement.merge(compare_state_dicts(
            &mut scales,
            "final state_dict",
            &opt.state_dict(),
            &want,
        ));
        assert_within(case, "replay", &agreement);
        assert!(agreement.values > 0);
    }
}

/// Case `case` resumed from `sd` (the reference's state_dict after
/// `mid_step`) in a fresh Lookahead: how it agrees with the reference's
/// uninterrupted run at the end.
fn resume(case: &Case, sd: &StateDict) -> Agreement {
    let sizes = case.group_sizes();
    let mid = &case.steps[case.mid_step - 1].params;
    let (mut opt, params) = case.build();
    for (p, v) in params.iter().zip(mid) {
        p.set_value(v.clone()).unwrap();
    }
    opt.load_state_dict(sd)
        .unwrap_or_else(|e| panic!("{}: {e}", case.desc));
    for i in case.mid_step..case.steps.len() {
        case.step(i, &mut opt, &params);
    }
    let mut scales = Scales::default();
    let mut agreement = Agreement::default();
    let last = &case.steps.last().unwrap().params;
    agreement.merge(compare_params(&mut scales, "resumed", &params, last));
    let want = case.state_dict_final.merged(&sizes);
    agreement.merge(compare_state_dicts(
        &mut scales,
        "resumed",
        &opt.state_dict(),
        &want,
    ));
    agreement
}

/// A run resumed from the reference's own mid-run state_dict, loaded into a
/// fresh Lookahead, ends where the reference's uninterrupted run ends.
#[test]
fn lookahead_resumes_from_the_references_state_dict() {
    let fixture = fixture();
    for case in &fixture.cases {
        let sd = case.state_dict_mid.merged(&case.group_sizes());
        assert_within(case, "resumed", &resume(case, &sd));
    }
}

const CHECKPOINT_CASE: usize = 2;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The reference's `torch.save(lookahead.state_dict())` (its nested layout,
/// `(group, index)` tuple keys; tools/torch_reference/checkpoints.py) reads
/// as the merged state_dict, holding what the reference's JSON holds, and
/// the run resumed from it ends as the reference's does, bit for bit.
#[test]
fn lookahead_resumes_from_a_torch_file_of_the_references_state_dict() {
    let fixture = fixture();
    for (d, dtype) in ["float32", "float64"].into_iter().enumerate() {
        let case = &fixture.cases[2 * CHECKPOINT_CASE + d];
        assert_eq!(case.dtype, dtype);
        assert!(case.desc.contains("pullback"), "{}", case.desc);
        let path = fixture_path(&format!("torch_pt/lookahead-{dtype}.pt"));
        let sd = StateDict::load_torch(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(sd.state.values().all(|s| s.contains_key("slow_momentum")));
        let want = case.state_dict_mid.merged(&case.group_sizes());
        let read = compare_state_dicts(&mut Scales::default(), "torch file", &sd, &want);
        assert_eq!(read.exact, read.values, "{dtype}: {}", read.worst);
        let resumed = resume(case, &sd);
        assert_eq!(resumed.exact, resumed.values, "{dtype}: {}", resumed.worst);
    }
}

/// ferroptim's checkpoint of the float32 checkpoint case after `mid_step`,
/// committed as tests/fixtures/ferroptim_ckpt/lookahead.safetensors, which
/// checkpoints.py splits with tools/ferroptim_checkpoint.py's
/// `load_lookahead`, loads into the reference, and resumes as the fixture.
/// With `FERROPTIM_WRITE_FIXTURES=1` this writes it; otherwise it checks the
/// committed file still holds exactly what ferroptim saves there.
#[test]
fn a_checkpoint_for_the_reference_holds_what_ferroptim_saves() {
    let fixture = fixture();
    let case = &fixture.cases[2 * CHECKPOINT_CASE];
    let (mut opt, params) = case.build();
    for i in 0..case.mid_step {
        case.step(i, &mut opt, &params);
    }
    let path = fixture_path("ferroptim_ckpt/lookahead.safetensors");
    if std::env::var_os("FERROPTIM_WRITE_FIXTURES").is_some() {
        opt.state_dict().save(&path).unwrap();
    }
    let saved = StateDict::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(saved, opt.state_dict());
}

/// The reference's scenario replayed: a group added mid-run starts its
/// count and slow weights there; the slow weights swap in (the state_dict
/// then holds the fast ones as `backup_params`) and back out; every value
/// bit for bit (SGD's update and Lookahead's `lerp` are torch's roundings).
#[test]
fn lookahead_adds_groups_and_swaps_in_its_slow_weights_as_pytorch_optimizer() {
    let fixture = fixture();
    assert_eq!(fixture.scenarios.len(), 2);
    for sc in &fixture.scenarios {
        let params: Vec<Param> = sc
            .initial_params
            .iter()
            .map(|t| Param::new(t.clone()))
            .collect();
        let config: LookaheadConfig = serde_json::from_value(sc.kwargs.clone()).unwrap();
        let base = sc.base.to_ascii_lowercase();
        let mut opt = Lookahead::build(
            &base,
            &sc.base_kwargs.to_string(),
            params[..2].to_vec(),
            config,
        )
        .unwrap();
        let mut scales = Scales::default();
        let mut agreement = Agreement::default();
        let mut check = |what: &str, want: &[Tensor], agreement: &mut Agreement| {
            let what = format!("{} {what}", sc.dtype);
            agreement.merge(compare_params(&mut scales, &what, &params, want));
        };
        for (i, step) in sc.steps.iter().enumerate() {
            if i == sc.add_after {
                let spec = sc
                    .added_group
                    .iter()
                    .fold(GroupSpec::new([params[2].clone()]), |spec, (k, v)| {
                        spec.set(k, v)
                    });
                opt.add_param_group(spec).unwrap();
                assert_eq!(opt.slow_params(2), Some(&params[2].value()));
            }
            for (p, g) in params.iter().zip(&step.grads) {
                p.set_grad(g.clone()).unwrap();
            }
            opt.step().unwrap();
            check(&format!("step {}", i + 1), &step.params, &mut agreement);
            if i + 1 == sc.cache_after {
                opt.backup_and_load_cache().unwrap();
                check("cached", &sc.cached.params, &mut agreement);
                let want = sc.cached.state_dict.merged(&[2, 1]);
                let sd = opt.state_dict();
                assert!(sd.state.values().all(|s| s.contains_key("backup_params")));
                agreement.merge(compare_state_dicts(
                    &mut Scales::default(),
                    "cached",
                    &sd,
                    &want,
                ));
                opt.clear_and_load_backup().unwrap();
                check("restored", &sc.cached.restored_params, &mut agreement);
            }
        }
        let want = sc.state_dict_final.merged(&[2, 1]);
        agreement.merge(compare_state_dicts(
            &mut Scales::default(),
            "final",
            &opt.state_dict(),
            &want,
        ));
        assert!(agreement.values > 0);
        assert_eq!(
            agreement.exact, agreement.values,
            "{}: {}",
            sc.dtype, agreement.worst
        );
    }
}

#[test]
fn lookahead_rejects_what_pytorch_optimizer_rejects() {
    let fixture = fixture();
    assert!(!fixture.errors.is_empty());
    for e in &fixture.errors {
        let mut json = e.kwargs.as_object().unwrap().clone();
        json.insert("optimizer".into(), "sgd".into());
        json.insert("lr".into(), 0.1.into());
        let err = Lookahead::<Param>::from_json(
            &Value::Object(json).to_string(),
            [Param::zeros::<f32>(&[2])],
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        // pytorch-optimizer's message, or serde's naming the variants it takes.
        let expected = if e.desc.starts_with("pullback_momentum") {
            "unknown variant `both`, expected one of `none`, `reset`, `pullback`"
        } else {
            e.message.as_str()
        };
        assert!(
            err.contains(expected),
            "{}: ours {err:?}, reference {:?}",
            e.desc,
            e.message
        );
    }
}
