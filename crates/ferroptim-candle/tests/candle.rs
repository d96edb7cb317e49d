//! ferroptim's optimizers in candle training loops: parity with candle_nn's
//! AdamW, parity with ferroptim on its own `Param`s, param groups,
//! schedulers, checkpoints and typed errors.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as _;
use ferroptim::lr_scheduler::{LrScheduler, StepLR, StepLRConfig};
use ferroptim::optim::{self, AdamConfig, AdamWConfig, SgdConfig};
use ferroptim::{Algorithm, GroupSpec, Optim, Optimizer, Param, StateDict};
use ferroptim_candle::{CandleLbfgs, CandleOptim, CandleParam, Error};

/// Deterministic values in [-1, 1) (a small LCG), so that both sides of a
/// comparison start from the same numbers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A 2-layer MLP (8 -> 16 -> 4, tanh) as plain Vars: w1, b1, w2, b2.
fn mlp_vars(seed: u64) -> Vec<Var> {
    let dev = Device::Cpu;
    let shapes: [&[usize]; 4] = [&[16, 8], &[16], &[4, 16], &[4]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            let v: Vec<f32> = values(n, seed + i as u64).iter().map(|x| x * 0.5).collect();
            Var::from_vec(v, *s, &dev).unwrap()
        })
        .collect()
}

fn batch() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(values(32 * 8, 99), (32, 8), &dev).unwrap();
    let labels: Vec<u32> = (0..32).map(|i| (i * 7 % 4) as u32).collect();
    (x, Tensor::from_vec(labels, 32, &dev).unwrap())
}

fn loss(vars: &[Var], x: &Tensor, y: &Tensor) -> Tensor {
    let h = x
        .matmul(&vars[0].as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(vars[1].as_tensor())
        .unwrap()
        .tanh()
        .unwrap();
    let logits = h
        .matmul(&vars[2].as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(vars[3].as_tensor())
        .unwrap();
    candle_nn::loss::cross_entropy(&logits, y).unwrap()
}

fn flat(vars: &[Var]) -> Vec<f32> {
    vars.iter()
        .flat_map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn adamw_ends_where_candle_nn_adamw_ends() {
    let (x, y) = batch();
    let ours = mlp_vars(1);
    let theirs = mlp_vars(1);
    let (lr, wd, steps) = (0.01, 0.05, 100);
    let mut opt = ferroptim_candle::AdamW::new(
        ours.clone(),
        AdamWConfig {
            lr,
            weight_decay: wd,
            ..Default::default()
        },
    )
    .unwrap();
    let mut reference = candle_nn::AdamW::new(
        theirs.clone(),
        candle_nn::ParamsAdamW {
            lr,
            weight_decay: wd,
            ..Default::default()
        },
    )
    .unwrap();
    let start = loss(&ours, &x, &y).to_scalar::<f32>().unwrap();
    for _ in 0..steps {
        opt.backward_step(&loss(&ours, &x, &y)).unwrap();
        reference.backward_step(&loss(&theirs, &x, &y)).unwrap();
    }
    let end = loss(&ours, &x, &y).to_scalar::<f32>().unwrap();
    assert!(end < start * 0.5, "trained: {start} -> {end}");
    let (a, b) = (flat(&ours), flat(&theirs));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
        .fold(0.0f32, f32::max);
    // Both are f32 Adam with decoupled decay; only the rounding of the
    // bias corrections differs (torch's formula vs candle's).
    assert!(worst < 2e-5, "worst relative difference {worst}");
    assert!(a != flat(&mlp_vars(1)), "the parameters moved");
}

/// Runs `steps` of algorithm `config` through candle and through ferroptim
/// on its own Params with the same gradients; they must agree bit for bit,
/// as both run the same kernels.
/// ferroptim parameters holding the values of `vars`.
fn params_like(vars: &[Var]) -> Vec<Param> {
    vars.iter()
        .map(|v| {
            Param::from_vec(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v.dims()).unwrap()
        })
        .collect()
}

/// Sets each of `params`' gradient to candle's gradient of the matching Var.
fn copy_grads(grads: &candle_core::backprop::GradStore, vars: &[Var], params: &[Param]) {
    for (v, p) in vars.iter().zip(params) {
        let g = grads.get(v.as_tensor()).unwrap();
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        p.set_grad(ferroptim::Tensor::from_vec(g, v.dims()).unwrap())
            .unwrap();
    }
}

fn same_as_ferroptim<A: Algorithm>(config: A, steps: usize) {
    let (x, y) = batch();
    let vars = mlp_vars(7);
    let params = params_like(&vars);
    let mut ours = CandleOptim::from_vars(vars.clone(), config.clone()).unwrap();
    let mut native = Optim::new(params.clone(), config).unwrap();
    // Schedule-Free steps in train mode (the others ignore it).
    ours.train().unwrap();
    native.train().unwrap();
    for step in 0..steps {
        let grads = loss(&vars, &x, &y).backward().unwrap();
        copy_grads(&grads, &vars, &params);
        candle_nn::Optimizer::step(&mut ours, &grads).unwrap();
        native.step().unwrap();
        for (i, (v, p)) in vars.iter().zip(&params).enumerate() {
            let got = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                got,
                p.to_vec::<f32>().unwrap(),
                "{} step {step} param {i}",
                A::NAME
            );
        }
    }
    assert_eq!(ours.state_dict(), native.state_dict(), "{}", A::NAME);
    // And eval() moves both the same way.
    ours.eval().unwrap();
    native.eval().unwrap();
    for (v, p) in vars.iter().zip(&params) {
        let got = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, p.to_vec::<f32>().unwrap(), "{} after eval()", A::NAME);
    }
}

#[test]
fn every_algorithm_updates_vars_exactly_as_ferroptim_updates_params() {
    let steps = 5;
    same_as_ferroptim(
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        AdamConfig {
            amsgrad: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(AdamWConfig::default(), steps);
    same_as_ferroptim(optim::AdamaxConfig::default(), steps);
    same_as_ferroptim(optim::AdadeltaConfig::default(), steps);
    same_as_ferroptim(optim::AdagradConfig::default(), steps);
    same_as_ferroptim(
        optim::RmspropConfig {
            centered: true,
            momentum: 0.5,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::AsgdConfig {
            t0: 2.0,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(optim::RpropConfig::default(), steps);
    same_as_ferroptim(optim::NAdamConfig::default(), steps);
    same_as_ferroptim(optim::RAdamConfig::default(), steps);
    same_as_ferroptim(optim::AdafactorConfig::default(), steps);
    same_as_ferroptim(
        optim::LionConfig {
            lr: 0.01,
            weight_decay: 0.1,
            decoupled_weight_decay: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::LarsConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            trust_clip: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::LambConfig {
            lr: 0.01,
            weight_decay: 0.01,
            pre_norm: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::LambConfig {
            lr: 0.01,
            rectify: true,
            degenerated_to_sgd: true,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::AdanConfig {
            lr: 0.01,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(optim::AdoptConfig::default(), steps);
    same_as_ferroptim(
        optim::AdoptConfig {
            cautious: true,
            stable_adamw: true,
            weight_decay: 0.1,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::SgdScheduleFreeConfig {
            lr: 0.1,
            weight_decay: 0.01,
            warmup_steps: 2,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::AdamWScheduleFreeConfig {
            weight_decay: 0.01,
            r: 0.5,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(optim::AdEMAMixConfig::default(), steps);
    same_as_ferroptim(
        optim::AdEMAMixConfig {
            cautious: true,
            stable_adamw: true,
            t_alpha_beta3: Some(3.0),
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(optim::ProdigyConfig::default(), steps);
    // A basis by QR every other step, vectors preconditioned too.
    same_as_ferroptim(
        optim::SoapConfig {
            precondition_frequency: 2,
            precondition_1d: true,
            weight_decay: 0.01,
            ..Default::default()
        },
        steps,
    );
    same_as_ferroptim(
        optim::ProdigyConfig {
            betas: (0.0, 0.99),
            weight_decay: 0.01,
            decouple: false,
            use_bias_correction: true,
            safeguard_warmup: true,
            slice_p: 3,
            ..Default::default()
        },
        steps,
    );
}

#[test]
fn muon_takes_the_matrices_and_refuses_the_rest() {
    let vars = mlp_vars(3);
    let matrices = vec![vars[0].clone(), vars[2].clone()];
    let mut opt =
        ferroptim_candle::Muon::new(matrices.clone(), optim::MuonConfig::default()).unwrap();
    let (x, y) = batch();
    let before = flat(&matrices);
    opt.backward_step(&loss(&vars, &x, &y)).unwrap();
    assert_ne!(flat(&matrices), before);
    let err = CandleOptim::from_vars(vars, optim::MuonConfig::default()).unwrap_err();
    assert!(err.to_string().contains("2D"), "{err}");
}

#[test]
fn param_groups_and_a_scheduler_work_through_the_adapter() {
    let vars = mlp_vars(5);
    let param = |i: usize| CandleParam::new(vars[i].clone(), i).unwrap();
    let mut opt = ferroptim_candle::Sgd::with_groups(
        [
            GroupSpec::new([param(0), param(2)]),
            GroupSpec::new([param(1), param(3)]).set("lr", 0.0),
        ],
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    let mut sched = StepLR::new(
        &mut *opt,
        StepLRConfig {
            step_size: 2,
            gamma: 0.5,
            last_epoch: -1,
        },
    )
    .unwrap();
    let (x, y) = batch();
    let biases = [flat(&vars[1..2]), flat(&vars[3..4])];
    let weights = flat(&vars[0..1]);
    for _ in 0..4 {
        opt.backward_step(&loss(&vars, &x, &y)).unwrap();
        sched.step(&mut *opt).unwrap();
    }
    assert_eq!(
        [flat(&vars[1..2]), flat(&vars[3..4])],
        biases,
        "lr 0 group moved"
    );
    assert_ne!(flat(&vars[0..1]), weights);
    assert_eq!(opt.lr(0), Some(0.125));
    assert_eq!(opt.learning_rate(), 0.125);
    opt.set_learning_rate(0.01);
    assert_eq!((opt.lr(0), opt.lr(1)), (Some(0.01), Some(0.01)));
    // The same Var twice is refused, as torch refuses a parameter in two groups.
    let err = opt.add_param_group(GroupSpec::new([param(0)])).unwrap_err();
    assert!(err.to_string().contains("more than one"), "{err}");
}

#[test]
fn a_checkpoint_resumes_bit_for_bit() {
    let (x, y) = batch();
    let config = AdamConfig {
        lr: 0.01,
        amsgrad: true,
        ..Default::default()
    };
    let straight = mlp_vars(11);
    let mut opt = ferroptim_candle::Adam::new(straight.clone(), config.clone()).unwrap();
    for _ in 0..20 {
        opt.backward_step(&loss(&straight, &x, &y)).unwrap();
    }

    let first = mlp_vars(11);
    let mut opt = ferroptim_candle::Adam::new(first.clone(), config.clone()).unwrap();
    for _ in 0..10 {
        opt.backward_step(&loss(&first, &x, &y)).unwrap();
    }
    let bytes = opt.state_dict().to_safetensors().unwrap();
    let resumed: Vec<Var> = first
        .iter()
        .map(|v| Var::from_tensor(v.as_tensor()).unwrap())
        .collect();
    let mut opt = ferroptim_candle::Adam::new(resumed.clone(), config).unwrap();
    opt.load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap();
    for _ in 10..20 {
        opt.backward_step(&loss(&resumed, &x, &y)).unwrap();
    }
    assert_eq!(flat(&resumed), flat(&straight));
}

#[test]
fn unsupported_dtypes_and_bad_gradients_are_typed_errors() {
    let dev = Device::Cpu;
    let half = Var::zeros((2, 2), DType::U32, &dev).unwrap();
    let ok = Var::zeros((2, 2), DType::F32, &dev).unwrap();
    let err =
        ferroptim_candle::Adam::from_vars(vec![ok.clone(), half.clone()], AdamConfig::default())
            .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedDtype {
                param: 1,
                dtype: DType::U32
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("f32, f64, bf16 and f16"), "{err}");
    // Through candle's trait the same error arrives wrapped in candle's.
    let err = ferroptim_candle::Adam::new(vec![half], AdamConfig::default()).unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");

    let mut opt =
        ferroptim_candle::Adam::from_vars(vec![ok.clone()], AdamConfig::default()).unwrap();
    let y = (ok.as_tensor().sum_all().unwrap() * f64::NAN).unwrap();
    let grads = y.backward().unwrap();
    assert_eq!(
        opt.step_if_finite_with(&grads).unwrap(),
        ferroptim::StepOutcome::Skipped { param: 0 }
    );
    assert_eq!(flat(std::slice::from_ref(&ok)), [0.0; 4]);
    assert!(ferroptim_candle::Adam::from_vars(
        vec![ok],
        AdamConfig {
            lr: -1.0,
            ..Default::default()
        }
    )
    .unwrap_err()
    .to_string()
    .contains("Invalid learning rate"));
}

#[test]
fn lbfgs_through_candle_matches_lbfgs_on_params() {
    let config = optim::LbfgsConfig {
        line_search_fn: Some(optim::LineSearch::StrongWolfe),
        ..Default::default()
    };
    let dev = Device::Cpu;
    let x = Var::new(&[-1.5f64, 2.0], &dev).unwrap();
    let mut opt = CandleLbfgs::new(vec![x.clone()], config.clone()).unwrap();
    // Rosenbrock, with candle's autograd.
    let rosen = |x: &Tensor| {
        let (a, b) = (x.get(0).unwrap(), x.get(1).unwrap());
        let t1 = (1.0 - &a).unwrap().sqr().unwrap();
        let t2 = ((b - a.sqr().unwrap()).unwrap().sqr().unwrap() * 100.0).unwrap();
        (t1 + t2).unwrap()
    };
    // The same, with the analytic gradient, on a ferroptim Param.
    let p = Param::from_vec(vec![-1.5f64, 2.0], &[2]).unwrap();
    let mut native = optim::Lbfgs::new([p.clone()], config).unwrap();
    for _ in 0..5 {
        let ours = opt.step(|| Ok(rosen(x.as_tensor()))).unwrap();
        let theirs = native
            .step_with_closure(&mut || {
                let v = p.to_vec::<f64>()?;
                let (a, b) = (v[0], v[1]);
                let g = vec![
                    -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                    200.0 * (b - a * a),
                ];
                p.set_grad(ferroptim::Tensor::from_vec(g, &[2])?)?;
                Ok((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2))
            })
            .unwrap();
        assert!(
            (ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0),
            "{ours} vs {theirs}"
        );
    }
    let got = x.to_vec1::<f64>().unwrap();
    let want = p.to_vec::<f64>().unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-9, "{got:?} vs {want:?}");
    }
    assert!((got[0] - 1.0).abs() < 1e-3, "{got:?}");
    assert_eq!(
        opt.state_dict().state.len(),
        1,
        "LBFGS keeps its state under param 0"
    );
}

mod varmap_runs {
    //! A candle user's training run: an MLP from a `VarMap`, AdamW with
    //! weights and biases in two groups, warmup then cosine, clipping as a
    //! step option, and one-file checkpoints, resumed in fresh processes.

    use candle_core::{DType, Device, Module, Tensor};
    use candle_nn::{Linear, VarBuilder, VarMap};
    use ferroptim::lr_scheduler::{
        CosineAnnealingLR, CosineAnnealingLRConfig, LinearLR, LinearLRConfig, LrScheduler,
        SequentialLR,
    };
    use ferroptim::optim::AdamWConfig;
    use ferroptim_candle::{
        load_model, model_tensors, named_params, AdamW, ClipGradNorm, GroupSpec, Optimizer,
        TrainingCheckpoint,
    };

    pub struct Run {
        pub varmap: VarMap,
        layers: Vec<Linear>,
        pub opt: AdamW,
        sched: SequentialLR,
        x: Tensor,
        y: Tensor,
    }

    impl Run {
        /// Two 4x4 layers (same shapes: a swap by position would load
        /// silently) and a head; `reverse` creates the layers in the other order.
        pub fn new(reverse: bool) -> Run {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let mut specs = [("fc1", 4, 4), ("fc2", 4, 4), ("head", 4, 3)];
            if reverse {
                specs.reverse();
            }
            let mut layers: Vec<(String, Linear)> = specs
                .iter()
                .map(|&(name, i, o)| {
                    (
                        name.to_string(),
                        candle_nn::linear(i, o, vb.pp(name)).unwrap(),
                    )
                })
                .collect();
            layers.sort_by(|a, b| a.0.cmp(&b.0));
            let (biases, weights): (Vec<_>, Vec<_>) = named_params(&varmap)
                .unwrap()
                .into_iter()
                .partition(|(n, _)| n.ends_with("bias"));
            let groups = vec![
                GroupSpec::named(weights),
                GroupSpec::named(biases).set("weight_decay", 0.0),
            ];
            let config = AdamWConfig {
                lr: 0.05,
                ..Default::default()
            };
            let mut opt = AdamW::with_groups(groups, config).unwrap();
            opt.set_clip_grad_norm(Some(ClipGradNorm::new(0.5)));
            let warmup = LinearLR::new(
                &mut opt,
                LinearLRConfig {
                    start_factor: 0.1,
                    total_iters: 3,
                    ..Default::default()
                },
            )
            .unwrap();
            let cosine =
                CosineAnnealingLR::new(&mut opt, CosineAnnealingLRConfig::new(20)).unwrap();
            let sched =
                SequentialLR::new(&mut opt, vec![Box::new(warmup), Box::new(cosine)], vec![3])
                    .unwrap();
            let dev = Device::Cpu;
            let x = Tensor::from_vec(super::values(16 * 4, 5), (16, 4), &dev).unwrap();
            let y =
                Tensor::from_vec((0..16u32).map(|i| i % 3).collect::<Vec<_>>(), 16, &dev).unwrap();
            Run {
                varmap,
                layers: layers.into_iter().map(|(_, l)| l).collect(),
                opt,
                sched,
                x,
                y,
            }
        }

        pub fn steps(&mut self, n: usize) {
            for _ in 0..n {
                let h = self.layers[0].forward(&self.x).unwrap().tanh().unwrap();
                let h = self.layers[1].forward(&h).unwrap().tanh().unwrap();
                let logits = self.layers[2].forward(&h).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &self.y).unwrap();
                self.opt.step_with(&loss.backward().unwrap()).unwrap();
                self.sched.step(&mut self.opt).unwrap();
            }
        }

        pub fn checkpoint(&self, epoch: usize) -> TrainingCheckpoint {
            TrainingCheckpoint::new(&self.opt)
                .with_model(model_tensors(&self.varmap).unwrap())
                .with_scheduler(&self.sched)
                .with("epoch", epoch)
        }

        pub fn resume(&mut self, ckpt: &TrainingCheckpoint) {
            load_model(&self.varmap, &ckpt.model).unwrap();
            self.opt.load_state_dict(&ckpt.optimizer).unwrap();
            self.sched.load_state_dict(&ckpt.schedulers[0]).unwrap();
        }
    }
}

/// The child process of `a_varmap_model_resumes_bit_identically_in_fresh_processes`
/// (run by it with `--ignored`): `train` starts a run, saves its initial
/// weights and, after 6 steps, a checkpoint; `resume` loads that
/// checkpoint into a run built in the other order and takes 6 more steps.
#[test]
#[ignore = "a child process of a_varmap_model_resumes_bit_identically_in_fresh_processes"]
fn varmap_resume_child() {
    let dir = std::path::PathBuf::from(std::env::var("FERROPTIM_RESUME_DIR").unwrap());
    match std::env::var("FERROPTIM_RESUME_MODE").unwrap().as_str() {
        "train" => {
            let mut run = varmap_runs::Run::new(false);
            run.checkpoint(0)
                .save(dir.join("init.safetensors"))
                .unwrap();
            run.steps(6);
            run.checkpoint(6).save(dir.join("mid.safetensors")).unwrap();
        }
        _ => {
            let mut run = varmap_runs::Run::new(true);
            let ckpt =
                ferroptim_candle::TrainingCheckpoint::load(dir.join("mid.safetensors")).unwrap();
            assert_eq!(ckpt.metadata["epoch"], 6);
            run.resume(&ckpt);
            run.steps(6);
            run.checkpoint(12)
                .save(dir.join("end.safetensors"))
                .unwrap();
        }
    }
}

/// Trains 6 steps in one process, resumes in another (fresh hash order of
/// the VarMap, layers created in the other order), and ends bit-identical
/// to 12 uninterrupted steps here, state and learning rates included.
#[test]
fn a_varmap_model_resumes_bit_identically_in_fresh_processes() {
    let dir = std::env::temp_dir().join(format!("ferroptim-varmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in ["train", "resume"] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "varmap_resume_child",
                "--test-threads",
                "1",
            ])
            .env("FERROPTIM_RESUME_DIR", &dir)
            .env("FERROPTIM_RESUME_MODE", mode)
            .status()
            .unwrap();
        assert!(status.success(), "child {mode} failed");
    }
    let init = ferroptim_candle::TrainingCheckpoint::load(dir.join("init.safetensors")).unwrap();
    let end = ferroptim_candle::TrainingCheckpoint::load(dir.join("end.safetensors")).unwrap();
    let mut straight = varmap_runs::Run::new(false);
    ferroptim_candle::load_model(&straight.varmap, &init.model).unwrap();
    straight.steps(12);
    let here = straight.checkpoint(12);
    assert_eq!(here.model, end.model);
    assert_eq!(here.optimizer, end.optimizer);
    assert_eq!(here.schedulers, end.schedulers);
    assert!(straight.opt.last_grad_norm().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clipping_candle_gradients_matches_clipping_params_in_place() {
    let vars = mlp_vars(3);
    let (x, y) = batch();
    for norm_type in [2.0, 1.0, 3.5, f64::INFINITY] {
        let grads = loss(&vars, &x, &y).backward().unwrap();
        let params: Vec<Param> = vars
            .iter()
            .map(|v| {
                let p = Param::zeros::<f32>(v.dims());
                let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
                p.set_grad(
                    ferroptim::Tensor::from_vec(g.to_vec1::<f32>().unwrap(), v.dims()).unwrap(),
                )
                .unwrap();
                p
            })
            .collect();
        let want = ferroptim::clip::clip_grad_norm(&params, 0.1, norm_type, false).unwrap();
        let opt = CandleOptim::from_vars(vars.clone(), SgdConfig::default()).unwrap();
        let clip = ferroptim_candle::ClipGradNorm {
            max_norm: 0.1,
            norm_type,
            error_if_nonfinite: true,
        };
        let total = opt.clip_grad_norm(&grads, clip).unwrap();
        assert_eq!(total, want, "norm {norm_type}");
        // The GradStore's own tensors were scaled, in place.
        for (v, p) in vars.iter().zip(&params) {
            let got = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let Some(ferroptim::Grad::Dense(want)) = p.grad() else {
                unreachable!()
            };
            assert_eq!(
                got,
                want.as_slice::<f32>().unwrap().to_vec(),
                "norm {norm_type}"
            );
        }
    }
    // A NaN gradient with error_if_nonfinite: a typed error, nothing scaled.
    let nan = (loss(&vars, &x, &y) * f64::NAN)
        .unwrap()
        .backward()
        .unwrap();
    let opt = CandleOptim::from_vars(vars.clone(), SgdConfig::default()).unwrap();
    let err = opt
        .clip_grad_norm(
            &nan,
            ferroptim_candle::ClipGradNorm {
                error_if_nonfinite: true,
                ..ferroptim_candle::ClipGradNorm::new(1.0)
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn clipping_as_a_step_option_is_clipping_then_stepping() {
    let (x, y) = batch();
    let (a, b) = (mlp_vars(4), mlp_vars(4));
    let config = AdamWConfig {
        lr: 0.01,
        ..Default::default()
    };
    let mut with_option = CandleOptim::from_vars(a.clone(), config.clone()).unwrap();
    with_option.set_clip_grad_norm(Some(ferroptim_candle::ClipGradNorm::new(0.05)));
    let mut by_hand = CandleOptim::from_vars(b.clone(), config).unwrap();
    for _ in 0..3 {
        with_option.backward_step(&loss(&a, &x, &y)).unwrap();
        let grads = loss(&b, &x, &y).backward().unwrap();
        let total = by_hand
            .clip_grad_norm(&grads, ferroptim_candle::ClipGradNorm::new(0.05))
            .unwrap();
        by_hand.step_with(&grads).unwrap();
        assert_eq!(with_option.last_grad_norm(), Some(total));
        assert!(total > 0.05, "the test must clip: {total}");
    }
    assert_eq!(flat(&a), flat(&b));
}

#[test]
fn a_torch_models_weights_load_into_a_varmap() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ferroptim/tests/fixtures/torch_pt/training.pt");
    let file = ferroptim::TorchCheckpoint::load(&path).unwrap();
    let weights = file.tensors("model").unwrap();
    // A VarMap of the same names and shapes (as a candle port of the model would make).
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    for (name, t) in &weights {
        vb.get(t.shape(), name).unwrap();
    }
    ferroptim_candle::load_model(&varmap, &weights).unwrap();
    let back = ferroptim_candle::model_tensors(&varmap).unwrap();
    let mut want = weights.clone();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    for ((n, got), (m, want)) in back.iter().zip(&want) {
        assert_eq!((n, got.to_f64_vec()), (m, want.to_f64_vec()));
    }
    // Strict: a missing name is an error and nothing changes.
    let before = ferroptim_candle::model_tensors(&varmap).unwrap();
    let err = ferroptim_candle::load_model(&varmap, &weights[1..]).unwrap_err();
    assert!(matches!(err, Error::ModelMismatch { .. }), "{err}");
    let mut renamed = weights.clone();
    renamed[0].0 = "0.kernel".into();
    assert!(ferroptim_candle::load_model(&varmap, &renamed).is_err());
    assert_eq!(ferroptim_candle::model_tensors(&varmap).unwrap(), before);
}

#[test]
fn a_varmap_optimizer_is_named_in_name_order_and_a_ferroptim_optimizer() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_nn::linear(3, 2, vb.pp("z")).unwrap();
    candle_nn::linear(2, 2, vb.pp("a")).unwrap();
    let mut opt = ferroptim_candle::AdamW::from_varmap(&varmap, AdamWConfig::default()).unwrap();
    assert_eq!(
        opt.param_groups()[0].names().unwrap(),
        ["a.bias", "a.weight", "z.bias", "z.weight"]
    );
    // A scheduler takes the candle optimizer itself.
    let mut sched = StepLR::new(&mut opt, StepLRConfig::new(1)).unwrap();
    sched.step(&mut opt).unwrap();
    assert!((Optimizer::lr(&opt, 0).unwrap() - 1e-4).abs() < 1e-12);
    let err = ferroptim_candle::named_vars([
        ("w", Var::zeros(2, DType::F32, &Device::Cpu).unwrap()),
        ("w", Var::zeros(2, DType::F32, &Device::Cpu).unwrap()),
    ])
    .unwrap_err();
    assert!(matches!(err, Error::DuplicateName { .. }), "{err}");
    // A refused Var of a VarMap is named.
    let err = ferroptim_candle::named_vars([
        (
            "fc.weight",
            Var::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        ),
        ("fc.scale", Var::zeros(2, DType::U32, &Device::Cpu).unwrap()),
    ])
    .unwrap_err();
    assert!(
        matches!(&err, Error::Named { name, source } if name == "fc.scale"
            && matches!(**source, Error::UnsupportedDtype { dtype: DType::U32, .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("\"fc.scale\": parameter 0 is U32"),
        "{err}"
    );
}

/// Lookahead wraps any optimizer through candle as on ferroptim's own
/// parameters: the same updates (pullback of SGD's momentum included) and
/// the same state_dict.
#[test]
fn lookahead_through_candle_matches_lookahead_on_params() {
    for json in [
        r#"{"optimizer": "adamw", "k": 3, "lr": 0.01}"#,
        r#"{"optimizer": "sgd", "k": 2, "alpha": 0.3, "pullback_momentum": "pullback", "lr": 0.05, "momentum": 0.9}"#,
    ] {
        let (x, y) = batch();
        let vars = mlp_vars(11);
        let params = params_like(&vars);
        let slots: Vec<CandleParam> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| CandleParam::new(v.clone(), i).unwrap())
            .collect();
        let mut ours = ferroptim_candle::build("lookahead", json, slots).unwrap();
        let mut native = optim::build("lookahead", json, params.clone()).unwrap();
        assert_eq!(ours.name(), "Lookahead");
        for step in 0..7 {
            let grads = loss(&vars, &x, &y).backward().unwrap();
            copy_grads(&grads, &vars, &params);
            ours.step_with(&grads).unwrap();
            native.step().unwrap();
            let native_flat: Vec<f32> = params
                .iter()
                .flat_map(|p| p.to_vec::<f32>().unwrap())
                .collect();
            assert_eq!(flat(&vars), native_flat, "{json} step {step}");
        }
        assert_eq!(ours.state_dict(), native.state_dict(), "{json}");
    }
}

/// bfloat16 and float16 Vars (gradients from a float32 forward pass, cast
/// back by candle's autograd) step through the adapter exactly as ferroptim's
/// own 16-bit `Param`s do, with SGD (momentum) and AdamW, state kept in the
/// Vars' dtype.
#[test]
fn sixteen_bit_vars_step_as_sixteen_bit_params() {
    use ferroptim::half::{bf16, f16};
    fn run<T: ferroptim::Storage + candle_core::WithDType, A: Algorithm>(dtype: DType, config: A) {
        let (x, y) = batch();
        let vars: Vec<Var> = mlp_vars(3)
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(dtype).unwrap()).unwrap())
            .collect();
        let params: Vec<Param> = vars
            .iter()
            .map(|v| {
                Param::from_vec(v.flatten_all().unwrap().to_vec1::<T>().unwrap(), v.dims()).unwrap()
            })
            .collect();
        let mut ours = CandleOptim::from_vars(vars.clone(), config.clone()).unwrap();
        let mut native = Optim::new(params.clone(), config).unwrap();
        for step in 0..5 {
            // The loss through the cast, so that the gradients reach the 16-bit Vars.
            let loss = {
                let h: Vec<Tensor> = vars
                    .iter()
                    .map(|v| v.as_tensor().to_dtype(DType::F32).unwrap())
                    .collect();
                let hidden = x
                    .matmul(&h[0].t().unwrap())
                    .unwrap()
                    .broadcast_add(&h[1])
                    .unwrap()
                    .tanh()
                    .unwrap();
                let logits = hidden
                    .matmul(&h[2].t().unwrap())
                    .unwrap()
                    .broadcast_add(&h[3])
                    .unwrap();
                candle_nn::loss::cross_entropy(&logits, &y).unwrap()
            };
            let grads = loss.backward().unwrap();
            for (v, p) in vars.iter().zip(&params) {
                let g = grads.get(v.as_tensor()).unwrap();
                assert_eq!(g.dtype(), dtype);
                let g = g.flatten_all().unwrap().to_vec1::<T>().unwrap();
                p.set_grad(ferroptim::Tensor::from_vec(g, v.dims()).unwrap())
                    .unwrap();
            }
            candle_nn::Optimizer::step(&mut ours, &grads).unwrap();
            native.step().unwrap();
            for (i, (v, p)) in vars.iter().zip(&params).enumerate() {
                let got = v.flatten_all().unwrap().to_vec1::<T>().unwrap();
                assert_eq!(
                    got,
                    p.to_vec::<T>().unwrap(),
                    "{} {dtype:?} step {step} param {i}",
                    A::NAME
                );
            }
        }
        let sd = ours.state_dict();
        assert_eq!(sd, native.state_dict(), "{} {dtype:?}", A::NAME);
        let state_dtypes: Vec<ferroptim::Dtype> = sd
            .state
            .values()
            .flat_map(|s| s.iter().filter(|(k, _)| *k != "step"))
            .filter_map(|(_, v)| match v {
                ferroptim::StateValue::Tensor(t) => Some(t.dtype()),
                _ => None,
            })
            .collect();
        assert!(!state_dtypes.is_empty());
        let want = <T as ferroptim::Storage>::DTYPE;
        assert!(state_dtypes.iter().all(|&d| d == want), "{state_dtypes:?}");
    }
    let sgd = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    run::<bf16, _>(DType::BF16, sgd.clone());
    run::<f16, _>(DType::F16, sgd);
    run::<bf16, _>(DType::BF16, AdamWConfig::default());
    // In float16 torch's eps of 1e-8 rounds to 0 (`denom.add_(eps)` casts the
    // scalar to the tensor's dtype), so a second moment that underflows
    // divides by zero there, as here: float16 users raise eps.
    let adamw = AdamWConfig {
        eps: 1e-4,
        ..Default::default()
    };
    run::<f16, _>(DType::F16, adamw);
}
