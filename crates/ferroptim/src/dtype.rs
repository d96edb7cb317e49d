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
    /// `torch.bfloat16`
    #[serde(rename = "bfloat16")]
    BF16,
    /// `torch.float16`
    #[serde(rename = "float16")]
    F16,
}

impl Dtype {
    /// Bytes per element (torch's `element_size()`).
    pub const fn size(self) -> usize {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
        }
    }

    /// Whether it is one of the 16-bit types (torch's reduced floating point types).
    pub const fn is_reduced(self) -> bool {
        matches!(self, Dtype::BF16 | Dtype::F16)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::BF16 => "bfloat16",
            Dtype::F16 => "float16",
        })
    }
}
