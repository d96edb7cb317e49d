//! `master_weights` groups: a 16-bit parameter stepped through a float32
//! copy, checked against its definition (the float32 optimizer on a float32
//! copy, rounded), across a checkpoint, and on bad input.

use ferroptim::half::{bf16, f16};
use ferroptim::optim;
use ferroptim::{Dtype, Error, GroupSpec, Param, StateDict, StateValue, Tensor};

/// Uniform values in [-1, 1) from a fixed LCG: reproducible, no dependency.
pub(crate) fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub(crate) fn reduced(dtype: Dtype, v: &[f32], shape: &[usize]) -> Tensor {
    match dtype {
        Dtype::BF16 => Tensor::from_vec(v.iter().map(|&x| bf16::from_f32(x)).collect(), shape),
        _ => Tensor::from_vec(v.iter().map(|&x| f16::from_f32(x)).collect(), shape),
    }
    .unwrap()
}

pub(crate) fn widened(t: &Tensor) -> Vec<f32> {
    t.data().to_f64_vec().iter().map(|&x| x as f32).collect()
}

fn master_group(params: Vec<Param>) -> Vec<GroupSpec> {
    vec![GroupSpec::new(params).set("master_weights", true)]
}

pub(crate) const CONFIGS: &[(&str, &str)] = &[
    (
        "sgd",
        r#"{"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01, "nesterov": true}"#,
    ),
    ("adam", r#"{"lr": 0.001, "weight_decay": 0.1}"#),
    ("adamw", r#"{"lr": 0.001, "amsgrad": true}"#),
    (
        "rmsprop",
        r#"{"lr": 0.001, "momentum": 0.5, "centered": true}"#,
    ),
    ("adagrad", r#"{"lr": 0.01, "lr_decay": 0.001}"#),
    (
        "nadam",
        r#"{"lr": 0.002, "decoupled_weight_decay": true, "weight_decay": 0.1}"#,
    ),
    // Beyond torch's 16-bit set: optimizers that step only float32 and
    // float64 parameters, and 16-bit ones in a float32 mode's group.
    ("adafactor", "{}"),
    ("muon", r#"{"lr": 0.02}"#),
    ("lion", r#"{"lr": 0.001, "weight_decay": 0.1}"#),
    ("adopt", "{}"),
    ("ademamix", "{}"),
    ("lars", r#"{"lr": 0.1, "momentum": 0.9}"#),
    // Both take the global gradient norm first.
    ("lamb", r#"{"lr": 0.01, "pre_norm": true}"#),
    ("adan", r#"{"lr": 0.005, "max_grad_norm": 1.0}"#),
    ("soap", r#"{"precondition_frequency": 2}"#),
];

/// The definition: the float32 optimizer on a float32 copy of the
/// parameter, fed the widened 16-bit gradients; the parameter is the copy
/// rounded to nearest, and the copy is the float32 run, bit for bit.
#[test]
fn master_weights_step_is_the_f32_step_rounded() {
    let shape = [13, 7];
    let n = 13 * 7;
    for dtype in [Dtype::BF16, Dtype::F16] {
        for (k, (name, kwargs)) in CONFIGS.iter().enumerate() {
            let init = reduced(dtype, &values(k as u64, n), &shape);
            let p = Param::new(init.clone());
            let p32 = Param::from_vec(widened(&init), &shape).unwrap();
            let mut opt = optim::build(name, kwargs, master_group(vec![p.clone()])).unwrap();
            let mut reference =
                optim::build(name, kwargs, vec![GroupSpec::new([p32.clone()])]).unwrap();
            for step in 0..6 {
                let g = reduced(dtype, &values(100 + step, n), &shape);
                p32.set_grad(Tensor::from_vec(widened(&g), &shape).unwrap())
                    .unwrap();
                p.set_grad(g).unwrap();
                opt.step()
                    .unwrap_or_else(|e| panic!("{name} {dtype:?}: {e}"));
                reference.step().unwrap();
                let want = reduced(dtype, &widened(&p32.value()), &shape);
                assert_eq!(p.value(), want, "{name} {dtype:?} step {step}");
            }
            let sd = opt.state_dict();
            let Some(StateValue::Tensor(master)) = sd.state[&0].get("master_weight") else {
                panic!("{name}: no master_weight in {:?}", sd.state[&0].keys());
            };
            assert_eq!(
                master,
                &p32.value(),
                "{name} {dtype:?}: the copy is the f32 run"
            );
            // The algorithm's own state is the f32 run's too.
            let mut ours = sd.state[&0].clone();
            ours.remove("master_weight");
            assert_eq!(ours, reference.state_dict().state[&0], "{name} {dtype:?}");
        }
    }
}

/// What master weights buy: an update below half a bfloat16 ulp (1e-3
/// against 2^-8 at 1.0) is lost every step in plain bfloat16, and adds up
/// through the copy.
#[test]
fn master_weights_keep_updates_below_half_an_ulp() {
    let run = |master: bool| {
        let p = Param::new(reduced(Dtype::BF16, &[1.0], &[1]));
        let group = GroupSpec::new([p.clone()]).set("master_weights", master);
        let mut opt = optim::build("sgd", r#"{"lr": 0.001}"#, vec![group]).unwrap();
        for _ in 0..20 {
            p.set_grad(reduced(Dtype::BF16, &[1.0], &[1])).unwrap();
            opt.step().unwrap();
        }
        widened(&p.value())[0]
    };
    assert_eq!(run(false), 1.0, "round to nearest loses every update");
    // 1 - 20e-3 = 0.98, whose nearest bfloat16 is 0.98046875.
    assert_eq!(run(true), 0.980_468_75);
}

/// A run saved mid-way (through JSON) and loaded into a fresh optimizer
/// goes on bit for bit as the run that was not stopped.
#[test]
fn master_weights_resume_bit_identically() {
    let shape = [5, 4];
    let init = reduced(Dtype::BF16, &values(7, 20), &shape);
    let grads: Vec<Tensor> = (0..8)
        .map(|s| reduced(Dtype::BF16, &values(50 + s, 20), &shape))
        .collect();
    let kwargs = r#"{"lr": 0.01, "betas": [0.8, 0.99]}"#;
    let p = Param::new(init.clone());
    let mut opt = optim::build("adam", kwargs, master_group(vec![p.clone()])).unwrap();
    let mut saved = None;
    for (s, g) in grads.iter().enumerate() {
        if s == 4 {
            saved = Some((opt.state_dict().to_json().unwrap(), p.value()));
        }
        p.set_grad(g.clone()).unwrap();
        opt.step().unwrap();
    }
    let (json, at) = saved.unwrap();
    let sd = StateDict::from_json(&json).unwrap();
    assert_eq!(
        sd.param_groups[0]["master_weights"],
        serde_json::json!(true)
    );
    let q = Param::new(at);
    // The group's setting comes from the checkpoint, as torch's do.
    let mut resumed = optim::build("adam", kwargs, vec![GroupSpec::new([q.clone()])]).unwrap();
    resumed.load_state_dict(&sd).unwrap();
    for g in &grads[4..] {
        q.set_grad(g.clone()).unwrap();
        resumed.step().unwrap();
    }
    assert_eq!(q.value(), p.value());
    assert_eq!(resumed.state_dict(), opt.state_dict());
}

/// Master weights on a float32 parameter, a value that is not a bool, a
/// change of the setting mid-run, and checkpoints that do not fit are
/// typed errors; a failed load changes nothing.
#[test]
fn bad_master_weights_are_typed_errors() {
    let err = optim::build("adam", "{}", master_group(vec![Param::zeros::<f32>(&[2])]))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::DtypeUnsupported { what, dtype: Dtype::F32, refused_by: "Adam", .. } if what == "master_weights for parameter 0"),
        "{err}"
    );
    let bad = vec![
        GroupSpec::new([Param::new(reduced(Dtype::BF16, &[1.0], &[1]))]).set("master_weights", 1),
    ];
    let err = optim::build("adam", "{}", bad).err().unwrap();
    assert!(err.to_string().contains("expected true or false"), "{err}");
    // Optimizers without torch's 16-bit path step 16-bit parameters only in
    // a float32 mode's group; Prodigy (two passes over every parameter) and
    // Schedule-Free (train/eval moves the stored values) not even there.
    let half = || vec![Param::new(reduced(Dtype::F16, &[1.0], &[1]))];
    let err = optim::build("lamb", "{}", vec![GroupSpec::new(half())])
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::DtypeUnsupported { refused_by: "Lamb", supported, .. } if supported.contains("master_weights")),
        "{err}"
    );
    for (name, torch) in [
        ("prodigy", "Prodigy"),
        ("sgdschedulefree", "SGDScheduleFree"),
    ] {
        let err = optim::build(name, "{}", master_group(half()))
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::DtypeUnsupported { refused_by, supported, .. } if *refused_by == torch && !supported.contains("master_weights")),
            "{err}"
        );
    }
    // Nor does a checkpoint without the mode load into such a group.
    let p = Param::new(reduced(Dtype::BF16, &[1.0, 2.0], &[2]));
    let mut lion = optim::build("lion", "{}", master_group(vec![p.clone()])).unwrap();
    p.set_grad(reduced(Dtype::BF16, &[0.5, 0.5], &[2])).unwrap();
    lion.step().unwrap();
    let saved = lion.state_dict();
    let mut plain = saved.clone();
    plain.param_groups[0].remove("master_weights");
    plain.state.get_mut(&0).unwrap().remove("master_weight");
    let err = lion.load_state_dict(&plain).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::DtypeUnsupported {
                refused_by: "Lion",
                dtype: Dtype::BF16,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(lion.state_dict(), saved, "a failed load changes nothing");

    let p = Param::new(reduced(Dtype::BF16, &[1.0, 2.0], &[2]));
    let mut opt = optim::build("adam", "{}", master_group(vec![p.clone()])).unwrap();
    let err = opt
        .set_group_extra(0, "master_weights", false.into())
        .unwrap_err();
    assert!(
        err.to_string().contains("fixed when the group is added"),
        "{err}"
    );
    p.set_grad(reduced(Dtype::BF16, &[0.5, 0.5], &[2])).unwrap();
    opt.step().unwrap();
    let good = opt.state_dict();
    let value = p.value();

    // A master-weights checkpoint without the copy.
    let mut no_copy = good.clone();
    no_copy.state.get_mut(&0).unwrap().remove("master_weight");
    let err = opt.load_state_dict(&no_copy).unwrap_err();
    assert!(err.to_string().contains("state[0].master_weight"), "{err}");
    // A plain checkpoint's state is the parameter's dtype: a copy there is unknown.
    let mut plain = good.clone();
    plain.param_groups[0].remove("master_weights");
    let err = opt.load_state_dict(&plain).unwrap_err();
    assert!(err.to_string().contains("state[0].master_weight"), "{err}");
    // A master-weights checkpoint for a float32 parameter.
    let f = Param::zeros::<f32>(&[2]);
    let mut other = optim::build("adam", "{}", vec![GroupSpec::new([f])]).unwrap();
    let err = other.load_state_dict(&good).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DtypeUnsupported {
                dtype: Dtype::F32,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(opt.state_dict(), good);
    assert_eq!(p.value(), value);
}
