//! torch's own invalid inputs (`optim_error_inputs_func_<name>`, plus the extra
//! ones in tools/torch_reference) must fail here too, with the matching typed
//! error and torch's message.

use crate::common;

use ferroptim::{optim, Error, GroupSpec, IntoParamGroups, Param};
use regex::Regex;

fn params_for(kind: &str) -> Vec<GroupSpec> {
    let p = Param::zeros::<f32>(&[1, 1]);
    match kind {
        "single" => vec![p].into_param_groups(),
        "duplicate_in_group" => vec![p.clone(), p].into_param_groups(),
        "duplicate_across_groups" => vec![GroupSpec::new([p.clone()]), GroupSpec::new([p])],
        "empty" => Vec::<Param>::new().into_param_groups(),
        "single_3d" => vec![Param::zeros::<f32>(&[2, 3, 4])].into_param_groups(),
        other => panic!("fixture names an unknown params kind {other:?}"),
    }
}

fn check(name: &str) -> usize {
    let errors = common::load_errors(name);
    assert!(!errors.is_empty());
    for case in &errors {
        let result = optim::build(name, &case.kwargs.to_string(), params_for(&case.params));
        let err = match result {
            Ok(opt) => panic!("{name}: {:?} was accepted ({})", case.desc, opt.name()),
            Err(e) => e,
        };
        let kind_ok = match case.params.as_str() {
            "single" => matches!(err, Error::InvalidHyperparameter { .. }),
            "duplicate_in_group" => matches!(
                err,
                Error::DuplicateParamInGroup {
                    first: 0,
                    second: 1
                }
            ),
            "duplicate_across_groups" => matches!(err, Error::DuplicateParamAcrossGroups),
            "empty" => matches!(err, Error::EmptyParamList),
            "single_3d" => matches!(
                err,
                Error::ParamShapeUnsupported {
                    param: 0,
                    expected: "2D",
                    ..
                }
            ),
            _ => false,
        };
        assert!(
            kind_ok,
            "{name}: {:?} gave the wrong kind of error: {err:?}",
            case.desc
        );
        let message = err.to_string();
        match &case.error_regex {
            Some(re) => assert!(
                Regex::new(re).unwrap().is_match(&message),
                "{name}: {:?}: {message:?} does not match torch's {re:?}",
                case.desc
            ),
            None => assert_eq!(message, case.torch_message, "{name}: {:?}", case.desc),
        }
    }
    errors.len()
}

#[test]
fn sgd_rejects_what_torch_rejects() {
    assert!(check("sgd") >= 7);
}

#[test]
fn adam_rejects_what_torch_rejects() {
    assert!(check("adam") >= 8);
}

#[test]
fn adamax_rejects_what_torch_rejects() {
    assert!(check("adamax") >= 7);
}

#[test]
fn adadelta_rejects_what_torch_rejects() {
    assert!(check("adadelta") >= 7);
}

#[test]
fn adagrad_rejects_what_torch_rejects() {
    assert!(check("adagrad") >= 7);
}

#[test]
fn rmsprop_rejects_what_torch_rejects() {
    assert!(check("rmsprop") >= 7);
}

#[test]
fn asgd_rejects_what_torch_rejects() {
    assert!(check("asgd") >= 7);
}

#[test]
fn rprop_rejects_what_torch_rejects() {
    assert!(check("rprop") >= 7);
}

#[test]
fn sparse_adam_rejects_what_torch_rejects() {
    assert!(check("sparseadam") >= 7);
}

#[test]
fn lbfgs_rejects_what_torch_rejects() {
    assert!(check("lbfgs") >= 4);
}

#[test]
fn adamw_rejects_what_torch_rejects() {
    assert!(check("adamw") >= 7);
}

#[test]
fn nadam_rejects_what_torch_rejects() {
    assert!(check("nadam") >= 7);
}

#[test]
fn radam_rejects_what_torch_rejects() {
    assert!(check("radam") >= 7);
}

#[test]
fn adafactor_rejects_what_torch_rejects() {
    assert!(check("adafactor") >= 10);
}

#[test]
fn muon_rejects_what_torch_rejects() {
    assert!(check("muon") >= 7);
}

#[test]
fn lion_rejects_what_lion_pytorch_rejects() {
    assert!(check("lion") >= 5);
}

#[test]
fn sgd_schedulefree_rejects_what_schedulefree_rejects() {
    assert!(check("sgdschedulefree") >= 5);
}

#[test]
fn adamw_schedulefree_rejects_an_empty_parameter_list_as_torch_does() {
    // schedulefree checks none of AdamWScheduleFree's arguments; ferroptim's
    // own checks are tested beside the module.
    assert!(check("adamwschedulefree") >= 1);
}

#[test]
fn lars_rejects_what_timm_rejects() {
    assert!(check("lars") >= 5);
}

#[test]
fn lamb_rejects_what_pytorch_optimizer_rejects() {
    assert!(check("lamb") >= 7);
}

#[test]
fn adan_rejects_what_pytorch_optimizer_rejects() {
    assert!(check("adan") >= 7);
}

#[test]
fn prodigy_rejects_what_prodigyopt_rejects() {
    assert!(check("prodigy") >= 7);
}

#[test]
fn adopt_rejects_what_pytorch_optimizer_rejects() {
    assert!(check("adopt") >= 6);
}

#[test]
fn ademamix_rejects_what_pytorch_optimizer_rejects() {
    assert!(check("ademamix") >= 9);
}

#[test]
fn soap_rejects_what_pytorch_optimizer_rejects() {
    assert!(check("soap") >= 9);
}

#[test]
fn build_rejects_unknown_names_and_fields() {
    let p = || [Param::zeros::<f64>(&[2])];
    assert!(matches!(
        optim::build("adamw2", "{}", p()),
        Err(Error::UnknownOptimizer { .. })
    ));
    let err = optim::build("sgd", r#"{"lr": 0.1, "momentun": 0.9}"#, p())
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                optimizer: "SGD",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("momentun"), "{err}");
    let err = optim::build("adam", r#"{"betas": 0.9}"#, p())
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert!(
        optim::build("SGD", "", p()).is_ok(),
        "names are case-insensitive, an empty config means defaults"
    );
}
