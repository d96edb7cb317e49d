//! `state_dict` / `load_state_dict`: resuming training after a stop.

use crate::common::{
    compare_params, load, sparse_sgd_with_momentum, tolerance_for, Agreement, Case, Scales,
};
use ferroptim::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use ferroptim::{optim, Error, GroupSpec, Optimizer, Param, StateDict, StateValue, Tensor};
use serde_json::{json, Value};

/// Every optimizer built by name, except LBFGS (closures and its own
/// fixture shape: tests/lbfgs.rs does its round trips). A new optimizer gets
/// these tests by being in `optim::NAMES`, and fails them without a fixture.
fn fixtures() -> impl Iterator<Item = &'static str> {
    optim::NAMES.iter().copied().filter(|&n| n != "lbfgs")
}

/// Optimizers without a square root, which match torch to the bit.
const BIT_EXACT: [&str; 4] = ["sgd", "adamax", "asgd", "rprop"];

fn run(case: &Case, opt: &mut dyn Optimizer, params: &[Param], steps: std::ops::Range<usize>) {
    for i in steps {
        case.step(i, opt, params);
    }
}

/// Runs every fixture case halfway, saves through `save`/`load`, resumes in
/// a fresh optimizer, and requires the end to be bit-identical to a run
/// that never stopped.
fn round_trip_midway(save: impl Fn(&StateDict) -> Vec<u8>, load_back: impl Fn(&[u8]) -> StateDict) {
    for name in fixtures() {
        for case in &load(name).cases {
            let n = case.steps.len();
            let (mut straight, straight_params) = case.build(name, &case.initial_params);
            run(case, straight.as_mut(), &straight_params, 0..n);

            let (mut first, first_params) = case.build(name, &case.initial_params);
            run(case, first.as_mut(), &first_params, 0..n / 2);
            let saved = save(&first.state_dict());
            drop(first);
            let values: Vec<Tensor> = first_params.iter().map(Param::value).collect();
            let (mut resumed, resumed_params) = case.build(name, &values);
            resumed.load_state_dict(&load_back(&saved)).unwrap();
            run(case, resumed.as_mut(), &resumed_params, n / 2..n);

            for (a, b) in straight_params.iter().zip(&resumed_params) {
                assert_eq!(
                    a.value(),
                    b.value(),
                    "{name} [{}] {}",
                    case.desc,
                    case.dtype
                );
            }
            assert_eq!(
                straight.state_dict(),
                resumed.state_dict(),
                "{name} [{}] {}",
                case.desc,
                case.dtype
            );
        }
    }
}

#[test]
fn json_round_trip_midway_is_bit_identical_to_an_uninterrupted_run() {
    round_trip_midway(
        |sd| sd.to_json().unwrap().into_bytes(),
        |bytes| StateDict::from_json(std::str::from_utf8(bytes).unwrap()).unwrap(),
    );
}

#[test]
fn safetensors_file_round_trip_midway_is_bit_identical_to_an_uninterrupted_run() {
    let dir = std::env::temp_dir().join(format!("ferroptim-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    round_trip_midway(
        |sd| {
            sd.save(&path).unwrap();
            Vec::new()
        },
        |_| StateDict::load(&path).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Steps a case's optimizer (loaded at `mid_step`) through the remaining
/// steps and compares every parameter with torch's.
fn continue_like_torch(
    name: &str,
    case: &Case,
    opt: &mut dyn Optimizer,
    params: &[Param],
) -> Agreement {
    let mut agreement = Agreement::default();
    let mut scales = Scales::default();
    for i in case.mid_step..case.steps.len() {
        case.step(i, opt, params);
        let what = format!("{name} step {}", i + 1);
        agreement.merge(compare_params(
            &mut scales,
            &what,
            params,
            &case.steps[i].params,
        ));
    }
    agreement
}

#[test]
fn a_state_dict_written_by_torch_resumes_like_torch() {
    for name in fixtures() {
        for case in &load(name).cases {
            let mid = case.mid_step;
            let (mut opt, params) = case.build(name, &case.steps[mid - 1].params);
            opt.load_state_dict(&case.state_dict_mid).unwrap();
            let agreement = continue_like_torch(name, case, opt.as_mut(), &params);
            let tol = tolerance_for(name, case);
            assert!(
                agreement.max_norm_rel <= tol,
                "{name} [{}] {}: {}",
                case.desc,
                case.dtype,
                agreement.worst
            );
            if BIT_EXACT.contains(&name) && !sparse_sgd_with_momentum(name, case) {
                assert_eq!(
                    agreement.exact, agreement.values,
                    "{name} [{}]: {}",
                    case.desc, agreement.worst
                );
            }
        }
    }
}

/// An Adam optimizer over two groups with state for every parameter.
fn stepped_adam() -> (Adam, Vec<Param>) {
    let params = vec![
        Param::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap(),
        Param::from_vec(vec![0.5f32], &[]).unwrap(),
        Param::from_vec(vec![-1.0f32, 1.0], &[2]).unwrap(),
    ];
    let groups = [
        GroupSpec::new(params[..2].to_vec()),
        GroupSpec::new([params[2].clone()]).set("lr", 0.5),
    ];
    let mut opt = Adam::new(
        groups,
        AdamConfig {
            lr: 0.1,
            amsgrad: true,
            ..Default::default()
        },
    )
    .unwrap();
    for k in 0..3 {
        for p in &params {
            let n = p.numel();
            p.set_grad(
                Tensor::from_vec(
                    (0..n).map(|i| (i + k) as f32 * 0.25 - 0.3).collect(),
                    &p.shape(),
                )
                .unwrap(),
            )
            .unwrap();
        }
        opt.step().unwrap();
    }
    (opt, params)
}

fn edit(sd: &StateDict, f: impl FnOnce(&mut Value)) -> StateDict {
    let mut v = serde_json::to_value(sd).unwrap();
    f(&mut v);
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_failed_load_changes_nothing_and_says_what_was_wrong() {
    let (mut opt, params) = stepped_adam();
    let good = opt.state_dict();
    let sgd_sd = {
        let p = Param::zeros::<f32>(&[1]);
        Sgd::new([p], SgdConfig::default()).unwrap().state_dict()
    };
    type Expected = fn(&Error) -> bool;
    let bad: Vec<(&str, StateDict, Expected)> = vec![
        (
            "one group fewer",
            edit(&good, |v| {
                v["param_groups"].as_array_mut().unwrap().pop();
            }),
            |e| {
                matches!(
                    e,
                    Error::GroupCountMismatch {
                        expected: 2,
                        found: 1
                    }
                )
            },
        ),
        (
            "a group one param short",
            edit(&good, |v| {
                v["param_groups"][0]["params"] = json!([0]);
                v["state"].as_object_mut().unwrap().remove("1");
            }),
            |e| {
                matches!(
                    e,
                    Error::GroupSizeMismatch {
                        group: 0,
                        expected: 2,
                        found: 1
                    }
                )
            },
        ),
        (
            "exp_avg of another shape",
            edit(
                &good,
                |v| {
                    v["state"]["0"]["exp_avg"] =
                        json!({"dtype": "float32", "shape": [4], "data": [0.0, 0.0, 0.0, 0.0]})
                },
            ),
            |e| {
                matches!(e, Error::ShapeMismatch { .. })
                    && e.to_string().contains("state[0].exp_avg")
            },
        ),
        (
            "a missing exp_avg_sq",
            edit(&good, |v| {
                v["state"]["2"]
                    .as_object_mut()
                    .unwrap()
                    .remove("exp_avg_sq");
            }),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "state[2].exp_avg_sq"),
        ),
        (
            "an unknown state key",
            edit(&good, |v| v["state"]["1"]["momentum_buffer"] = json!(1)),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "state[1].momentum_buffer"),
        ),
        (
            "a NaN step",
            edit(&good, |v| {
                v["state"]["1"]["step"] = json!({"dtype": "float32", "shape": [], "data": ["nan"]})
            }),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "state[1].step"),
        ),
        (
            "a list where a tensor belongs",
            edit(&good, |v| v["state"]["0"]["exp_avg"] = json!([])),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "state[0].exp_avg"),
        ),
        (
            "a group without betas",
            edit(&good, |v| {
                v["param_groups"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("betas");
            }),
            |e| matches!(e, Error::MissingGroupKey { group: 1, key, .. } if key == "betas"),
        ),
        (
            // Not the lr: torch lets it be anything between steps, so it loads as saved.
            "a negative eps",
            edit(&good, |v| v["param_groups"][1]["eps"] = json!(-1.0)),
            |e| matches!(e, Error::InvalidHyperparameter { name: "eps", .. }),
        ),
        (
            "betas of the wrong type",
            edit(&good, |v| v["param_groups"][0]["betas"] = json!("0.9")),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "param_groups[0]"),
        ),
        (
            "a repeated param index",
            edit(&good, |v| v["param_groups"][1]["params"] = json!([1])),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "param_groups[1].params"),
        ),
        (
            "state for a param no group lists",
            edit(&good, |v| {
                v["param_groups"][1]["params"] = json!([7]);
            }),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "state[2]"),
        ),
        (
            "a param index that is not an integer",
            edit(&good, |v| v["param_groups"][0]["params"] = json!([0, -1])),
            |e| matches!(e, Error::InvalidStateDict { path, .. } if path == "param_groups[0].params"),
        ),
        ("SGD's state_dict", sgd_sd, |e| {
            matches!(e, Error::GroupCountMismatch { .. })
        }),
    ];
    let before_json = good.to_json().unwrap();
    let before_values: Vec<Tensor> = params.iter().map(Param::value).collect();
    for (what, sd, expected) in bad {
        let err = opt.load_state_dict(&sd).expect_err(what);
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        assert_eq!(
            opt.state_dict().to_json().unwrap(),
            before_json,
            "{what}: the optimizer changed"
        );
    }
    let after_values: Vec<Tensor> = params.iter().map(Param::value).collect();
    assert_eq!(before_values, after_values);
    opt.load_state_dict(&good).unwrap();
    assert_eq!(opt.state_dict(), good);
}

#[test]
fn the_wrong_optimizer_is_refused_by_its_hyperparameters() {
    let p = Param::zeros::<f64>(&[3]);
    let sgd = Sgd::new(
        [p.clone()],
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    let mut adam = Adam::new([p.clone()], AdamConfig::default()).unwrap();
    let err = adam.load_state_dict(&sgd.state_dict()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::MissingGroupKey {
                optimizer: "Adam",
                ..
            }
        ),
        "{err:?}"
    );
    let mut sgd = sgd;
    let err = sgd.load_state_dict(&adam.state_dict()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingGroupKey { optimizer: "SGD", key, .. } if key == "dampening"),
        "{err:?}"
    );
}

#[test]
fn state_is_cast_to_the_param_dtype_except_step() {
    let (opt, _) = stepped_adam();
    let sd64 = edit(&opt.state_dict(), |v| {
        for state in v["state"].as_object_mut().unwrap().values_mut() {
            state["exp_avg"]["dtype"] = json!("float64");
        }
    });
    let (mut fresh, _) = stepped_adam();
    fresh.load_state_dict(&sd64).unwrap();
    let sd = fresh.state_dict();
    assert!(
        matches!(&sd.state[&0]["exp_avg"], StateValue::Tensor(t) if t.dtype() == ferroptim::Dtype::F32)
    );
    assert_eq!(sd, opt.state_dict());
}

#[test]
fn extra_group_keys_survive_and_old_checkpoints_get_torchs_defaults() {
    let (mut opt, _) = stepped_adam();
    let sd = edit(&opt.state_dict(), |v| {
        v["param_groups"][0]["initial_lr"] = json!(0.1);
        v["param_groups"][1]
            .as_object_mut()
            .unwrap()
            .remove("decoupled_weight_decay");
        v["param_groups"][1]["amsgrad"] = json!(false);
    });
    opt.load_state_dict(&sd).unwrap();
    assert_eq!(opt.param_groups()[0].extra["initial_lr"], json!(0.1));
    assert_eq!(opt.state_dict().param_groups[0]["initial_lr"], json!(0.1));
    assert!(!opt.param_groups()[1].options.decoupled_weight_decay);
    assert!(!opt.param_groups()[1].options.amsgrad);
}

#[test]
fn a_checkpoint_saved_by_torch_save_resumes_like_torch() {
    // tools/torch_reference/checkpoints.py saved case 0 (float32) and case 1
    // (float64) of every fixture with torch.save after step `mid_step`.
    let mut files = 0;
    for name in fixtures() {
        let fixture = load(name);
        for case in &fixture.cases[..2] {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/torch_pt/{name}-{}.pt", case.dtype));
            let from_torch =
                StateDict::load_torch(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mid = case.mid_step;
            // The same state as the JSON fixture torch wrote at the same step.
            let (mut via_pt, params) = case.build(name, &case.steps[mid - 1].params);
            via_pt.load_state_dict(&from_torch).unwrap();
            let (mut via_json, _) = case.build(name, &case.steps[mid - 1].params);
            via_json.load_state_dict(&case.state_dict_mid).unwrap();
            assert_eq!(
                via_pt.state_dict(),
                via_json.state_dict(),
                "{name} {}",
                case.dtype
            );
            // And it continues as torch continued.
            let agreement = continue_like_torch(name, case, via_pt.as_mut(), &params);
            let tol = tolerance_for(name, case);
            assert!(
                agreement.max_norm_rel <= tol,
                "{name} {}: {}",
                case.dtype,
                agreement.worst
            );
            files += 1;
        }
    }
    assert_eq!(files, 2 * fixtures().count());
}

/// ferroptim checkpoints that torch loads: case 0 of every fixture saved
/// after `mid_step` under tests/fixtures/ferroptim_ckpt/. With
/// `FERROPTIM_WRITE_FIXTURES=1` this writes them; otherwise it checks the
/// committed files still hold exactly what ferroptim saves there.
/// tools/torch_reference/checkpoints.py loads them into torch with
/// tools/ferroptim_checkpoint.py and checks torch continues like the fixture.
#[test]
fn checkpoints_for_torch_hold_what_ferroptim_saves() {
    let write = std::env::var_os("FERROPTIM_WRITE_FIXTURES").is_some();
    for name in fixtures() {
        let fixture = load(name);
        let case = &fixture.cases[0];
        let (mut opt, params) = case.build(name, &case.initial_params);
        for i in 0..case.mid_step {
            case.step_as_reference(name, i, opt.as_mut(), &params);
        }
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/ferroptim_ckpt/{name}.safetensors"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            opt.state_dict().save(&path).unwrap();
        }
        let saved = StateDict::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(saved, opt.state_dict(), "{name}");
    }
}
