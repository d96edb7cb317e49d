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
//! The state is compared too, each basis `Q` with its columns' signs
//! taken from the reference's.

use crate::common;
use ferroptim::optim::{Soap, SoapConfig};
use ferroptim::{Optimizer, Param, StateValue, Tensor};
use std::collections::BTreeMap;

/// `got`'s columns, each negated where it points away from `want`'s (a
/// basis is defined up to its columns' signs); an empty placeholder as it is.
fn signs_of(got: &Tensor, want: &Tensor) -> Tensor {
    if got.shape().len() != 2 || got.shape() != want.shape() {
        return got.clone();
    }
    let n = got.shape()[1];
    let (mut q, w) = (got.to_f64_vec(), want.to_f64_vec());
    for j in 0..n {
        let dot: f64 = (0..q.len() / n).map(|r| q[r * n + j] * w[r * n + j]).sum();
        if dot < 0.0 {
            (0..q.len() / n).for_each(|r| q[r * n + j] = -q[r * n + j]);
        }
    }
    Tensor::from_vec(q, got.shape())
        .unwrap()
        .to_dtype(got.dtype())
}

/// The state's tolerance per tensor (relative to its largest magnitude), in
/// either dtype: a basis is the float32 QR of a power iteration, and its
/// error grows where two eigenvalues are close (measured: 2.2·10⁻⁶, a 7x7
/// basis with `precondition_1d`; the statistics and moments 10⁻⁶ or less).
const STATE_TOLERANCE: f64 = 1e-5;

type State = BTreeMap<usize, BTreeMap<String, StateValue>>;

/// `got` with every basis in `Q` given the reference's column signs.
fn aligned(mut got: State, want: &State) -> State {
    for (i, entry) in got.iter_mut() {
        let reference = want.get(i).and_then(|w| w.get("Q"));
        if let (Some(StateValue::TensorList(q)), Some(StateValue::TensorList(r))) =
            (entry.get_mut("Q"), reference)
        {
            for (q, r) in q.iter_mut().zip(r) {
                *q = signs_of(q, r);
            }
        }
    }
    got
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
        let (mut worst, mut scales) = (0.0f64, common::Scales::default());
        let mut state = common::Agreement::default();
        for i in 0..case.steps.len() {
            case.step_as_reference("soap", i, &mut opt, &params);
            let want = &case.steps[i].state;
            let what = format!("soap [{}] {} step {}", case.desc, case.dtype, i + 1);
            let got = aligned(opt.state_dict().state, want);
            state.merge(common::compare_state(&mut scales, &what, &got, want));
            for (p, want) in params.iter().zip(&case.steps[i].params) {
                let (got, want) = (p.value().to_f64_vec(), want.to_f64_vec());
                let scale = want.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
                for (a, b) in got.iter().zip(&want) {
                    worst = worst.max((a - b).abs() / scale);
                }
            }
        }
        let tol = common::soap_tolerance(&case.dtype);
        assert!(
            worst <= tol,
            "soap [{}] {}: {worst:e} > {tol:e}",
            case.desc,
            case.dtype
        );
        assert!(
            state.max_norm_rel <= STATE_TOLERANCE,
            "soap [{}] {}: state {:e}: {}",
            case.desc,
            case.dtype,
            state.max_norm_rel,
            state.worst
        );
        println!(
            "soap [{}] {}: worst parameter error {worst:e}, state {:e} ({})",
            case.desc, case.dtype, state.max_norm_rel, state.worst
        );
    }
}

/// `m`'s entries as rows of an `n`x`n` matrix.
fn square(m: &Tensor) -> (usize, Vec<f64>) {
    (m.shape()[0], m.to_f64_vec())
}

/// `aᵀ b c` for `n`x`n` row-major matrices.
fn sandwich(n: usize, a: &[f64], b: &[f64], c: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n)
                .flat_map(|k| (0..n).map(move |l| (k, l)))
                .map(|(k, l)| a[k * n + i] * b[k * n + l] * c[l * n + j])
                .sum();
        }
    }
    out
}

/// Where the reference's first bases cannot be matched (they are arbitrary
/// on the null space), ours must still be what the reference asks of them:
/// each `Q` orthonormal, `Qᵀ GG Q` diagonal, its diagonal descending.
#[test]
fn soaps_own_first_bases_are_orthonormal_descending_eigenbases() {
    let fixture = common::load("soap");
    let mut bases = 0;
    for case in &fixture.cases {
        let config: SoapConfig = serde_json::from_value(case.kwargs.clone()).unwrap();
        let params: Vec<Param> = case
            .initial_params
            .iter()
            .map(|t| Param::new(t.clone()))
            .collect();
        let mut opt = Soap::new(common::group_specs(&case.groups, &params), config).unwrap();
        case.step(0, &mut opt, &params);
        let tol = common::soap_tolerance(&case.dtype) * 10.0;
        for (i, entry) in opt.state_dict().state {
            let (Some(StateValue::TensorList(gg)), Some(StateValue::TensorList(q))) =
                (entry.get("GG"), entry.get("Q"))
            else {
                panic!("state[{i}] lacks GG or Q");
            };
            for (k, (gg, q)) in gg.iter().zip(q).enumerate() {
                assert_eq!(gg.numel() == 0, q.numel() == 0, "state[{i}] dimension {k}");
                if q.numel() == 0 {
                    continue;
                }
                let ((n, g), (_, q)) = (square(gg), square(q));
                let eye: Vec<f64> = (0..n * n)
                    .map(|x| f64::from(u8::from(x % (n + 1) == 0)))
                    .collect();
                let qtq = sandwich(n, &q, &eye, &q);
                let d = sandwich(n, &q, &g, &q);
                let norm = g.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
                let what = format!("{} {} state[{i}].Q[{k}]", case.desc, case.dtype);
                for r in 0..n {
                    for c in 0..n {
                        let want = eye[r * n + c];
                        assert!(
                            (qtq[r * n + c] - want).abs() <= tol,
                            "{what}: QᵀQ[{r},{c}] = {}",
                            qtq[r * n + c]
                        );
                        if r != c {
                            assert!(
                                d[r * n + c].abs() <= tol * norm,
                                "{what}: QᵀGGQ[{r},{c}] = {}",
                                d[r * n + c]
                            );
                        }
                    }
                    if r > 0 {
                        assert!(
                            d[r * n + r] <= d[(r - 1) * n + r - 1] + tol * norm,
                            "{what}: eigenvalue {r} rises"
                        );
                    }
                }
                bases += 1;
            }
        }
    }
    assert!(bases >= 26 * 2, "only {bases} bases checked");
}
