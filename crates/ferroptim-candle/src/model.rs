//! A candle model's weights in and out of ferroptim's checkpoints: the
//! `model` part of a [`TrainingCheckpoint`](ferroptim::checkpoint::TrainingCheckpoint),
//! or of a torch checkpoint read with [`TorchCheckpoint`](ferroptim::TorchCheckpoint).

use candle_core::{DType, Tensor as CandleTensor, Var};
use candle_nn::VarMap;
use ferroptim::{Tensor, TensorData};

use crate::{Error, Result};

/// Every `Var` of `varmap` as a `(name, tensor)`, ordered by name: the
/// model part of a training checkpoint. `f32`, `f64`, `bf16` and `f16`
/// Vars are copied as they are; other types as `f32`.
pub fn model_tensors(varmap: &VarMap) -> Result<Vec<(String, Tensor)>> {
    let mut vars = vars_of(varmap);
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(name, var)| {
            let t = var.as_tensor().flatten_all()?;
            let data = match var.dtype() {
                DType::F64 => TensorData::F64(t.to_vec1::<f64>()?),
                DType::BF16 => TensorData::BF16(t.to_vec1()?),
                DType::F16 => TensorData::F16(t.to_vec1()?),
                _ => TensorData::F32(t.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            };
            Ok((name, Tensor::new(data, var.dims())?))
        })
        .collect()
}

/// Sets every `Var` of `varmap` from the tensor of the same name in
/// `tensors` (a checkpoint's model part, or a torch `model.state_dict()`
/// from [`TorchCheckpoint::tensors`](ferroptim::TorchCheckpoint::tensors)),
/// converted to the Var's dtype, as torch's `load_state_dict(strict=True)`:
/// a Var without a tensor, a tensor without a Var, or a shape that differs
/// is an error, and then no Var has changed.
pub fn load_model(varmap: &VarMap, tensors: &[(String, Tensor)]) -> Result<()> {
    let vars = vars_of(varmap);
    let by_name: std::collections::BTreeMap<&str, &Tensor> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut updates = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        let t = by_name
            .get(name.as_str())
            .ok_or_else(|| Error::ModelMismatch {
                reason: format!("the VarMap's {name:?} is not in the checkpoint"),
            })?;
        if t.shape() != var.dims() {
            return Err(Error::ModelMismatch {
                reason: format!(
                    "{name:?} is {:?} in the checkpoint, {:?} in the VarMap",
                    t.shape(),
                    var.dims()
                ),
            });
        }
        let value = match t.data() {
            TensorData::F32(v) => CandleTensor::from_slice(v, t.shape(), var.device())?,
            TensorData::F64(v) => CandleTensor::from_slice(v, t.shape(), var.device())?,
            TensorData::BF16(v) => CandleTensor::from_slice(v, t.shape(), var.device())?,
            TensorData::F16(v) => CandleTensor::from_slice(v, t.shape(), var.device())?,
        };
        updates.push((var, value.to_dtype(var.dtype())?));
    }
    if let Some((name, _)) = tensors
        .iter()
        .find(|(n, _)| !vars.iter().any(|(v, _)| v == n))
    {
        return Err(Error::ModelMismatch {
            reason: format!("the checkpoint's {name:?} is not in the VarMap"),
        });
    }
    // Everything checked and converted: set.
    for (var, value) in updates {
        var.set(&value)?;
    }
    Ok(())
}

/// The `(name, Var)` pairs of `varmap`, in its hash order.
pub(crate) fn vars_of(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
}
