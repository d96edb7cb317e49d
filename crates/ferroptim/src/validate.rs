//! torch's constructor checks, with torch's messages, and the Python float
//! formatting those messages use.

use crate::error::{Error, Result};

/// torch's `if not 0.0 <= value: raise ValueError(f"{label}: {value}")`.
/// NaN fails, as in torch.
pub(crate) fn check_non_negative(name: &'static str, label: &str, value: f64) -> Result<()> {
    if value >= 0.0 {
        Ok(())
    } else {
        Err(Error::hyper(name, format!("{label}: {}", py_float(value))))
    }
}

/// torch's `if not 0.0 < value: raise ValueError(f"{label}: {value}")`.
pub(crate) fn check_positive(name: &'static str, label: &str, value: f64) -> Result<()> {
    if value > 0.0 {
        Ok(())
    } else {
        Err(Error::hyper(name, format!("{label}: {}", py_float(value))))
    }
}

/// torch's `if not 0.0 <= value < 1.0: raise ValueError(f"{label}: {value}")`.
pub(crate) fn check_unit_interval(name: &'static str, label: &str, value: f64) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::hyper(name, format!("{label}: {}", py_float(value))))
    }
}

/// The checks Adam and its relatives (Adamax, NAdam, RAdam) share, in
/// torch's order and with torch's messages: lr, eps, betas, weight_decay.
pub(crate) fn check_adam_like(
    lr: f64,
    eps: f64,
    betas: (f64, f64),
    weight_decay: f64,
) -> Result<()> {
    check_non_negative("lr", "Invalid learning rate", lr)?;
    check_non_negative("eps", "Invalid epsilon value", eps)?;
    check_unit_interval("betas", "Invalid beta parameter at index 0", betas.0)?;
    check_unit_interval("betas", "Invalid beta parameter at index 1", betas.1)?;
    check_non_negative("weight_decay", "Invalid weight_decay value", weight_decay)
}

/// pytorch-optimizer's `validate_learning_rate`: `NegativeLRError` for
/// `lr < 0` (0 is allowed). NaN fails here too, where the reference lets it
/// through to the step.
pub(crate) fn pto_learning_rate(lr: f64) -> Result<()> {
    if lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::hyper(
            "lr",
            format!("learning rate must be positive. ({} > 0)", py_float(lr)),
        ))
    }
}

/// pytorch-optimizer's `validate_non_negative`; NaN fails here too.
pub(crate) fn pto_non_negative(name: &'static str, value: f64) -> Result<()> {
    if value >= 0.0 {
        Ok(())
    } else {
        Err(Error::hyper(name, format!("{name} must be non-negative")))
    }
}

/// pytorch-optimizer's `validate_betas`: each beta in `[0, 1)`, a third one
/// (AdEMAMix's slow momentum) in `[0, 1]`, under the names `beta1`...
pub(crate) fn pto_betas(betas: &[f64]) -> Result<()> {
    for (i, &beta) in betas.iter().enumerate() {
        let closed = i == 2;
        let inside = if closed {
            (0.0..=1.0).contains(&beta)
        } else {
            (0.0..1.0).contains(&beta)
        };
        if !inside {
            let end = if closed { ']' } else { ')' };
            return Err(Error::hyper(
                "betas",
                format!("beta{} must be in the range [0.0, 1.0{end}", i + 1),
            ));
        }
    }
    Ok(())
}

/// Formats an f64 as Python's `repr` does for the values torch puts in its
/// messages (`1.0`, `-0.5`, `1e-08`), so our messages read like torch's.
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = x.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Python: shortest digits, exponent with a sign and at least two digits.
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{x:?}")
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn py_float_matches_python_repr() {
        for (x, repr) in [
            (1.0, "1.0"),
            (-0.5, "-0.5"),
            (0.001, "0.001"),
            (-1e-8, "-1e-08"),
            (1e-5, "1e-05"),
            (1e20, "1e+20"),
            (0.0, "0.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(py_float(x), repr, "repr of {x}");
        }
    }
}
