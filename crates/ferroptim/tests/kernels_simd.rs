//! Each dispatched kernel (the AVX2+FMA build where the CPU has it) gives,
//! on whole slices, exactly the bits it gives element by element: the
//! vectorised body of a loop and its scalar code agree lane for lane, on
//! random inputs of random lengths (property tests).

use ferroptim::kernels::{self, AdamScalars, AdaptiveScalars, RmspropBuffers, SgdScalars};
use proptest::prelude::*;

/// Runs `kernel` once on whole arrays and once per element on 1-element
/// slices of copies, and checks that every array ends bit-identical.
fn whole_equals_elementwise(
    arrays: Vec<Vec<f32>>,
    kernel: impl Fn(&mut [&mut [f32]]),
) -> Result<(), TestCaseError> {
    let mut whole = arrays.clone();
    let mut slices: Vec<&mut [f32]> = whole.iter_mut().map(Vec::as_mut_slice).collect();
    kernel(&mut slices);
    let mut each = arrays;
    for i in 0..each[0].len() {
        let mut slices: Vec<&mut [f32]> = each.iter_mut().map(|a| &mut a[i..i + 1]).collect();
        kernel(&mut slices);
    }
    for (k, (a, b)) in whole.iter().zip(&each).enumerate() {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            prop_assert!(
                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                "array {k} element {i}: whole {x:e}, element by element {y:e}"
            );
        }
    }
    Ok(())
}

/// `count` arrays of length `n`: the first two (param, grad) anywhere in
/// ±8, the rest (states) in [0, 4).
fn arrays(count: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (0usize..96).prop_flat_map(move |n| {
        let signed = prop::collection::vec(-8.0f32..8.0, n);
        let states = prop::collection::vec(prop::collection::vec(0.0f32..4.0, n), count - 2);
        (signed.clone(), signed, states).prop_map(|(p, g, s)| {
            let mut all = vec![p, g];
            all.extend(s);
            all
        })
    })
}

fn wd(on: bool) -> Option<f32> {
    on.then_some(0.01)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sgd_momentum(a in arrays(3), nesterov: bool, maximize: bool, decay: bool, first: bool) {
        let h = SgdScalars { neg_lr: -0.1f32, weight_decay: wd(decay), momentum: 0.9, one_minus_dampening: 0.9, nesterov, maximize };
        whole_equals_elementwise(a, |s| {
            if let [p, g, b] = s {
                kernels::sgd_momentum(p, g, b, first, &h).unwrap();
                kernels::sgd(p, g, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn adam(a in arrays(5), amsgrad: bool, maximize: bool, decoupled: bool) {
        let h = AdamScalars {
            one_minus_beta1: 0.1f32, beta2: 0.999, one_minus_beta2: 0.001,
            weight_decay: (!decoupled).then_some(0.01), decay: decoupled.then_some(0.999),
            bias_correction2_sqrt: 0.0447, eps: 1e-8, neg_step_size: -0.0052, maximize,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v, mx] = s {
                let mx = amsgrad.then_some(&mut **mx);
                kernels::adam(p, g, m, v, mx, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn adaptive(a in arrays(5), maximize: bool, decay: bool, centered: bool, momentum: bool) {
        let h = AdaptiveScalars { neg_lr: -0.01f32, weight_decay: wd(decay), eps: 1e-6, maximize };
        whole_equals_elementwise(a, |s| {
            if let [p, g, s1, s2, s3] = s {
                kernels::adamax(p, g, s1, s2, 0.1, 0.999, &h).unwrap();
                kernels::adadelta(p, g, s1, s2, (0.9, 0.1), &h).unwrap();
                kernels::adagrad(p, g, s3, &h).unwrap();
                let buffers = RmspropBuffers {
                    grad_avg: centered.then_some(&mut **s1),
                    momentum: momentum.then_some((&mut **s2, 0.5)),
                };
                kernels::rmsprop(p, g, s3, (0.99, 0.01), buffers, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn nadam_radam_asgd_rprop(a in arrays(5), maximize: bool, decoupled: bool, rectified: bool) {
        let nadam = kernels::NadamScalars {
            decay: decoupled.then_some(0.999f32), weight_decay: (!decoupled).then_some(0.01),
            one_minus_beta1: 0.1, beta2: 0.999, one_minus_beta2: 0.001, bias_correction2: 0.002,
            eps: 1e-8, grad_coef: -0.0004, exp_avg_coef: -0.0051, maximize,
        };
        let radam = kernels::RadamScalars {
            decay: decoupled.then_some(0.999f32), weight_decay: (!decoupled).then_some(0.01),
            one_minus_beta1: 0.1, beta2: 0.999, one_minus_beta2: 0.001, bias_correction1: 0.27,
            lr: 0.001, rectification: rectified.then_some((0.08, 0.6)), eps: 1e-8, maximize,
        };
        let asgd = kernels::AsgdScalars { decay: 0.9999f32, neg_eta: -0.01, mu: rectified.then_some(0.5), weight_decay: wd(decoupled), maximize };
        let rprop = kernels::RpropScalars { etaminus: 0.5f32, etaplus: 1.2, step_size_min: 1e-6, step_size_max: 50.0, maximize };
        whole_equals_elementwise(a, |s| {
            if let [p, g, s1, s2, s3] = s {
                kernels::nadam(p, g, s1, s2, &nadam).unwrap();
                kernels::radam(p, g, s1, s2, &radam).unwrap();
                kernels::asgd(p, g, s3, &asgd).unwrap();
                kernels::rprop(p, g, s1, s3, &rprop).unwrap();
            }
        })?;
    }
}
