//! The behaviour of the shared optimizer machinery, as torch's `Optimizer` behaves.

use ferroptim::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, Sgd, SgdConfig, SparseAdam, SparseAdamConfig,
};
use ferroptim::{optim, Error, Grad, GroupSpec, Optimizer, Param, SparseGrad, StepOutcome, Tensor};
use serde_json::json;

fn grad(p: &Param, value: f64) {
    let t = Tensor::from_vec(vec![value; p.numel()], &p.shape()).unwrap();
    p.set_grad(t.to_dtype(p.dtype())).unwrap();
}

#[test]
fn add_param_group_falls_back_to_defaults_and_rejects_what_torch_rejects() {
    let (a, b, c) = (
        Param::zeros::<f64>(&[2]),
        Param::zeros::<f64>(&[3]),
        Param::zeros::<f64>(&[1]),
    );
    let mut opt = Adam::new(
        [a.clone()],
        AdamConfig {
            lr: 0.01,
            betas: (0.8, 0.9),
            ..Default::default()
        },
    )
    .unwrap();
    opt.add_param_group(
        GroupSpec::new([b.clone()])
            .set("lr", 0.5)
            .set("amsgrad", true),
    )
    .unwrap();
    let g = &opt.param_groups()[1].options;
    assert_eq!((g.lr, g.betas, g.amsgrad), (0.5, (0.8, 0.9), true));
    assert_eq!(opt.num_param_groups(), 2);

    assert!(matches!(
        opt.add_param_group(GroupSpec::new([a.clone()])),
        Err(Error::DuplicateParamAcrossGroups)
    ));
    let err = opt
        .add_param_group(GroupSpec::new([c.clone()]).set("lr", -1.0))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidHyperparameter { name: "lr", .. }),
        "{err:?}"
    );
    let err = opt
        .add_param_group(GroupSpec::new([c.clone()]).set("momentum", 0.9))
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownHyperparameter { key, .. } if key == "momentum"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("betas"),
        "the message lists the valid keys: {err}"
    );
    let err = opt
        .add_param_group(GroupSpec::new([c.clone(), c.clone()]))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::DuplicateParamInGroup {
            first: 0,
            second: 1
        }
    ));
    assert_eq!(opt.num_param_groups(), 2, "failed additions add nothing");
    assert_eq!(opt.params().len(), 2);
}

#[test]
fn zero_grad_sets_to_none_by_default_or_zeros_in_place() {
    let p = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    let mut opt = Sgd::new([p.clone()], SgdConfig::default()).unwrap();
    grad(&p, 3.0);
    opt.zero_grad_with(false);
    assert_eq!(
        p.grad(),
        Some(Grad::Dense(
            Tensor::from_vec(vec![0.0f32, 0.0], &[2]).unwrap()
        ))
    );
    opt.zero_grad();
    assert_eq!(p.grad(), None);
}

#[test]
fn params_without_gradients_are_skipped_and_get_state_lazily() {
    let (a, b) = (
        Param::from_vec(vec![1.0f64], &[1]).unwrap(),
        Param::from_vec(vec![5.0f64], &[1]).unwrap(),
    );
    let mut opt = Adam::new(
        [a.clone(), b.clone()],
        AdamConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(opt.state(&a).is_none());
    grad(&a, 1.0);
    opt.step().unwrap();
    assert_eq!(opt.state(&a).unwrap().step, 1.0);
    assert!(opt.state(&b).is_none(), "no gradient, no state (as torch)");
    assert_eq!(b.to_vec::<f64>().unwrap(), vec![5.0]);
    assert_eq!(
        opt.state_dict().state.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn an_unusable_gradient_stops_the_step_before_anything_changes() {
    let a = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    let emb = Param::from_vec(vec![1.0f32; 6], &[3, 2]).unwrap();
    let mut opt = Adam::new([a.clone(), emb.clone()], AdamConfig::default()).unwrap();
    grad(&a, 1.0);
    let rows = Tensor::from_vec(vec![1.0f32; 2], &[1, 2]).unwrap();
    emb.set_sparse_grad(SparseGrad::new(vec![2], rows).unwrap())
        .unwrap();
    let err = opt.step().unwrap_err();
    assert!(
        matches!(
            err,
            Error::SparseGradUnsupported {
                optimizer: "Adam",
                param: 1
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        a.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0],
        "parameter 0 must not have moved"
    );
    assert!(opt.state(&a).is_none());
}

fn sparse_rows(p: &Param, rows: Vec<usize>) {
    let width = p.numel() / p.shape()[0];
    let values = Tensor::from_vec(vec![1.0f32; rows.len() * width], &[rows.len(), width]).unwrap();
    p.set_sparse_grad(SparseGrad::new(rows, values).unwrap())
        .unwrap();
}

/// torch's fused SGD and Adagrad take no sparse gradient ("`_fused_sgd`
/// does not support sparse gradients"): refused before anything changes,
/// naming `fused`; the same optimizers take it unfused.
#[test]
fn fused_sgd_and_adagrad_refuse_sparse_gradients() {
    for build in [
        |p: Vec<Param>| -> Box<dyn Optimizer> {
            let config = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                fused: Some(true),
                ..Default::default()
            };
            Box::new(Sgd::new(p, config).unwrap())
        },
        |p: Vec<Param>| -> Box<dyn Optimizer> {
            let config = AdagradConfig {
                fused: Some(true),
                ..Default::default()
            };
            Box::new(Adagrad::new(p, config).unwrap())
        },
    ] {
        let dense = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let emb = Param::from_vec(vec![1.0f32; 6], &[3, 2]).unwrap();
        let mut opt = build(vec![dense.clone(), emb.clone()]);
        let before = opt.state_dict();
        grad(&dense, 1.0);
        sparse_rows(&emb, vec![2, 0]);
        let err = opt.step().unwrap_err();
        assert!(
            matches!(
                err,
                Error::SparseGradIncompatible {
                    option: "fused",
                    param: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("fused"), "{err}");
        assert_eq!(opt.state_dict(), before);
        assert_eq!(dense.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(opt.hyperparameter(0, "fused"), Some(json!(true)));
        opt.set_hyperparameter(0, "fused", json!(null)).unwrap();
        opt.step().unwrap();
        assert!(emb.to_vec::<f32>().unwrap()[0] < 1.0, "{}", opt.name());
    }
}

/// torch's fused SGD fails on a group where one parameter has no momentum
/// buffer yet and the others have one (its `_fused_sgd` hands the kernel a
/// `None`); ferroptim starts that parameter's buffer from its gradient, as
/// on a first step, so it moves as it would have alone.
#[test]
fn fused_sgd_starts_a_late_parameter_from_its_gradient() {
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.5,
        fused: Some(true),
        ..Default::default()
    };
    let (a, late) = (Param::zeros::<f32>(&[3]), Param::zeros::<f32>(&[3]));
    let mut opt = Sgd::new([a.clone(), late.clone()], config.clone()).unwrap();
    grad(&a, 1.0);
    opt.step().unwrap();
    grad(&a, 1.0);
    grad(&late, 2.0);
    opt.step().unwrap();
    let alone = Param::zeros::<f32>(&[3]);
    let mut single = Sgd::new([alone.clone()], config).unwrap();
    grad(&alone, 2.0);
    single.step().unwrap();
    assert_eq!(
        late.to_vec::<f32>().unwrap(),
        alone.to_vec::<f32>().unwrap()
    );
    assert_eq!(
        late.to_vec::<f32>().unwrap(),
        vec![-0.2f32; 3],
        "b = g, not (1 - τ)·g"
    );
}

#[test]
fn gradients_of_the_wrong_kind_are_refused_before_anything_changes() {
    // Adagrad takes sparse gradients, but not with weight_decay (torch raises too).
    let dense = Param::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    let emb = Param::from_vec(vec![1.0f32; 6], &[3, 2]).unwrap();
    let config = AdagradConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Adagrad::new([dense.clone(), emb.clone()], config).unwrap();
    let before = opt.state_dict();
    grad(&dense, 1.0);
    sparse_rows(&emb, vec![2, 0]);
    let err = opt.step().unwrap_err();
    assert!(
        matches!(
            err,
            Error::SparseGradIncompatible {
                optimizer: "Adagrad",
                option: "weight_decay",
                param: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("weight_decay"), "{err}");
    assert_eq!(opt.state_dict(), before);
    assert_eq!(dense.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
    opt.set_hyperparameter(0, "weight_decay", json!(0.0))
        .unwrap();
    opt.step().unwrap();
    let moved = emb.to_vec::<f32>().unwrap();
    assert_eq!(&moved[2..4], &[1.0, 1.0], "row 1 had no gradient");
    assert!(moved[0] < 1.0 && moved[4] < 1.0);

    // SparseAdam takes only sparse gradients.
    let (a, b) = (Param::zeros::<f32>(&[3, 2]), Param::zeros::<f32>(&[4]));
    let mut opt = SparseAdam::new([a.clone(), b.clone()], SparseAdamConfig::default()).unwrap();
    sparse_rows(&a, vec![1]);
    grad(&b, 1.0);
    let err = opt.step().unwrap_err();
    assert!(
        matches!(
            err,
            Error::DenseGradUnsupported {
                optimizer: "SparseAdam",
                param: 1
            }
        ),
        "{err:?}"
    );
    assert!(opt.state(&a).is_none() && a.to_vec::<f32>().unwrap() == vec![0.0; 6]);
}

#[test]
fn sparse_adam_counts_a_step_without_rows_and_moves_nothing() {
    let a = Param::from_vec(vec![1.0f64; 4], &[2, 2]).unwrap();
    let mut opt = SparseAdam::new([a.clone()], SparseAdamConfig::default()).unwrap();
    let none = Tensor::zeros(ferroptim::Dtype::F64, &[0, 2]);
    a.set_sparse_grad(SparseGrad::new(vec![], none).unwrap())
        .unwrap();
    opt.step().unwrap();
    assert_eq!(opt.state(&a).unwrap().step, 1.0);
    assert_eq!(a.to_vec::<f64>().unwrap(), vec![1.0; 4]);
}

#[test]
fn step_with_closure_evaluates_once_then_steps() {
    let w = Param::from_vec(vec![2.0f64], &[1]).unwrap();
    let mut opt = Sgd::new(
        [w.clone()],
        SgdConfig {
            lr: 0.25,
            ..Default::default()
        },
    )
    .unwrap();
    let mut calls = 0;
    let loss = opt
        .step_with_closure(&mut || {
            calls += 1;
            let x = w.to_vec::<f64>()?[0];
            grad(&w, 2.0 * x);
            Ok(x * x)
        })
        .unwrap();
    assert_eq!((loss, calls), (4.0, 1));
    assert_eq!(w.to_vec::<f64>().unwrap(), vec![1.0]);

    let err = opt
        .step_with_closure(&mut || Err(Error::closure(std::io::Error::other("no data"))))
        .unwrap_err();
    assert!(matches!(err, Error::Closure(_)));
    assert_eq!(
        w.to_vec::<f64>().unwrap(),
        vec![1.0],
        "a failed closure means no step"
    );
}

#[test]
fn hyperparameters_can_be_read_and_changed_between_steps() {
    let w = Param::from_vec(vec![0.0f64], &[1]).unwrap();
    let mut opt: Box<dyn Optimizer> = Box::new(
        Sgd::new(
            [w.clone()],
            SgdConfig {
                lr: 1.0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    grad(&w, 1.0);
    opt.step().unwrap();
    opt.set_lr(0, 0.5).unwrap();
    opt.step().unwrap();
    assert_eq!(w.to_vec::<f64>().unwrap(), vec![-1.5]);
    assert_eq!(opt.lr(0), Some(0.5));
    assert_eq!(opt.lr(1), None);
    assert!(matches!(
        opt.set_lr(3, 0.1),
        Err(Error::NoSuchGroup {
            group: 3,
            groups: 1
        })
    ));

    opt.set_hyperparameter(0, "momentum", json!(0.9)).unwrap();
    assert_eq!(opt.hyperparameter(0, "momentum"), Some(json!(0.9)));
    let err = opt
        .set_hyperparameter(0, "momentum", json!(-0.9))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidHyperparameter {
            name: "momentum",
            ..
        }
    ));
    assert_eq!(
        opt.hyperparameter(0, "momentum"),
        Some(json!(0.9)),
        "a rejected value is not applied"
    );
    assert_eq!(opt.defaults_json()["lr"], json!(1.0));
    assert_eq!(opt.name(), "SGD");
}

#[test]
fn an_empty_parameter_list_is_an_error() {
    assert!(matches!(
        Adam::new(Vec::<Param>::new(), AdamConfig::default()),
        Err(Error::EmptyParamList)
    ));
    assert!(
        Sgd::new([GroupSpec::new([])], SgdConfig::default()).is_ok(),
        "an empty group is allowed, as in torch"
    );
}

/// Sets a gradient of `v`s: dense, or (for SparseAdam) one sparse row.
fn fill(p: &Param, v: f64, sparse: bool) {
    if sparse {
        let width = p.numel() / p.shape()[0];
        let row = Tensor::from_vec(vec![v as f32; width], &[1, width]).unwrap();
        p.set_sparse_grad(SparseGrad::new(vec![0], row).unwrap())
            .unwrap();
    } else {
        grad(p, v);
    }
}

#[test]
fn a_step_with_a_non_finite_gradient_is_skipped_and_changes_nothing() {
    for &name in optim::NAMES.iter().filter(|&&n| n != "lbfgs") {
        let params = [Param::zeros::<f32>(&[2, 3]), Param::zeros::<f32>(&[3, 2])];
        let mut opt = optim::build(name, "{}", params.clone()).unwrap();
        opt.train().unwrap(); // Schedule-Free steps in train mode
        let sparse = name == "sparseadam";
        for p in &params {
            fill(p, 0.5, sparse);
        }
        assert_eq!(
            opt.step_if_finite().unwrap(),
            StepOutcome::Stepped,
            "{name}"
        );
        let before = (
            opt.state_dict(),
            params.iter().map(Param::value).collect::<Vec<_>>(),
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            fill(&params[0], 0.25, sparse);
            fill(&params[1], bad, sparse);
            let outcome = opt.step_if_finite().unwrap();
            assert_eq!(
                outcome,
                StepOutcome::Skipped { param: 1 },
                "{name} with {bad}"
            );
            let after = (
                opt.state_dict(),
                params.iter().map(Param::value).collect::<Vec<_>>(),
            );
            assert_eq!(after, before, "{name} changed on a skipped step");
        }
    }
}
