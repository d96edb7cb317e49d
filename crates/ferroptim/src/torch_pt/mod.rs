//! Reading checkpoints written by `torch.save`: an optimizer's state_dict
//! alone ([`StateDict::load_torch`]), or a whole training checkpoint whose
//! parts are taken by key ([`TorchCheckpoint`], [`StateDict::load_torch_key`]).
//!
//! Such a file is a zip archive (entries stored, not compressed) holding
//! `<name>/data.pkl`, a pickle of the state_dict, and `<name>/data/<key>`,
//! the raw little-endian bytes of each tensor storage. The pickle is read by
//! a small machine that knows what checkpoints hold: dicts (and
//! `OrderedDict`s with their `_metadata`), lists, tuples, sets, numbers,
//! strings, `None`, booleans, and tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` from storages of any float, integer
//! or bool type. Any other object becomes an opaque placeholder, never code
//! execution: this reader calls nothing the file names.
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

use serde_json::Value;

use crate::error::{Error, Result};
use crate::state::StateDict;
use crate::tensor::Tensor;

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
        Self::from_torch_bytes(&crate::checkpoint::read_file(path.as_ref())?)
    }

    /// [`StateDict::load_torch`] on the bytes of the file.
    pub fn from_torch_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_torch_bytes_with(bytes, TorchLoadLimits::for_file(bytes.len()))
    }

    /// [`StateDict::from_torch_bytes`] within the budget `limits`.
    pub fn from_torch_bytes_with(bytes: &[u8], limits: TorchLoadLimits) -> Result<Self> {
        let (arena, root) = parse(bytes, limits)?;
        arena.state_dict(root)
    }

    /// The optimizer state_dict at `key` inside a torch checkpoint that
    /// holds more: `"optimizer"` of `torch.save({'model': ..., 'optimizer':
    /// opt.state_dict(), 'epoch': 3}, path)`, or Lightning's
    /// `"optimizer_states[0]"` (keys separated by `/`, list indices in
    /// brackets). A missing key is an error listing the keys there are.
    pub fn load_torch_key(path: impl AsRef<Path>, key: &str) -> Result<Self> {
        TorchCheckpoint::load(path)?.state_dict(key)
    }
}

/// A whole torch checkpoint, read once: the nested dicts, lists and
/// tensors of `torch.save({'model': model.state_dict(), 'optimizer':
/// opt.state_dict(), 'lr_scheduler': sched.state_dict(), 'epoch': 3}, path)`
/// (or Lightning's layout), from which each part is taken by its key.
///
/// Read as safely as a bare state_dict: nothing the file names is ever
/// called. Objects this reader does not build (an `argparse.Namespace`, a
/// numpy scalar) are kept as placeholders, so the rest reads; asking for
/// one is an error. Tensors of any of torch's float, integer or bool types
/// are read (as float32, or float64 for float64, int64 and int32: exactly).
///
/// ```no_run
/// use ferroptim::TorchCheckpoint;
/// let file = TorchCheckpoint::load("checkpoint.pt")?;
/// let optimizer = file.state_dict("optimizer")?;
/// let model = file.tensors("model")?;            // (name, tensor) in order
/// let scheduler = file.json("lr_scheduler")?;    // a scheduler's state_dict
/// let epoch = file.json("epoch")?;
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub struct TorchCheckpoint {
    arena: pickle::Arena,
    root: usize,
}

impl std::fmt::Debug for TorchCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchCheckpoint")
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl TorchCheckpoint {
    /// Reads the file at `path` within the default budget for its size.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let bytes = crate::checkpoint::read_file(path.as_ref())?;
        Self::from_bytes_with(&bytes, TorchLoadLimits::for_file(bytes.len()))
    }

    /// Reads the bytes of a `torch.save` file within the budget `limits`.
    pub fn from_bytes_with(bytes: &[u8], limits: TorchLoadLimits) -> Result<Self> {
        let (arena, root) = parse(bytes, limits)?;
        Ok(TorchCheckpoint { arena, root })
    }

    /// The top-level keys, if the file holds a dict.
    pub fn keys(&self) -> Vec<String> {
        self.arena.keys_of(self.root)
    }

    /// The optimizer state_dict at `key` (see [`StateDict::load_torch_key`];
    /// `""` is the whole file).
    pub fn state_dict(&self, key: &str) -> Result<StateDict> {
        self.arena.state_dict(self.arena.find(self.root, key)?)
    }

    /// The dict of named tensors at `key` (a model's `state_dict()`), in
    /// the file's order.
    pub fn tensors(&self, key: &str) -> Result<Vec<(String, Tensor)>> {
        self.arena.tensors(self.arena.find(self.root, key)?, key)
    }

    /// The plain value at `key` (numbers, strings, lists, dicts: a
    /// scheduler's state_dict, an epoch) as JSON; NaN and infinities as
    /// ferroptim writes them ([`json`](crate::json)).
    pub fn json(&self, key: &str) -> Result<Value> {
        self.arena.json(self.arena.find(self.root, key)?, 0)
    }

    /// Whether there is something at `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.arena.find(self.root, key).is_ok()
    }
}

/// Runs the pickle of a `torch.save` archive; what it built and the root.
fn parse(bytes: &[u8], limits: TorchLoadLimits) -> Result<(pickle::Arena, usize)> {
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
    Ok((machine.arena, root))
}
