//! `swa_utils::AveragedModel` against torch's `AveragedModel`
//! (tools/torch_reference/swa.py): the average after each of 40 updates, for
//! equal-weight SWA and for EMA at several decays, in float32 and float64.
//! `SWALR` is checked with the other schedulers in lr_scheduler.rs.

use std::path::PathBuf;

use ferroptim::swa_utils::{AveragedModel, Averaging};
use ferroptim::{Error, Param, Tensor};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    errors: Vec<DecayError>,
}

#[derive(Deserialize)]
struct Case {
    averaging: String,
    decay: Option<f64>,
    dtype: String,
    initial: Vec<Tensor>,
    updates: Vec<Update>,
    n_averaged: u64,
}

#[derive(Deserialize)]
struct Update {
    model: Vec<Tensor>,
    averaged: Vec<Tensor>,
}

#[derive(Deserialize)]
struct DecayError {
    decay: f64,
    torch_message: String,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swa.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn averaging(case: &Case) -> Averaging {
    match (case.averaging.as_str(), case.decay) {
        ("swa", _) => Averaging::Swa,
        ("ema", Some(decay)) => Averaging::ema(decay).unwrap(),
        other => panic!("unknown averaging {other:?}"),
    }
}

#[test]
fn averages_match_torch_to_the_bit() {
    let fixture = fixture();
    let mut values = 0;
    for case in &fixture.cases {
        let what = format!("{} {:?} {}", case.averaging, case.decay, case.dtype);
        let model: Vec<Param> = case.initial.iter().cloned().map(Param::new).collect();
        let mut avg = AveragedModel::new(&model, averaging(case)).unwrap();
        for (i, update) in case.updates.iter().enumerate() {
            for (p, v) in model.iter().zip(&update.model) {
                p.set_value(v.clone()).unwrap();
            }
            avg.update_parameters(&model).unwrap();
            for (j, (ours, torch)) in avg.params().iter().zip(&update.averaged).enumerate() {
                let (ours, torch) = (ours.value().to_f64_vec(), torch.to_f64_vec());
                assert_eq!(ours, torch, "{what}: update {} param {j}", i + 1);
                values += ours.len();
            }
        }
        assert_eq!(avg.n_averaged(), case.n_averaged, "{what}");
    }
    assert!(fixture.cases.len() >= 12 && values > 20_000, "{values}");
}

#[test]
fn invalid_decays_are_refused_with_torchs_message() {
    let fixture = fixture();
    assert!(!fixture.errors.is_empty());
    for e in &fixture.errors {
        let err = Averaging::ema(e.decay).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidHyperparameter { name: "decay", .. }
        ));
        assert_eq!(err.to_string(), e.torch_message);
        let p = [Param::zeros::<f32>(&[1])];
        assert!(AveragedModel::new(&p, Averaging::Ema { decay: e.decay }).is_err());
    }
}

#[test]
fn mismatched_models_and_checkpoints_are_refused_and_change_nothing() {
    let model = [Param::zeros::<f32>(&[2]), Param::zeros::<f32>(&[3])];
    let mut avg = AveragedModel::new(&model, Averaging::Swa).unwrap();
    avg.update_parameters(&model).unwrap();
    let before = avg.state_dict();
    let other = [Param::zeros::<f32>(&[2]), Param::zeros::<f32>(&[4])];
    assert!(matches!(
        avg.update_parameters(&other),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(avg.update_parameters(&model[..1]).is_err());
    let f64_model = [Param::zeros::<f64>(&[2]), Param::zeros::<f64>(&[3])];
    assert!(avg.update_parameters(&f64_model).is_err());
    let mut bad = before.clone();
    bad.params[1] = Tensor::from_vec(vec![1.0f32; 5], &[5]).unwrap();
    assert!(avg.load_state_dict(&bad).is_err());
    assert_eq!(avg.state_dict(), before);
}

#[test]
fn a_checkpoint_resumes_the_average_and_copy_to_writes_it_back() {
    let model = [Param::from_vec(vec![1.0f64, 2.0], &[2]).unwrap()];
    let mut avg = AveragedModel::new(&model, Averaging::Swa).unwrap();
    avg.update_parameters(&model).unwrap();
    let json = serde_json::to_string(&avg.state_dict()).unwrap();
    let mut resumed = AveragedModel::new(&model, Averaging::Swa).unwrap();
    resumed
        .load_state_dict(&serde_json::from_str(&json).unwrap())
        .unwrap();
    model[0]
        .set_value(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap())
        .unwrap();
    avg.update_parameters(&model).unwrap();
    resumed.update_parameters(&model).unwrap();
    assert_eq!(avg.state_dict(), resumed.state_dict());
    avg.copy_to(&model).unwrap();
    assert_eq!(model[0].to_vec::<f64>().unwrap(), [2.0, 3.0]);
}
