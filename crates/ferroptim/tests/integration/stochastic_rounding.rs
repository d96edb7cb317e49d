//! `stochastic_rounding` groups: a bfloat16 parameter stepped in float32
//! and rounded to a random neighbour, checked against its definition, for
//! what it buys, across thread counts and a checkpoint, and on bad input.

use crate::master_weights::{reduced, values, widened, CONFIGS};
use ferroptim::half::bf16;
use ferroptim::optim;
use ferroptim::{Dtype, Error, GroupSpec, Param, StateDict, StateValue, Tensor};

fn rounded_group(params: Vec<Param>) -> Vec<GroupSpec> {
    vec![GroupSpec::new(params).set("stochastic_rounding", true)]
}

/// The two bfloat16 values around `x` (one if `x` is one).
fn neighbours(x: f32) -> [f32; 2] {
    let lo = f32::from_bits(x.to_bits() & 0xFFFF_0000);
    let hi = bf16::from_bits(bf16::from_f32(lo).to_bits() + 1).to_f32();
    [lo, if lo == x { lo } else { hi }]
}

/// The definition: each step is the float32 optimizer's step from the
/// widened parameter (its state the float32 run's, bit for bit), and each
/// value is rounded to one of the two bfloat16 values around the float32
/// result; over the run both directions occur.
#[test]
fn stochastic_rounding_step_is_the_f32_step_rounded_to_a_neighbour() {
    let shape = [13, 7];
    let n = 13 * 7;
    for (k, (name, kwargs)) in CONFIGS.iter().enumerate() {
        let init = reduced(Dtype::BF16, &values(k as u64, n), &shape);
        let p = Param::new(init.clone());
        let p32 = Param::from_vec(widened(&init), &shape).unwrap();
        let mut opt = optim::build(name, kwargs, rounded_group(vec![p.clone()])).unwrap();
        let mut reference =
            optim::build(name, kwargs, vec![GroupSpec::new([p32.clone()])]).unwrap();
        let (mut up, mut down) = (0, 0);
        for step in 0..6 {
            let g = reduced(Dtype::BF16, &values(100 + step, n), &shape);
            p32.set_value(Tensor::from_vec(widened(&p.value()), &shape).unwrap())
                .unwrap();
            p32.set_grad(Tensor::from_vec(widened(&g), &shape).unwrap())
                .unwrap();
            p.set_grad(g).unwrap();
            opt.step().unwrap_or_else(|e| panic!("{name}: {e}"));
            reference.step().unwrap();
            for (&y, &x) in widened(&p.value()).iter().zip(&widened(&p32.value())) {
                let [lo, hi] = neighbours(x);
                assert!(y == lo || y == hi, "{name} step {step}: {x} -> {y}");
                up += usize::from(y == hi && lo != hi);
                down += usize::from(y == lo && lo != hi);
            }
        }
        assert!(up > 0 && down > 0, "{name}: {up} up, {down} down");
        let sd = opt.state_dict();
        let mut ours = sd.state[&0].clone();
        assert_eq!(ours.remove("rounding_step"), Some(StateValue::Int(6)));
        assert_eq!(ours.remove("rounding_seed"), Some(StateValue::Int(0)));
        assert_eq!(ours, reference.state_dict().state[&0], "{name}");
    }
}

/// What stochastic rounding buys: an update of 1e-3 a step on bfloat16 1.0
/// (half an ulp is 2^-8) is lost every step by round to nearest; rounded
/// stochastically, 256 values move on average as the float32 run does.
#[test]
fn stochastic_rounding_keeps_updates_below_half_an_ulp_on_average() {
    let run = |rounding: bool| {
        let p = Param::new(reduced(Dtype::BF16, &[1.0; 256], &[256]));
        let group = GroupSpec::new([p.clone()]).set("stochastic_rounding", rounding);
        let mut opt = optim::build("sgd", r#"{"lr": 0.001}"#, vec![group]).unwrap();
        for _ in 0..100 {
            p.set_grad(reduced(Dtype::BF16, &[1.0; 256], &[256]))
                .unwrap();
            opt.step().unwrap();
        }
        widened(&p.value()).iter().sum::<f32>() / 256.0
    };
    assert_eq!(run(false), 1.0, "round to nearest loses every update");
    let mean = run(true);
    assert!((mean - 0.9).abs() < 0.005, "mean {mean}, the f32 run 0.9");
}

/// The draws hang on (seed, step, element), not on the threads; a run
/// saved mid-way through JSON goes on bit for bit.
#[test]
fn stochastic_rounding_is_the_same_on_any_thread_count_and_resumes_bit_identically() {
    let _threads = crate::thread_count_lock();
    let shape = [3, 40];
    let grads: Vec<Tensor> = (0..8)
        .map(|s| reduced(Dtype::BF16, &values(50 + s, 120), &shape))
        .collect();
    let kwargs = r#"{"lr": 0.01, "betas": [0.8, 0.99]}"#;
    let run = |threads: usize| {
        ferroptim::set_num_threads(threads).unwrap();
        let ps: Vec<Param> = (0..3)
            .map(|i| Param::new(reduced(Dtype::BF16, &values(i, 120), &shape)))
            .collect();
        let mut opt = optim::build("adam", kwargs, rounded_group(ps.clone())).unwrap();
        let mut saved = None;
        for (s, g) in grads.iter().enumerate() {
            if s == 4 {
                let values: Vec<Tensor> = ps.iter().map(Param::value).collect();
                saved = Some((opt.state_dict().to_json().unwrap(), values));
            }
            for p in &ps {
                p.set_grad(g.clone()).unwrap();
            }
            opt.step().unwrap();
        }
        let end: Vec<Tensor> = ps.iter().map(Param::value).collect();
        (end, opt.state_dict(), saved.unwrap())
    };
    let (one, sd_one, (json, at)) = run(1);
    let (two, sd_two, _) = run(2);
    ferroptim::set_num_threads(1).unwrap();
    assert_eq!(one, two, "1 and 2 threads differ");
    assert_eq!(sd_one, sd_two);

    let sd = StateDict::from_json(&json).unwrap();
    let qs: Vec<Param> = at.into_iter().map(Param::new).collect();
    // The group's setting comes from the checkpoint.
    let mut resumed = optim::build("adam", kwargs, vec![GroupSpec::new(qs.clone())]).unwrap();
    resumed.load_state_dict(&sd).unwrap();
    for g in &grads[4..] {
        for q in &qs {
            q.set_grad(g.clone()).unwrap();
        }
        resumed.step().unwrap();
    }
    let end: Vec<Tensor> = qs.iter().map(Param::value).collect();
    assert_eq!(end, one);
    assert_eq!(resumed.state_dict(), sd_one);
}

/// Stochastic rounding on a float16 or float32 parameter, together with
/// master weights, and checkpoints without its counter or with a bad one
/// are typed errors; a failed load changes nothing.
#[test]
fn bad_stochastic_rounding_is_a_typed_error() {
    for (p, dtype) in [
        (Param::new(reduced(Dtype::F16, &[1.0], &[1])), Dtype::F16),
        (Param::zeros::<f32>(&[1]), Dtype::F32),
    ] {
        let err = optim::build("adam", "{}", rounded_group(vec![p]))
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::DtypeUnsupported { what, dtype: d, .. } if *d == dtype && what == "stochastic_rounding for parameter 0"),
            "{err}"
        );
    }
    let p = Param::new(reduced(Dtype::BF16, &[1.0, 2.0], &[2]));
    let both = GroupSpec::new([p.clone()])
        .set("master_weights", true)
        .set("stochastic_rounding", true);
    let err = optim::build("adam", "{}", vec![both]).err().unwrap();
    assert!(err.to_string().contains("cannot both be true"), "{err}");

    let mut opt = optim::build("adam", "{}", rounded_group(vec![p.clone()])).unwrap();
    p.set_grad(reduced(Dtype::BF16, &[0.5, 0.5], &[2])).unwrap();
    opt.step().unwrap();
    let good = opt.state_dict();
    let value = p.value();
    let mut no_step = good.clone();
    no_step.state.get_mut(&0).unwrap().remove("rounding_step");
    let err = opt.load_state_dict(&no_step).unwrap_err();
    assert!(err.to_string().contains("state[0].rounding_step"), "{err}");
    let mut negative = good.clone();
    negative
        .state
        .get_mut(&0)
        .unwrap()
        .insert("rounding_seed".into(), StateValue::Int(-1));
    let err = opt.load_state_dict(&negative).unwrap_err();
    assert!(err.to_string().contains("state[0].rounding_seed"), "{err}");
    let mut both = good.clone();
    both.param_groups[0].insert("master_weights".into(), true.into());
    let err = opt.load_state_dict(&both).unwrap_err();
    assert!(err.to_string().contains("cannot both be true"), "{err}");
    assert_eq!(opt.state_dict(), good);
    assert_eq!(p.value(), value);
}
