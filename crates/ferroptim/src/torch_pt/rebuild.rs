//! torch's objects, from the closed list a checkpoint holds: storages
//! named by persistent ids, tensors rebuilt from them, `OrderedDict`.
//! Anything else a REDUCE names becomes an opaque placeholder; nothing the
//! file names is ever called.

use half::{bf16, f16};

use super::pickle::{Arena, Machine, Obj, StorageKind};
use super::{bad, MAX_ELEMENTS};
use crate::error::Result;
use crate::tensor::{Tensor, TensorData};

impl Machine<'_> {
    pub(super) fn items(&self, i: usize) -> Option<&[usize]> {
        self.arena.items(i)
    }

    pub(super) fn int(&self, i: usize) -> Option<i64> {
        self.arena.int(i)
    }
}

impl Arena {
    pub(super) fn items(&self, i: usize) -> Option<&[usize]> {
        match &self[i] {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    pub(super) fn int(&self, i: usize) -> Option<i64> {
        match self[i] {
            Obj::Int(v) => Some(v),
            _ => None,
        }
    }
}

impl Machine<'_> {
    /// torch's persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
    pub(super) fn storage_of(&self, pid: usize) -> Result<Obj> {
        let items = self
            .items(pid)
            .filter(|v| v.len() == 5)
            .ok_or_else(|| bad("a persistent id that is not a storage"))?;
        let kind = match &self.arena[items[1]] {
            Obj::Global(m, n) if m == "torch" => n.as_str(),
            _ => return Err(bad("a storage without a torch storage type")),
        };
        let kind = StorageKind::from_class(kind)
            .ok_or_else(|| bad(format!("torch.{kind}: not a storage type ferroptim reads")))?;
        let key = match &self.arena[items[2]] {
            Obj::Str(s) => s.clone(),
            _ => return Err(bad("a storage key that is not a string")),
        };
        let numel = self
            .int(items[4])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad("a storage size that is not a sane count"))?;
        Ok(Obj::Storage { kind, key, numel })
    }

    pub(super) fn reduce(&mut self, callable: usize, args: usize) -> Result<Obj> {
        let (module, name) = match &self.arena[callable] {
            Obj::Global(m, n) => (m.clone(), n.clone()),
            _ => return Err(bad("REDUCE of something that is not a global")),
        };
        let args = self
            .items(args)
            .ok_or_else(|| bad("REDUCE arguments are not a tuple"))?
            .to_vec();
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") if args.is_empty() => Ok(Obj::Dict(Vec::new())),
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") if args.len() >= 4 => {
                self.rebuild_tensor(&args)
            }
            // nn.Parameter(data, requires_grad, hooks): the data.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
                if !args.is_empty() && matches!(self.arena[args[0]], Obj::Tensor(..)) =>
            {
                Ok(self.arena[args[0]].clone())
            }
            ("torch._utils" | "torch", _) | ("torch._tensor", _) => Err(bad(format!(
                "{module}.{name}: a torch object ferroptim does not read (a sparse, quantized \
                 or meta tensor?)"
            ))),
            _ => Ok(Obj::Opaque(format!("{module}.{name}"))),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: gathers the view into a contiguous tensor.
    fn rebuild_tensor(&mut self, args: &[usize]) -> Result<Obj> {
        let (kind, key, numel) = match &self.arena[args[0]] {
            Obj::Storage { kind, key, numel } => (*kind, key.clone(), *numel),
            _ => return Err(bad("a tensor rebuilt from something that is not a storage")),
        };
        let dims = |i: usize| -> Result<Vec<usize>> {
            self.items(i)
                .ok_or_else(|| bad("a tensor size or stride that is not a tuple"))?
                .iter()
                .map(|&d| {
                    self.int(d)
                        .and_then(|v| usize::try_from(v).ok())
                        .ok_or_else(|| bad("a negative or non-integer dimension"))
                })
                .collect()
        };
        let offset = self
            .int(args[1])
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad("a bad storage offset"))?;
        let (size, stride) = (dims(args[2])?, dims(args[3])?);
        if size.len() != stride.len() {
            return Err(bad("a tensor whose size and stride differ in length"));
        }
        let count = size
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad("a tensor size that overflows"))?;
        let width = kind.width();
        let built = match kind {
            StorageKind::BF16 | StorageKind::F16 => 2,
            _ if kind.as_f64() => 8,
            _ => 4,
        };
        self.charge(
            count as u64 * built,
            &format!("a tensor of {count} elements"),
        )?;
        if !self.storages.contains_key(&key) {
            let bytes = (self.storage)(&key)?;
            self.storages.insert(key.clone(), bytes);
        }
        let bytes = &self.storages[&key];
        // Checked at every use: two views may name one storage with different types or sizes.
        if bytes.len() != numel.saturating_mul(width) {
            return Err(bad(format!(
                "storage {key} holds {} bytes, expected {numel} elements of {width} bytes",
                bytes.len()
            )));
        }
        // Storage index of every element, in row-major order of `size`.
        let mut index = vec![0usize; size.len()];
        let mut positions = (0..count).map(|_| {
            let at = index.iter().zip(&stride).try_fold(offset, |a, (&i, &s)| {
                i.checked_mul(s).and_then(|x| a.checked_add(x))
            });
            for d in (0..size.len()).rev() {
                index[d] += 1;
                if index[d] < size[d] {
                    break;
                }
                index[d] = 0;
            }
            at.filter(|&at| at < numel)
                .ok_or_else(|| bad(format!("a tensor view reaches outside storage {key}")))
        });
        let b2 = |p: usize| [bytes[2 * p], bytes[2 * p + 1]];
        let b4 = |p: usize| {
            [
                bytes[4 * p],
                bytes[4 * p + 1],
                bytes[4 * p + 2],
                bytes[4 * p + 3],
            ]
        };
        let b8 = |p: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 * p..8 * p + 8]);
            b
        };
        // Every value is exact in the type it is read as (int64 up to 2^53).
        let wide = |p: usize| -> f64 {
            match kind {
                StorageKind::F64 => f64::from_le_bytes(b8(p)),
                StorageKind::I64 => i64::from_le_bytes(b8(p)) as f64,
                _ => f64::from(i32::from_le_bytes(b4(p))),
            }
        };
        let data = match kind {
            StorageKind::BF16 => TensorData::BF16(
                positions
                    .by_ref()
                    .map(|p| p.map(|p| bf16::from_le_bytes(b2(p))))
                    .collect::<Result<_>>()?,
            ),
            StorageKind::F16 => TensorData::F16(
                positions
                    .by_ref()
                    .map(|p| p.map(|p| f16::from_le_bytes(b2(p))))
                    .collect::<Result<_>>()?,
            ),
            _ if kind.as_f64() => TensorData::F64(
                positions
                    .by_ref()
                    .map(|p| p.map(wide))
                    .collect::<Result<_>>()?,
            ),
            _ => {
                let read = |p: usize| -> f32 {
                    match kind {
                        StorageKind::F32 => f32::from_le_bytes(b4(p)),
                        StorageKind::I16 => f32::from(i16::from_le_bytes(b2(p))),
                        StorageKind::I8 => f32::from(bytes[p] as i8),
                        _ => f32::from(bytes[p]),
                    }
                };
                TensorData::F32(
                    positions
                        .by_ref()
                        .map(|p| p.map(read))
                        .collect::<Result<_>>()?,
                )
            }
        };
        Ok(Obj::Tensor(Tensor::new(data, &size)?, kind))
    }
}
