//! Gradient clipping against torch's `clip_grad_norm_` / `clip_grad_value_`
//! (tools/torch_reference/clip.py): every norm order torch offers, clipping
//! and not, float32, float64 and mixed, NaN and infinite gradients, and
//! torch's errors.

use ferroptim::{clip, Dtype, Error, Grad, Param, Tensor};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixture {
    torch_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct ParamSpec {
    dtype: String,
    shape: Vec<usize>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    norm_type: Option<Value>,
    max_norm: Option<f64>,
    #[serde(default)]
    error_if_nonfinite: bool,
    clip_value: Option<f64>,
    params: Vec<ParamSpec>,
    grads: Vec<Option<Tensor>>,
    total_norm: Option<Value>,
    total_norm_dtype: Option<String>,
    clipped: Option<Vec<Option<Tensor>>>,
    error: Option<String>,
}

/// A number the generator wrote: finite, or "nan" / "inf" / "-inf".
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("nan or inf"),
        v => v.as_f64().expect("a number"),
    }
}

fn tolerance(dtype: &str) -> f64 {
    if dtype == "float64" {
        1e-12
    } else {
        1e-6
    }
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got.is_nan() && want.is_nan())
        || got == want
        || (got - want).abs() <= tol * want.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn clipping_matches_torch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clip.json"
    ))
    .unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(fixture.torch_version.starts_with("2.15"));
    let (mut norms, mut errors) = (0, 0);
    for (k, case) in fixture.cases.iter().enumerate() {
        let params: Vec<Param> = case
            .params
            .iter()
            .map(|s| {
                Param::new(Tensor::zeros(
                    if s.dtype == "float64" {
                        Dtype::F64
                    } else {
                        Dtype::F32
                    },
                    &s.shape,
                ))
            })
            .collect();
        for (p, g) in params.iter().zip(&case.grads) {
            if let Some(g) = g {
                p.set_grad(g.clone()).unwrap();
            }
        }
        let what = format!("case {k} ({} {:?})", case.kind, case.norm_type);
        if case.kind == "value" {
            clip::clip_grad_value(&params, case.clip_value.unwrap()).unwrap();
        } else {
            let result = clip::clip_grad_norm(
                &params,
                case.max_norm.unwrap(),
                number(case.norm_type.as_ref().unwrap()),
                case.error_if_nonfinite,
            );
            if let Some(message) = &case.error {
                let err = result.expect_err(&what);
                assert!(
                    matches!(err, Error::NonFiniteNorm { .. } | Error::EmptyNorm { .. }),
                    "{what}: {err:?}"
                );
                if matches!(err, Error::NonFiniteNorm { .. }) {
                    assert_eq!(&err.to_string(), message, "{what}");
                }
                for (p, g) in params.iter().zip(&case.grads) {
                    let now = p.grad().map(|g| match g {
                        Grad::Dense(t) => t,
                        Grad::Sparse(_) => unreachable!(),
                    });
                    let bits = |t: Option<&Tensor>| {
                        t.map(|t| {
                            t.to_f64_vec()
                                .iter()
                                .map(|x| x.to_bits())
                                .collect::<Vec<_>>()
                        })
                    };
                    assert_eq!(
                        bits(now.as_ref()),
                        bits(g.as_ref()),
                        "{what}: a failed clip changed a gradient"
                    );
                }
                errors += 1;
                continue;
            }
            let total = result.unwrap_or_else(|e| panic!("{what}: {e}"));
            // float32 gradients' norms are float32 in a float64 total too.
            let dtype = case.total_norm_dtype.as_deref().unwrap();
            let any_f32 = case.params.iter().any(|p| p.dtype == "float32");
            let tol = if any_f32 {
                tolerance("float32")
            } else {
                tolerance(dtype)
            };
            let want = number(case.total_norm.as_ref().unwrap());
            assert!(
                close(total, want, tol),
                "{what}: total norm {total} vs torch {want}"
            );
            norms += 1;
        }
        for (i, (p, want)) in params
            .iter()
            .zip(case.clipped.as_ref().unwrap())
            .enumerate()
        {
            let got = p.grad().map(|g| match g {
                Grad::Dense(t) => t,
                Grad::Sparse(_) => unreachable!(),
            });
            assert_eq!(got.is_some(), want.is_some(), "{what}: gradient {i}");
            if let (Some(got), Some(want)) = (got, want) {
                // The scale comes from the total, as precise as the least precise gradient.
                let any_f32 = case.params.iter().any(|p| p.dtype == "float32");
                let tol = if any_f32 {
                    tolerance("float32")
                } else {
                    tolerance(&case.params[i].dtype)
                };
                for (j, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
                    assert!(
                        close(*a, b, tol),
                        "{what}: gradient {i} element {j}: {a} vs torch {b}"
                    );
                }
            }
        }
    }
    assert!(
        norms >= 40 && errors >= 10,
        "{norms} norms, {errors} errors"
    );
}

#[test]
fn sparse_gradients_are_refused_and_nothing_is_clipped() {
    let dense = Param::zeros::<f32>(&[2]);
    dense
        .set_grad(Tensor::from_vec(vec![30.0f32, 40.0], &[2]).unwrap())
        .unwrap();
    let emb = Param::zeros::<f32>(&[3, 2]);
    let rows = Tensor::from_vec(vec![1.0f32, 1.0], &[1, 2]).unwrap();
    emb.set_sparse_grad(ferroptim::SparseGrad::new(vec![0], rows).unwrap())
        .unwrap();
    let params = [dense.clone(), emb];
    let err = clip::clip_grad_norm(&params, 1.0, 2.0, false).unwrap_err();
    assert!(
        matches!(err, Error::SparseGradUnsupported { param: 1, .. }),
        "{err:?}"
    );
    assert!(clip::clip_grad_value(&params, 1.0).is_err());
    let Some(Grad::Dense(g)) = dense.grad() else {
        panic!("dense gradient lost")
    };
    assert_eq!(g.to_f64_vec(), vec![30.0, 40.0]);
}
