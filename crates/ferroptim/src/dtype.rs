//! [`Dtype`]: the element types a tensor may hold. It depends on nothing
//! else in the crate, so errors and tensors can both name it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The element type of a tensor, named as torch names it in a state_dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    /// `torch.float32`
    #[serde(rename = "float32")]
    F32,
    /// `torch.float64`
    #[serde(rename = "float64")]
    F64,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        })
    }
}
