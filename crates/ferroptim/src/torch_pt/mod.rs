//! Reading optimizer checkpoints written by `torch.save(optimizer.state_dict(), path)`.
//!
//! Such a file is a zip archive (entries stored, not compressed) holding
//! `<name>/data.pkl`, a pickle of the state_dict, and `<name>/data/<key>`,
//! the raw little-endian bytes of each tensor storage. The pickle is read by
//! a small machine that knows exactly what state_dicts hold: dicts, lists,
//! tuples, numbers, strings, `None`, booleans, and tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` from float32 or float64 storages. Any
//! other object is a typed error, never code execution: this reader calls
//! nothing the file names.
//!
//! Three layers, one file each: [`pickle`] runs the pickle (named opcodes,
//! one small method per family of them), [`rebuild`] builds torch's objects
//! (storages, tensors, `OrderedDict`), and [`shape`] turns what the pickle
//! built into a [`StateDict`]. The optimizers' own state readers decide
//! what their keys mean (LBFGS drops its scratch `al`).
//!
//! ```no_run
//! use ferroptim::{optim, Optimizer, Param, StateDict};
//! let mut opt = optim::build("adam", "{}", [Param::zeros::<f32>(&[10])])?;
//! opt.load_state_dict(&StateDict::load_torch("opt.pt")?)?;
//! # Ok::<(), ferroptim::Error>(())
//! ```

mod pickle;
mod rebuild;
mod shape;

use std::io::{Cursor, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::state::StateDict;

use pickle::Machine;

/// Nesting deeper than this is refused (a state_dict is 4 levels deep).
pub(crate) const MAX_DEPTH: usize = 32;
/// Tensors with more elements than this are refused (a corrupt size, not a real checkpoint).
pub(crate) const MAX_ELEMENTS: usize = 1 << 34;
/// What one JSON value of a param group is counted as, beyond its text.
pub(crate) const NODE_BYTES: u64 = 16;

/// How much reading a torch checkpoint may build: the bytes of every
/// tensor and value of the state_dict it returns, counted for every place
/// an object appears (a pickle may refer to one object many times, and to
/// one storage from many views; each storage is read from the archive
/// once). Past the budget the read stops with a typed error before it
/// allocates more.
///
/// ```
/// use ferroptim::{StateDict, TorchLoadLimits};
/// // A file's default budget: 4 times its size, plus 64 MiB.
/// assert_eq!(TorchLoadLimits::for_file(1000).max_bytes, 4000 + (64 << 20));
/// // Bytes that are no archive fail long before any budget matters.
/// assert!(StateDict::from_torch_bytes_with(b"PK", TorchLoadLimits { max_bytes: 1 << 20 }).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TorchLoadLimits {
    /// The most bytes the state_dict read may hold.
    pub max_bytes: u64,
}

impl TorchLoadLimits {
    /// The default for a file of `len` bytes: `4·len + 64 MiB`. A real
    /// optimizer checkpoint builds about its own size (each storage is
    /// viewed once); only views that repeat data (a zero stride, one
    /// tensor referenced many times) build more.
    pub fn for_file(len: usize) -> Self {
        TorchLoadLimits {
            max_bytes: (len as u64).saturating_mul(4).saturating_add(64 << 20),
        }
    }
}

pub(crate) fn bad(reason: impl Into<String>) -> Error {
    Error::state("torch checkpoint", reason)
}

impl StateDict {
    /// Reads an optimizer checkpoint written by `torch.save(optimizer.state_dict(), path)`
    /// (any pickle protocol torch writes), within the default budget for its
    /// size ([`TorchLoadLimits::for_file`]).
    pub fn load_torch(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_torch_bytes(&bytes)
    }

    /// [`StateDict::load_torch`] on the bytes of the file.
    pub fn from_torch_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_torch_bytes_with(bytes, TorchLoadLimits::for_file(bytes.len()))
    }

    /// [`StateDict::from_torch_bytes`] within the budget `limits`.
    pub fn from_torch_bytes_with(bytes: &[u8], limits: TorchLoadLimits) -> Result<Self> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(format!("not a torch.save zip archive: {e}")))?;
        let pickle_name = zip
            .file_names()
            .find(|n| n.ends_with("data.pkl"))
            .map(str::to_string)
            .ok_or_else(|| bad("the archive has no data.pkl"))?;
        let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
        let mut read = |name: &str| -> Result<Vec<u8>> {
            let mut entry = zip.by_name(name).map_err(|e| bad(format!("{name}: {e}")))?;
            let mut out = Vec::new();
            // Bounded by the archive itself: a stored entry cannot be larger than the file.
            entry
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            Ok(out)
        };
        if let Ok(order) = read(&format!("{prefix}byteorder")) {
            if order != b"little" {
                return Err(bad(
                    "a big-endian checkpoint; ferroptim reads little-endian ones",
                ));
            }
        }
        let code = read(&pickle_name)?;
        let mut storage = |key: &str| read(&format!("{prefix}data/{key}"));
        let mut machine = Machine::new(&code, &mut storage, limits.max_bytes);
        let root = machine.run()?;
        machine.state_dict(root)
    }
}
