//! `kahan_summation` groups: a 16-bit parameter updated through a
//! compensation buffer in its own dtype, checked against the definition
//! written out here, for what it buys, across a checkpoint, and on bad input.

use crate::master_weights::{reduced, values, widened, CONFIGS};
use ferroptim::half::{bf16, f16};
use ferroptim::optim;
use ferroptim::{Dtype, Error, GroupSpec, Param, StateDict, StateValue, Tensor};

fn kahan_group(params: Vec<Param>) -> Vec<GroupSpec> {
    vec![GroupSpec::new(params).set("kahan_summation", true)]
}

/// `x` rounded to `dtype`, widened back.
fn round(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        _ => f16::from_f32(x).to_f32(),
    }
}

/// The definition: the float32 optimizer steps the widened parameter to x;
/// with Δ = x − θ, c ← c + Δ; θ' ← θ + c; c ← c + (θ − θ'), each operation
/// rounded to the parameter's dtype. The algorithm's state is the float32
/// run's, bit for bit.
#[test]
fn kahan_step_is_the_f32_step_added_through_the_compensation() {
    let shape = [13, 7];
    let n = 13 * 7;
    for dtype in [Dtype::BF16, Dtype::F16] {
        for (k, (name, kwargs)) in CONFIGS.iter().enumerate() {
            let init = reduced(dtype, &values(k as u64, n), &shape);
            let p = Param::new(init.clone());
            let p32 = Param::from_vec(widened(&init), &shape).unwrap();
            let mut opt = optim::build(name, kwargs, kahan_group(vec![p.clone()])).unwrap();
            let mut reference =
                optim::build(name, kwargs, vec![GroupSpec::new([p32.clone()])]).unwrap();
            let mut comp = vec![0.0f32; n];
            for step in 0..6 {
                let theta = widened(&p.value());
                let g = reduced(dtype, &values(100 + step, n), &shape);
                p32.set_value(Tensor::from_vec(theta.clone(), &shape).unwrap())
                    .unwrap();
                p32.set_grad(Tensor::from_vec(widened(&g), &shape).unwrap())
                    .unwrap();
                p.set_grad(g).unwrap();
                opt.step()
                    .unwrap_or_else(|e| panic!("{name} {dtype:?}: {e}"));
                reference.step().unwrap();
                let mut want = theta.clone();
                for ((t, c), x) in want.iter_mut().zip(&mut comp).zip(widened(&p32.value())) {
                    let old = *t;
                    *c = round(dtype, *c + (x - old));
                    *t = round(dtype, old + *c);
                    *c = round(dtype, *c + round(dtype, old - *t));
                }
                assert_eq!(widened(&p.value()), want, "{name} {dtype:?} step {step}");
            }
            let sd = opt.state_dict();
            let mut ours = sd.state[&0].clone();
            let Some(StateValue::Tensor(c)) = ours.remove("kahan_comp") else {
                panic!("{name}: no kahan_comp");
            };
            assert_eq!(c.dtype(), dtype);
            assert_eq!(widened(&c), comp, "{name} {dtype:?}");
            assert!(
                comp.iter().any(|&c| c != 0.0),
                "{name}: nothing compensated"
            );
            assert_eq!(ours, reference.state_dict().state[&0], "{name} {dtype:?}");
        }
    }
}

/// What the compensation buys: updates of 1e-3 on bfloat16 1.0 are lost by
/// round to nearest; with Kahan summation θ + c tracks the float32 run.
#[test]
fn kahan_summation_keeps_updates_below_half_an_ulp() {
    let run = |kahan: bool| {
        let p = Param::new(reduced(Dtype::BF16, &[1.0], &[1]));
        let group = GroupSpec::new([p.clone()]).set("kahan_summation", kahan);
        let mut opt = optim::build("sgd", r#"{"lr": 0.001}"#, vec![group]).unwrap();
        for _ in 0..20 {
            p.set_grad(reduced(Dtype::BF16, &[1.0], &[1])).unwrap();
            opt.step().unwrap();
        }
        widened(&p.value())[0]
    };
    assert_eq!(run(false), 1.0, "round to nearest loses every update");
    // 0.98 lies between the bfloat16 values 0.9765625 and 0.98046875.
    let theta = run(true);
    assert!((theta - 0.98).abs() < 2f32.powi(-8), "{theta}");
}

/// A run saved mid-way through JSON goes on bit for bit.
#[test]
fn kahan_summation_resumes_bit_identically() {
    let shape = [5, 4];
    let grads: Vec<Tensor> = (0..8)
        .map(|s| reduced(Dtype::F16, &values(50 + s, 20), &shape))
        .collect();
    let kwargs = r#"{"lr": 0.01, "momentum": 0.9}"#;
    let p = Param::new(reduced(Dtype::F16, &values(7, 20), &shape));
    let mut opt = optim::build("sgd", kwargs, kahan_group(vec![p.clone()])).unwrap();
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
    let q = Param::new(at);
    let mut resumed = optim::build("sgd", kwargs, vec![GroupSpec::new([q.clone()])]).unwrap();
    resumed.load_state_dict(&sd).unwrap();
    for g in &grads[4..] {
        q.set_grad(g.clone()).unwrap();
        resumed.step().unwrap();
    }
    assert_eq!(q.value(), p.value());
    assert_eq!(resumed.state_dict(), opt.state_dict());
}

/// Kahan summation on a float32 parameter, with another mode, and a
/// checkpoint without its buffer are typed errors; a failed load changes
/// nothing.
#[test]
fn bad_kahan_summation_is_a_typed_error() {
    let err = optim::build("adam", "{}", kahan_group(vec![Param::zeros::<f32>(&[1])]))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::DtypeUnsupported { what, dtype: Dtype::F32, .. } if what == "kahan_summation for parameter 0"),
        "{err}"
    );
    let p = Param::new(reduced(Dtype::BF16, &[1.0, 2.0], &[2]));
    let both = GroupSpec::new([p.clone()])
        .set("stochastic_rounding", true)
        .set("kahan_summation", true);
    let err = optim::build("adam", "{}", vec![both]).err().unwrap();
    assert!(err.to_string().contains("cannot both be true"), "{err}");

    let mut opt = optim::build("adam", "{}", kahan_group(vec![p.clone()])).unwrap();
    p.set_grad(reduced(Dtype::BF16, &[0.5, 0.5], &[2])).unwrap();
    opt.step().unwrap();
    let good = opt.state_dict();
    let value = p.value();
    let mut no_comp = good.clone();
    no_comp.state.get_mut(&0).unwrap().remove("kahan_comp");
    let err = opt.load_state_dict(&no_comp).unwrap_err();
    assert!(err.to_string().contains("state[0].kahan_comp"), "{err}");
    let mut wrong_shape = good.clone();
    wrong_shape.state.get_mut(&0).unwrap().insert(
        "kahan_comp".into(),
        StateValue::Tensor(reduced(Dtype::BF16, &[0.0; 3], &[3])),
    );
    let err = opt.load_state_dict(&wrong_shape).unwrap_err();
    assert!(err.to_string().contains("kahan_comp"), "{err}");
    assert_eq!(opt.state_dict(), good);
    assert_eq!(p.value(), value);
}
