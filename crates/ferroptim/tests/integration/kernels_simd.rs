//! Each dispatched kernel (the AVX2+FMA build where the CPU has it) gives,
//! on whole slices, exactly the bits it gives element by element: the
//! vectorised body of a loop and its scalar code agree lane for lane, on
//! random inputs of random lengths (property tests). Adafactor's reductions,
//! which sum in another order, are checked against a scalar reference at the
//! end.

use ferroptim::kernels::{
    self, AdadeltaScalars, AdadeltaSlices, AdagradSlices, AdamScalars, AdamSlices,
    AdamWScheduleFreeScalars, AdamWScheduleFreeSlices, AdamaxScalars, AdanScalars, AdanSlices,
    AdaptiveScalars, AdemamixScalars, AdemamixSlices, AdoptScalars, AdoptSlices, AsgdSlices,
    GradInputs, LambApplySlices, LambPath, LambScalars, LambSlices, LionScalars, LionSlices,
    MomentSlices, Moments, ProdigyApplyScalars, ProdigyApplySlices, ProdigyGatherScalars,
    ProdigyGatherSlices, RmspropScalars, RmspropSlices, RpropSlices, ScheduleFreeScalars,
    SgdMomentumSlices, SgdScalars, SgdScheduleFreeSlices, SgdSlices,
};
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
    fn lion(a in arrays(3), decay: bool) {
        let h = LionScalars {
            decay: if decay { 1.0 - 0.01 * 0.1 } else { 1.0 },
            neg_lr: -0.01,
            beta1: 0.9,
            one_minus_beta1: 0.1,
            beta2: 0.99,
            one_minus_beta2: 1.0 - 0.99,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m] = s {
                kernels::lion(LionSlices { param: p, grad: g, exp_avg: m }, &h).unwrap();
            }
        })?;
    }

    // ADOPT and AdEMAMix without their cautious / stable_adamw options, whose
    // per-tensor sums make one element's update depend on the others.
    #[test]
    fn adopt(a in arrays(4), first: bool, clip: bool, maximize: bool, decouple: bool) {
        let h = AdoptScalars {
            inputs: GradInputs::new(0.01, 0.1, decouple, false, maximize),
            first,
            eps: 1e-6,
            clip: if clip { 1.2 } else { f32::INFINITY },
            one_minus_beta1: 0.1,
            neg_lr: -0.01,
            beta2: 0.9999,
            one_minus_beta2: 1.0 - 0.9999,
            cautious: false,
            stable_adamw: false,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v] = s {
                kernels::adopt(AdoptSlices { param: p, grad: g, exp_avg: m, exp_avg_sq: v }, &h).unwrap();
            }
        })?;
    }

    // LAMB's two passes with a given trust ratio (the ratio itself is a
    // per-tensor sum): the moments, then the update on each of its paths.
    #[test]
    fn lamb(a in arrays(4), path in 0usize..4, scale: bool, maximize: bool, decay: bool, ratio: bool) {
        let path = [LambPath::Foreach, LambPath::PerParam, LambPath::Rectified, LambPath::Degenerated][path];
        let h = LambScalars {
            grad_scale: scale.then_some(0.37),
            maximize,
            decay: decay.then_some(0.999),
            l2: (!decay && path == LambPath::PerParam).then_some(0.01),
            beta1: 0.9,
            beta3: 0.1,
            beta2: 0.999,
            one_minus_beta2: 1.0 - 0.999,
            eps: 1e-6,
            neg_step_size: -0.01,
            path,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v] = s {
                let mut slices = LambSlices { param: p, grad: g, exp_avg: m, exp_avg_sq: v };
                kernels::lamb_moments(&mut slices, &h, false).unwrap();
                let apply = LambApplySlices { param: slices.param, exp_avg: slices.exp_avg, exp_avg_sq: slices.exp_avg_sq };
                kernels::lamb_apply(apply, &h, ratio.then_some(1.7), true).unwrap();
            }
        })?;
    }

    #[test]
    fn adan(a in arrays(6), first: bool, scale: bool, maximize: bool, decouple: bool) {
        let h = AdanScalars {
            grad_scale: scale.then_some(0.37),
            maximize,
            first: first.then_some(-0.37),
            one_minus_beta1: 0.02,
            beta2: 0.92,
            one_minus_beta2: 0.08,
            beta3: 0.99,
            one_minus_beta3: 1.0 - 0.99,
            bias_correction3_sqrt: 0.3,
            eps: 1e-8,
            decay: decouple.then_some(0.999),
            proximal: (!decouple).then_some(1.001),
            neg_step_size: -0.05,
            neg_diff_step_size: -0.4,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, n, v, prev] = s {
                let slices = AdanSlices { param: p, grad: g, exp_avg: m, exp_avg_sq: n, exp_avg_diff: v, previous_grad: prev };
                kernels::adan(slices, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn ademamix(a in arrays(5), maximize: bool, decouple: bool) {
        let h = AdemamixScalars {
            inputs: GradInputs::new(0.01, 0.1, decouple, true, maximize),
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 1.0 - 0.999,
            one_minus_beta3: 1.0 - 0.9999,
            bias_correction1: 0.271,
            bias_correction2_sqrt: 0.0547,
            eps: 1e-8,
            alpha: 5.0,
            neg_lr: -0.01,
            cautious: false,
            stable_adamw: false,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v, slow] = s {
                let slices = AdemamixSlices { param: p, grad: g, exp_avg: m, exp_avg_sq: v, exp_avg_slow: slow };
                kernels::ademamix(slices, &h).unwrap();
            }
        })?;
    }

    // Prodigy's first pass with `s` and `p0` on every element (slice_p = 1;
    // its sums are checked against a scalar reference below), then its
    // second pass.
    #[test]
    fn prodigy(a in arrays(6), first_moment: bool, coupled: bool, decay: bool) {
        let gather = ProdigyGatherScalars {
            l2: coupled.then_some(0.01),
            beta1: if first_moment { 0.9 } else { 0.0 },
            exp_avg_weight: 0.37 * 0.1,
            beta2: 0.999,
            exp_avg_sq_weight: 0.37 * 0.37 * (1.0 - 0.999),
            beta3: 0.999f32.sqrt(),
            s_weight: 0.21,
        };
        let apply = ProdigyApplyScalars {
            l2: (coupled && !first_moment).then_some(0.01),
            decay: (decay && !coupled).then_some(-0.001),
            d_eps: 0.37e-8,
            neg_step_size: if first_moment { -0.05 } else { -0.05 * 0.37 },
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v, sum, p0] = s {
                let slices = ProdigyGatherSlices {
                    param: p,
                    grad: g,
                    exp_avg: first_moment.then_some(&mut **m),
                    exp_avg_sq: v,
                    s: sum,
                    p0: Some(p0),
                    p0_fill: 0.0,
                    slice_p: 1,
                };
                kernels::prodigy_gather(slices, &gather).unwrap();
                let slices = ProdigyApplySlices {
                    param: p,
                    grad: g,
                    exp_avg: first_moment.then_some(&mut **m),
                    exp_avg_sq: v,
                };
                kernels::prodigy_apply(slices, &apply).unwrap();
            }
        })?;
    }

    // Prodigy's two sums, gᵀ(θ₀ − θ) and Σ|s| over every slice_p-th element,
    // within an f32 rounding of the sums in f64 element by element.
    #[test]
    fn prodigy_sums(a in arrays(4), slice_p in 1usize..5, zero_p0: bool) {
        let [p, g, v, p0] = <[Vec<f32>; 4]>::try_from(a).unwrap();
        let n = p.len();
        let sliced = n.div_ceil(slice_p);
        let mut v = v;
        let mut s: Vec<f32> = p0[..sliced].iter().map(|x| x - 2.0).collect();
        let start = |j: usize| if zero_p0 { 0.0 } else { p0[j] };
        let h = ProdigyGatherScalars {
            l2: None, beta1: 0.0, exp_avg_weight: 0.0, beta2: 0.9, exp_avg_sq_weight: 0.1, beta3: 0.5, s_weight: 0.3,
        };
        // `scale` bounds what the f32 rounding of each θ₀ − θ and each
        // product can move the dot by: Σ|g|(|θ₀| + |θ|).
        let (mut dot, mut abs, mut scale) = (0.0f64, 0.0f64, 0.0f64);
        for j in 0..sliced {
            let (x, gx) = (p[j * slice_p], g[j * slice_p]);
            dot += gx as f64 * (start(j) - x) as f64;
            abs += gx.mul_add(h.s_weight, s[j] * h.beta3).abs() as f64;
            scale += (gx.abs() * (start(j).abs() + x.abs())) as f64;
        }
        let slices = ProdigyGatherSlices {
            param: &p,
            grad: &g,
            exp_avg: None,
            exp_avg_sq: &mut v,
            s: &mut s,
            p0: (!zero_p0).then_some(&p0[..sliced]),
            p0_fill: 0.0,
            slice_p,
        };
        let (got_dot, got_abs) = kernels::prodigy_gather(slices, &h).unwrap();
        let ulp = |x: f64| (x.abs() as f32 * f32::EPSILON) as f64 + f64::from(f32::MIN_POSITIVE);
        prop_assert!((got_dot - dot).abs() <= 2.0 * ulp(scale), "dot {got_dot:e}, expected {dot:e}");
        prop_assert!((got_abs - abs).abs() <= ulp(abs), "Σ|s| {got_abs:e}, expected {abs:e}");
    }

    #[test]
    fn schedule_free(a in arrays(4), decay: bool) {
        let schedule = ScheduleFreeScalars {
            weight_decay: wd(decay),
            ckp1: 0.3,
            y_coef: 0.1 * (0.9 * (1.0 - 0.3) - 1.0),
            neg_lr: -0.1,
        };
        let h = AdamWScheduleFreeScalars {
            schedule,
            beta2: 0.999,
            one_minus_beta2: 1.0 - 0.999,
            bias_correction2: 0.003,
            eps: 1e-8,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, z, v] = s {
                kernels::sgd_schedule_free(SgdScheduleFreeSlices { param: p, grad: g, z }, &schedule).unwrap();
                kernels::adamw_schedule_free(AdamWScheduleFreeSlices { param: p, grad: g, z, exp_avg_sq: v }, &h).unwrap();
                kernels::switch_mode(p, z, 1.0 - 1.0 / 0.9);
            }
        })?;
    }

    #[test]
    fn sgd_momentum(a in arrays(3), nesterov: bool, maximize: bool, decay: bool, first: bool, lars: bool) {
        let mut h = SgdScalars::<f32>::new(-0.1, if decay { 0.01 } else { 0.0 }, 0.9, 0.1, nesterov, maximize);
        h.first = first;
        h.trust_ratio = lars.then_some(0.37);
        whole_equals_elementwise(a, |s| {
            if let [p, g, b] = s {
                kernels::sgd_momentum(SgdMomentumSlices { param: p, grad: g, momentum_buffer: b }, &h).unwrap();
                kernels::sgd(SgdSlices { param: p, grad: g }, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn adam(a in arrays(5), amsgrad: bool, maximize: bool, decoupled: bool) {
        let h = AdamScalars {
            moments: Moments::<f32>::new(0.01, (0.9, 0.999), 1e-8, 0.1, decoupled, maximize),
            bias_correction2_sqrt: 0.0447,
            neg_step_size: -0.0052,
        };
        whole_equals_elementwise(a, |s| {
            if let [p, g, m, v, mx] = s {
                let max_exp_avg_sq = amsgrad.then_some(&mut **mx);
                kernels::adam(AdamSlices { param: p, grad: g, exp_avg: m, exp_avg_sq: v, max_exp_avg_sq }, &h).unwrap();
            }
        })?;
    }

    #[test]
    fn adaptive(a in arrays(5), maximize: bool, decay: bool, centered: bool, momentum: bool) {
        let wd = if decay { 0.01 } else { 0.0 };
        let adaptive = AdaptiveScalars::<f32>::new(-0.01, wd, 1e-6, maximize);
        let adamax = AdamaxScalars { moments: Moments::new(0.01, (0.9, 0.999), 1e-6, wd, false, maximize), neg_lr: -0.01 };
        let adadelta = AdadeltaScalars { adaptive, rho: 0.9, one_minus_rho: 0.1 };
        let rmsprop = RmspropScalars { adaptive, alpha: 0.99, one_minus_alpha: 0.01, momentum: 0.5 };
        whole_equals_elementwise(a, |s| {
            if let [p, g, s1, s2, s3] = s {
                kernels::adamax(MomentSlices { param: p, grad: g, exp_avg: s1, second: s2 }, &adamax).unwrap();
                kernels::adadelta(AdadeltaSlices { param: p, grad: g, square_avg: s1, acc_delta: s2 }, &adadelta).unwrap();
                kernels::adagrad(AdagradSlices { param: p, grad: g, sum: s3 }, &adaptive).unwrap();
                let slices = RmspropSlices {
                    param: p,
                    grad: g,
                    square_avg: s3,
                    grad_avg: centered.then_some(&mut **s1),
                    momentum_buffer: momentum.then_some(&mut **s2),
                };
                kernels::rmsprop(slices, &rmsprop).unwrap();
            }
        })?;
    }

    #[test]
    fn nadam_radam_asgd_rprop(a in arrays(5), maximize: bool, decoupled: bool, rectified: bool) {
        let moments = Moments::<f32>::new(0.001, (0.9, 0.999), 1e-8, 0.01, decoupled, maximize);
        let nadam = kernels::NadamScalars { moments, bias_correction2: 0.002, grad_coef: -0.0004, exp_avg_coef: -0.0051 };
        let radam = kernels::RadamScalars {
            moments, bias_correction1: 0.27, lr: 0.001, rectification: rectified.then_some((0.08, 0.6)),
        };
        let asgd = kernels::AsgdScalars { decay: 0.9999f32, neg_eta: -0.01, mu: rectified.then_some(0.5), weight_decay: wd(decoupled), maximize, tail: false };
        let rprop = kernels::RpropScalars { etaminus: 0.5f32, etaplus: 1.2, step_size_min: 1e-6, step_size_max: 50.0, maximize };
        whole_equals_elementwise(a, |s| {
            if let [p, g, s1, s2, s3] = s {
                kernels::nadam(MomentSlices { param: p, grad: g, exp_avg: s1, second: s2 }, &nadam).unwrap();
                kernels::radam(MomentSlices { param: p, grad: g, exp_avg: s1, second: s2 }, &radam).unwrap();
                kernels::asgd(AsgdSlices { param: p, grad: g, ax: s3 }, &asgd).unwrap();
                kernels::rprop(RpropSlices { param: p, grad: g, prev: s1, step_size: s3 }, &rprop).unwrap();
            }
        })?;
    }
}

/// Adafactor's kernels sum in lanes, tiles and blocks; a plain scalar
/// reference (one sequential f64 sum, one element at a time) written here
/// from torch's formulas must agree within the rounding of those sums.
mod adafactor {
    use ferroptim::kernels::adafactor::{self, AdafactorScalars, SecondMoment};
    use ferroptim::kernels::lerp;
    use proptest::prelude::*;

    const H: AdafactorScalars<f32> = AdafactorScalars {
        one_minus_beta2: 0.3,
        eps1: 1e-3,
        eps1_sq: 1e-6,
        maximize: false,
    };

    fn u(v: f32, g: f32) -> f32 {
        let v = if v < H.eps1_sq { H.eps1_sq } else { v };
        1.0 / v.sqrt() * g
    }

    fn sq(x: &[f32]) -> f64 {
        x.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-30
    }

    fn vectors(n: std::ops::Range<usize>) -> impl Strategy<Value = (Vec<f32>, Vec<f32>, Vec<f32>)> {
        n.prop_flat_map(|n| {
            let signed = prop::collection::vec(-8.0f32..8.0, n);
            (
                signed.clone(),
                signed,
                prop::collection::vec(0.0f32..4.0, n),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn full_moment((p, g, v) in vectors(0..1200), maximize: bool, decay: bool) {
            let h = AdafactorScalars { maximize, ..H };
            let mut want_v = v.clone();
            for (v, &g) in want_v.iter_mut().zip(&g) {
                *v = lerp(*v, g * g, h.one_minus_beta2);
            }
            let want_u: Vec<f32> = want_v.iter().zip(&g).map(|(&v, &g)| u(v, g)).collect();

            let mut got_v = v;
            let mut moment = SecondMoment::Full(&mut got_v);
            let sums = adafactor::second_moment(&p, &g, &mut moment, &h).unwrap();
            prop_assert!(close(sums.param_sum_sq, sq(&p), 1e-13));
            prop_assert!(close(sums.update_sum_sq.unwrap(), sq(&want_u), 1e-13));
            prop_assert!(close(adafactor::update_sum_sq(&g, &moment, &h), sq(&want_u), 1e-13));

            let d = decay.then_some(0.99f32);
            let mut got_p = p.clone();
            adafactor::apply(&mut got_p, &g, &moment, &h, d, -0.01).unwrap();
            prop_assert_eq!(&got_v, &want_v);
            for ((&got, &p), &u) in got_p.iter().zip(&p).zip(&want_u) {
                let u = if maximize { -u } else { u };
                let want = u.mul_add(-0.01, p * d.unwrap_or(1.0));
                prop_assert_eq!(got.to_bits(), want.to_bits());
            }
        }

        #[test]
        fn factored_moment(
            (rows, cols, batch) in (1usize..24, 1usize..300, 1usize..3),
            seed in any::<u64>(),
        ) {
            // Deterministic values from the seed (a proptest vector this large shrinks slowly).
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 16.0 - 8.0
            };
            let n = batch * rows * cols;
            let g: Vec<f32> = (0..n).map(|_| next()).collect();
            let p: Vec<f32> = (0..n).map(|_| next()).collect();
            let row0: Vec<f32> = (0..batch * rows).map(|_| next().abs()).collect();
            let col0: Vec<f32> = (0..batch * cols).map(|_| next().abs()).collect();

            // The reference: torch's formulas, element by element.
            let (mut want_r, mut want_c) = (row0.clone(), col0.clone());
            let mut want_p = p.clone();
            let mut want_u_sq = 0.0;
            for b in 0..batch {
                let at = |i: usize, j: usize| g[(b * rows + i) * cols + j];
                for i in 0..rows {
                    let s: f64 = (0..cols).map(|j| f64::from(at(i, j)).powi(2)).sum();
                    let norm = s.sqrt() as f32;
                    let r = &mut want_r[b * rows + i];
                    *r = lerp(*r, norm * norm / cols as f32, H.one_minus_beta2);
                }
                for j in 0..cols {
                    let s: f64 = (0..rows).map(|i| f64::from(at(i, j)).powi(2)).sum();
                    let norm = s.sqrt() as f32;
                    let c = &mut want_c[b * cols + j];
                    *c = lerp(*c, norm * norm / rows as f32, H.one_minus_beta2);
                }
                let r = &want_r[b * rows..(b + 1) * rows];
                let r_sum: f64 = r.iter().map(|&x| f64::from(x)).sum();
                let mean = (r_sum as f32 / rows as f32).max(H.eps1);
                for (i, &ri) in r.iter().enumerate() {
                    for j in 0..cols {
                        let x = u(ri * want_c[b * cols + j] / mean, at(i, j));
                        want_u_sq += f64::from(x) * f64::from(x);
                        let k = (b * rows + i) * cols + j;
                        want_p[k] = x.mul_add(-0.01, want_p[k]);
                    }
                }
            }

            let (mut got_r, mut got_c) = (row0, col0);
            let mut scratch = vec![0.0; cols];
            let mut moment = SecondMoment::Factored {
                row_var: &mut got_r, col_var: &mut got_c, rows, cols, scratch: &mut scratch,
            };
            let sums = adafactor::second_moment(&p, &g, &mut moment, &H).unwrap();
            prop_assert!(close(sums.param_sum_sq, sq(&p), 1e-13));
            prop_assert_eq!(sums.update_sum_sq, None);
            let u_sq = adafactor::update_sum_sq(&g, &moment, &H);
            let mut got_p = p;
            adafactor::apply(&mut got_p, &g, &moment, &H, None, -0.01).unwrap();
            // Sums in another order may round a norm to the next f32: 1 ulp.
            for (got, want) in got_r.iter().zip(&want_r).chain(got_c.iter().zip(&want_c)) {
                prop_assert!(close(f64::from(*got), f64::from(*want), 4e-7), "{got} vs {want}");
            }
            prop_assert!(close(u_sq, want_u_sq, 1e-5), "{u_sq} vs {want_u_sq}");
            for (got, want) in got_p.iter().zip(&want_p) {
                prop_assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{got} vs {want}");
            }
        }
    }
}
