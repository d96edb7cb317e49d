//! SOAP replayed against pytorch-optimizer 4.1.0 (tools/torch_reference).
//!
//! After one gradient, a parameter's statistics `GG` are rank-deficient
//! whenever it is not square (and for every vector with `precondition_1d`):
//! their eigenbasis is then any basis of the null space, and faer and
//! LAPACK pick different ones, which every later step depends on. So each
//! case runs its first step here, then loads the reference's state after
//! that step (its first bases) and replays the other 19 steps, comparing
//! the parameters after every one. From there on every basis update is a
//! QR of a full-rank matrix, defined up to column signs, which the update
//! does not depend on. The QR runs in float32 whatever the dtype (as in the
//! reference), so float64 agrees to float32's precision, not float64's.

use crate::common;
use ferroptim::optim::{Soap, SoapConfig};
use ferroptim::{Optimizer, Param};

/// Per tensor, relative to its largest magnitude (measured: 1.0e-7 f32, 4.1e-8 f64).
fn tolerance(dtype: &str) -> f64 {
    match dtype {
        "float32" => 3e-7,
        _ => 1e-7,
    }
}

#[test]
fn soap_matches_pytorch_optimizer_from_its_first_eigenbases() {
    let fixture = common::load("soap");
    assert_eq!(fixture.cases.len(), 26);
    for case in &fixture.cases {
        let config: SoapConfig = serde_json::from_value(case.kwargs.clone()).unwrap();
        let params: Vec<Param> = case
            .initial_params
            .iter()
            .map(|t| Param::new(t.clone()))
            .collect();
        let groups = common::group_specs(&case.groups, &params);
        let mut opt = Soap::new(groups, config).unwrap();
        let mut worst = 0.0f64;
        for i in 0..case.steps.len() {
            case.step(i, &mut opt, &params);
            if i == 0 {
                let mut sd = opt.state_dict();
                sd.state = case.steps[0].state.clone();
                opt.load_state_dict(&sd).unwrap();
            }
            for (p, want) in params.iter().zip(&case.steps[i].params) {
                let (got, want) = (p.value().to_f64_vec(), want.to_f64_vec());
                let scale = want.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
                for (a, b) in got.iter().zip(&want) {
                    worst = worst.max((a - b).abs() / scale);
                }
            }
        }
        let tol = tolerance(&case.dtype);
        assert!(
            worst <= tol,
            "soap [{}] {}: {worst:e} > {tol:e}",
            case.desc,
            case.dtype
        );
        println!(
            "soap [{}] {}: worst parameter error {worst:e}",
            case.desc, case.dtype
        );
    }
}
