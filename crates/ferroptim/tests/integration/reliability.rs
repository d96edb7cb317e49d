//! What a checkpoint saves, it loads; what fails, changes nothing; what is
//! hostile or at its limits is a typed error, never a panic.

use ferroptim::lr_scheduler::{
    CosineAnnealingLR, CosineAnnealingLRConfig, CosineAnnealingWarmRestarts,
    CosineAnnealingWarmRestartsConfig, CyclicLR, CyclicLRConfig, LrScheduler, OneCycleLR,
    OneCycleLRConfig, StepLR, StepLRConfig,
};
use ferroptim::optim::{self, Lbfgs, LbfgsConfig, LineSearch};
use ferroptim::{json, Optimizer, Param, StateDict, StateValue, Tensor};
use proptest::prelude::*;
use serde_json::Value;

/// Floats as a training run can meet them: ordinary, extreme, non-finite.
fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0..10.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::MAX),
        1 => Just(-f64::MIN_POSITIVE),
        1 => Just(1e-300),
    ]
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroptim-rel-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The state_dict through JSON and through a safetensors file, loaded into
/// a fresh optimizer built by `fresh`: both must give it back exactly.
fn assert_round_trips(opt: &dyn Optimizer, fresh: &mut dyn FnMut() -> Box<dyn Optimizer>) {
    let sd = opt.state_dict();
    let json = sd.to_json().unwrap();
    let bytes = sd.to_safetensors().unwrap();
    for (how, back) in [
        ("json", StateDict::from_json(&json).unwrap()),
        ("safetensors", StateDict::from_safetensors(&bytes).unwrap()),
    ] {
        assert_eq!(
            back.to_json().unwrap(),
            json,
            "{how} changed the state_dict"
        );
        let mut other = fresh();
        other
            .load_state_dict(&back)
            .unwrap_or_else(|e| panic!("{how}: saved but does not load: {e}"));
        assert_eq!(
            other.state_dict().to_json().unwrap(),
            json,
            "{how}: loaded differently"
        );
    }
}

fn params(seed: u64) -> Vec<Param> {
    [3usize, 1, 4]
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let v = (0..n).map(|i| ((i as u64 * 7 + seed + k as u64) % 11) as f64 / 3.0 - 1.5);
            Param::from_vec(v.collect(), &[n]).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any lr a scheduler or a user may set (negative, NaN, infinite, huge),
    /// any gradient, any extra key: the checkpoint loads back bit for bit.
    #[test]
    fn every_checkpoint_that_saves_loads(
        name in prop::sample::select(vec!["adam", "sgd", "rprop", "asgd", "adafactor", "nadam"]),
        lrs in prop::collection::vec(any_float(), 1..4),
        grads in prop::collection::vec(any_float(), 8),
        extra in any_float(),
        seed in 0u64..100,
    ) {
        let config = if name == "sgd" { r#"{"momentum": 0.9}"# } else { "{}" };
        let ps = params(seed);
        let mut opt = optim::build(name, config, ps.clone()).unwrap();
        opt.set_group_extra(0, "initial_lr", json::number(extra)).unwrap();
        for (i, &lr) in lrs.iter().enumerate() {
            opt.set_lr(0, lr).unwrap();
            for (k, p) in ps.iter().enumerate() {
                let n = p.numel();
                let g = (0..n).map(|j| grads[(i + j + k) % grads.len()]).collect();
                p.set_grad(Tensor::from_vec::<f64>(g, &[n]).unwrap()).unwrap();
            }
            opt.step().unwrap();
        }
        assert_round_trips(opt.as_ref(), &mut || optim::build(name, config, params(seed)).unwrap());
    }

    /// LBFGS after losses and gradients of every kind (NaN included): its
    /// `prev_loss`, `t` and `H_diag` load back as saved, and no search panics.
    #[test]
    fn lbfgs_checkpoints_load_whatever_the_losses_were(
        losses in prop::collection::vec(any_float(), 1..6),
        wolfe in any::<bool>(),
    ) {
        let config = LbfgsConfig {
            max_iter: 4,
            line_search_fn: wolfe.then_some(LineSearch::StrongWolfe),
            ..Default::default()
        };
        let fresh = || Lbfgs::new([Param::from_vec(vec![1.0f64, -2.0], &[2]).unwrap()], config.clone()).unwrap();
        let mut opt = fresh();
        let p = opt.params()[0].clone();
        let mut calls = 0;
        let _ = opt.step_with_closure(&mut || {
            let loss = losses[calls % losses.len()];
            calls += 1;
            let x = p.to_vec::<f64>()?;
            p.set_grad(Tensor::from_vec(vec![2.0 * x[0] + loss.min(1.0), x[1] - 0.5], &[2])?)?;
            Ok(loss)
        });
        assert_round_trips(&opt, &mut || Box::new(fresh()));
    }
}

#[test]
fn non_finite_hyperparameters_set_by_name_are_kept_or_refused_by_name() {
    let mut opt = optim::build("adam", "{}", params(0)).unwrap();
    // torch accepts an infinite eps; it saves and loads as such.
    opt.set_hyperparameter(0, "eps", json::number(f64::INFINITY))
        .unwrap();
    assert_eq!(opt.hyperparameter(0, "eps"), Some(Value::from("inf")));
    assert_round_trips(opt.as_ref(), &mut || {
        optim::build("adam", "{}", params(0)).unwrap()
    });
    // NaN is refused with torch's message, not "invalid type: null".
    let err = opt
        .set_hyperparameter(0, "eps", json::number(f64::NAN))
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid epsilon value: nan");
    let err = opt
        .set_hyperparameter(0, "eps", Value::from(f64::NAN))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`eps` is null") && err.contains("json::number"),
        "{err}"
    );
    let err = opt
        .set_group_extra(0, "initial_lr", Value::from(f64::NAN))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`initial_lr` is null"), "{err}");
    let spec = ferroptim::GroupSpec::new(params(1)).set("weight_decay", f64::INFINITY);
    let opt = optim::build("sgd", "{}", vec![spec]).unwrap();
    assert_eq!(
        opt.hyperparameter(0, "weight_decay"),
        Some(Value::from("inf"))
    );
}

/// Adam on [`params`]`(0)` after one step of gradients 1.
fn adam_after_one_step() -> Box<dyn Optimizer> {
    let ps = params(0);
    let mut opt = optim::build("adam", "{}", ps.clone()).unwrap();
    for p in &ps {
        p.set_grad(Tensor::from_vec(vec![1.0f64; p.numel()], &[p.numel()]).unwrap())
            .unwrap();
    }
    opt.step().unwrap();
    opt
}

#[test]
fn step_counts_past_2_to_the_53_are_corrupt_files_not_infinities() {
    let opt = adam_after_one_step();
    let mut sd = opt.state_dict();
    for (step, ok) in [(2f64.powi(53), true), (1e39, false), (f64::INFINITY, false)] {
        sd.state
            .get_mut(&0)
            .unwrap()
            .insert("step".into(), StateValue::Float(step));
        let mut fresh = optim::build("adam", "{}", params(0)).unwrap();
        let result = fresh.load_state_dict(&sd);
        assert_eq!(result.is_ok(), ok, "step {step}: {result:?}");
        if let Err(e) = result {
            assert!(e.to_string().contains("state[0].step"), "{e}");
        } else {
            fresh.step().unwrap();
            assert_round_trips(fresh.as_ref(), &mut || {
                optim::build("adam", "{}", params(0)).unwrap()
            });
        }
    }
}

#[test]
fn a_header_too_large_to_load_is_refused_before_the_file_is_touched() {
    let dir = scratch("header");
    let path = dir.join("opt.safetensors");
    std::fs::write(&path, b"the previous checkpoint").unwrap();
    // 1.2M one-element state tensors: a header past safetensors' 100 MB.
    let mut sd = StateDict::default();
    let t = Tensor::scalar(1.0f32);
    for i in 0..600_000 {
        let entries = [("exp_avg", t.clone()), ("exp_avg_sq", t.clone())];
        sd.state.insert(
            i,
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), StateValue::Tensor(v)))
                .collect(),
        );
    }
    let err = sd.save(&path).unwrap_err().to_string();
    assert!(
        err.contains("100000000") && err.contains("to_json"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"the previous checkpoint");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sgd() -> Box<dyn Optimizer> {
    optim::build("sgd", r#"{"lr": 0.1, "momentum": 0.9}"#, params(0)).unwrap()
}

#[test]
fn a_scheduler_constructor_that_fails_leaves_the_optimizer_as_it_was() {
    let mut opt = sgd();
    let before = opt.param_groups_json();
    let mut config = CyclicLRConfig::new(0.01, 0.1);
    config.base_momentum = f64::NAN.into();
    assert!(CyclicLR::new(opt.as_mut(), config).is_err());
    assert_eq!(opt.param_groups_json(), before);
    let mut config = OneCycleLRConfig::new(0.1, 100);
    config.pct_start = 2.0;
    assert!(OneCycleLR::new(opt.as_mut(), config).is_err());
    assert_eq!(opt.param_groups_json(), before);
}

fn step_lr(opt: &mut dyn Optimizer) -> StepLR {
    let config = StepLRConfig {
        step_size: 3,
        gamma: 0.5,
        last_epoch: -1,
    };
    StepLR::new(opt, config).unwrap()
}

#[test]
fn loaded_schedulers_are_checked_as_constructed_ones_are() {
    let mut opt = sgd();
    let mut step = step_lr(opt.as_mut());
    let mut state = step.state_dict();
    state.insert("step_size".into(), Value::from(0));
    assert!(step.load_state_dict(&state).is_err());
    step.step(opt.as_mut()).unwrap();

    let config = CosineAnnealingLRConfig {
        t_max: 5,
        eta_min: 0.0,
        last_epoch: -1,
    };
    let mut cos = CosineAnnealingLR::new(opt.as_mut(), config).unwrap();
    let mut state = cos.state_dict();
    state.insert("T_max".into(), Value::from(0));
    assert!(cos.load_state_dict(&state).is_err());
    cos.step(opt.as_mut()).unwrap();
}

#[test]
fn counters_at_their_limits_are_errors_not_overflows() {
    let mut opt = sgd();
    // last_epoch one short of i64::MAX: one more step is the end.
    let mut step = step_lr(opt.as_mut());
    let mut state = step.state_dict();
    state.insert("last_epoch".into(), Value::from(i64::MAX - 1));
    step.load_state_dict(&state).unwrap();
    step.step(opt.as_mut()).unwrap();
    let lr = opt.lr(0);
    assert!(step.step(opt.as_mut()).is_err());
    assert_eq!(opt.lr(0), lr);

    let config = CosineAnnealingLRConfig {
        t_max: i64::MAX,
        eta_min: 0.0,
        last_epoch: -1,
    };
    let mut cos = CosineAnnealingLR::new(opt.as_mut(), config).unwrap();
    cos.step(opt.as_mut()).unwrap();

    let mut config = OneCycleLRConfig::new(0.1, 1);
    (config.total_steps, config.epochs, config.steps_per_epoch) = (None, Some(i64::MAX), Some(3));
    let err = OneCycleLR::new(opt.as_mut(), config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("epochs * steps_per_epoch"), "{err}");

    let config = CosineAnnealingWarmRestartsConfig {
        t_0: 2,
        t_mult: 3,
        eta_min: 0.0,
        last_epoch: -1,
    };
    let mut warm = CosineAnnealingWarmRestarts::new(opt.as_mut(), config).unwrap();
    for epoch in [1e300, f64::INFINITY, 1e19] {
        assert!(warm.step_to(opt.as_mut(), epoch).is_err(), "epoch {epoch}");
    }
    warm.step_to(opt.as_mut(), 7.5).unwrap();
    // An epoch that fits, whose period T_0·T_mult^n does not.
    let config = CosineAnnealingWarmRestartsConfig {
        t_0: 2,
        t_mult: 1000,
        eta_min: 0.0,
        last_epoch: -1,
    };
    let mut warm = CosineAnnealingWarmRestarts::new(opt.as_mut(), config).unwrap();
    let err = warm.step_to(opt.as_mut(), 9e18).unwrap_err().to_string();
    assert!(err.contains("T_i"), "{err}");

    let config = LbfgsConfig {
        max_iter: usize::MAX,
        ..Default::default()
    };
    let lbfgs = Lbfgs::new([Param::zeros::<f64>(&[2])], config).unwrap();
    assert_eq!(
        lbfgs.hyperparameter(0, "max_eval"),
        Some(Value::from(usize::MAX))
    );
}

#[test]
fn many_groups_and_a_repeat_among_them() {
    // Adding a group checks it against the others by key, not pairwise.
    let params: Vec<Param> = (0..40_000).map(|_| Param::zeros::<f32>(&[1])).collect();
    let groups: Vec<_> = params
        .iter()
        .map(|p| ferroptim::GroupSpec::new([p.clone()]))
        .collect();
    let mut opt = optim::Adam::new(groups, Default::default()).unwrap();
    assert_eq!(opt.num_param_groups(), 40_000);
    let again = ferroptim::GroupSpec::new([Param::zeros::<f32>(&[1]), params[39_999].clone()]);
    assert!(matches!(
        opt.add_param_group(again),
        Err(ferroptim::Error::DuplicateParamAcrossGroups)
    ));
    assert_eq!(opt.num_param_groups(), 40_000);
}

#[test]
fn a_tensor_named_twice_in_a_checkpoint_is_reported_as_such() {
    let opt = adam_after_one_step();
    // Point state[1].exp_avg_sq at state[1].exp_avg's tensor (same shape).
    let bytes = opt.state_dict().to_safetensors().unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let edited = header.replace(
        r#"{\"tensor\":\"state.1.exp_avg_sq\"}"#,
        r#"{\"tensor\":\"state.1.exp_avg\"}   "#,
    );
    assert_ne!(edited, header);
    let mut file = bytes[..8].to_vec();
    file.extend_from_slice(edited.as_bytes());
    file.extend_from_slice(&bytes[8 + n..]);
    let err = StateDict::from_safetensors(&file).unwrap_err().to_string();
    assert!(err.contains("\"state.1.exp_avg\" twice"), "{err}");
}

#[test]
#[should_panic(expected = "overflow")]
fn this_suite_runs_with_overflow_checks() {
    // The counters above are tested where a silent wrap-around would panic.
    let x = std::hint::black_box(u8::MAX);
    let _ = std::hint::black_box(x + 1);
}
