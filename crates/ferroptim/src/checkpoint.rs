//! Checkpoints on disk: a [`StateDict`] as a safetensors file, written
//! atomically; and a whole training run in one such file
//! ([`TrainingCheckpoint`]: model, optimizer, schedulers, epoch).
//!
//! The state tensors are the file's tensors, named `state.<param>.<key>`
//! (and `state.<param>.<key>.<i>` for a list such as LBFGS's `old_dirs`);
//! the file's JSON metadata keeps torch's structure:
//!
//! ```text
//! "format":       "ferroptim.state_dict.v1"
//! "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], ..., "params": [0, 1]}, ...]
//! "state":        {"0": {"step": {"tensor": "state.0.step"}, "func_evals": 3, ...}, ...}
//! ```
//!
//! Any safetensors reader sees the moments; `StateDict::load` gives back the
//! exact state_dict (every float bit for bit). A save writes a temporary
//! file beside the target, syncs it and renames it over the target, so a
//! crash or an error mid-save leaves the previous checkpoint whole.
//!
//! ```
//! use ferroptim::{optim::{Adam, AdamConfig}, Optimizer, Param, StateDict, Tensor};
//! let p = Param::from_vec(vec![1.0f32, 2.0], &[2])?;
//! let mut opt = Adam::new([p.clone()], AdamConfig::default())?;
//! p.set_grad(Tensor::from_vec(vec![0.5f32, -0.5], &[2])?)?;
//! opt.step()?;
//! let dir = std::env::temp_dir().join(format!("ferroptim-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("adam.safetensors");
//! opt.state_dict().save(&path)?;
//! assert_eq!(StateDict::load(&path)?, opt.state_dict());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), ferroptim::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::lr_scheduler::{LrScheduler, SchedulerState};
use crate::state::{ParamStateDict, StateDict, StateValue};
use crate::tensor::{Storage, Tensor, TensorData};

/// The largest header (JSON of tensor names, shapes and metadata) that the
/// `safetensors` reader accepts: 100 MB, about 230k Adam parameters. A
/// state_dict whose header is larger is refused by `save`, before any file
/// is touched, rather than written and never read back.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The `format` the metadata names; a file without it is not a ferroptim checkpoint.
pub const FORMAT: &str = "ferroptim.state_dict.v1";

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn format_error(reason: impl Into<String>) -> Error {
    Error::state("safetensors checkpoint", reason)
}

/// A named tensor ready to write: its dtype, little-endian bytes and shape.
struct Encoded {
    name: String,
    dtype: StDtype,
    bytes: Vec<u8>,
    shape: Vec<usize>,
}

impl Encoded {
    fn new(name: String, t: &Tensor) -> Self {
        let (dtype, bytes) = tensor_bytes(t);
        Encoded {
            name,
            dtype,
            bytes,
            shape: t.shape().to_vec(),
        }
    }
}

/// A tensor's little-endian bytes and safetensors dtype.
fn tensor_bytes(t: &Tensor) -> (StDtype, Vec<u8>) {
    match t.data() {
        TensorData::F32(v) => (
            StDtype::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::F64(v) => (
            StDtype::F64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::BF16(v) => (
            StDtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::F16(v) => (
            StDtype::F16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    }
}

fn tensor_from_view(name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let bytes = view.data();
    let data = match view.dtype() {
        StDtype::F32 => TensorData::F32(f32::from_le_slice(bytes)),
        StDtype::F64 => TensorData::F64(f64::from_le_slice(bytes)),
        StDtype::BF16 => TensorData::BF16(half::bf16::from_le_slice(bytes)),
        StDtype::F16 => TensorData::F16(half::f16::from_le_slice(bytes)),
        other => {
            return Err(format_error(format!(
                "tensor {name:?} has dtype {other:?}; ferroptim keeps F32, F64, BF16 and F16 state"
            )))
        }
    };
    Tensor::new(data, view.shape())
}

impl StateDict {
    /// The state_dict as the bytes of a safetensors file (see the module documentation).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<Encoded> = Vec::new();
        let state = encode_state(self, &mut tensors);
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                "param_groups".to_string(),
                serde_json::to_string(&self.param_groups)?,
            ),
            ("state".to_string(), serde_json::to_string(&state)?),
        ]);
        serialize(&tensors, metadata)
    }

    /// Reads the bytes of a safetensors checkpoint written by
    /// [`StateDict::to_safetensors`]. Every tensor must be referenced by the
    /// metadata, and every reference must name a tensor.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let (file, meta) = open(bytes, FORMAT)?;
        let mut tensors = Tensors::new(&file);
        let optimizer = decode_state(&meta, &mut tensors)?;
        tensors.all_taken()?;
        Ok(optimizer)
    }

    /// Writes the checkpoint to `path` atomically: the previous file at
    /// `path`, if any, stays whole until the new one is complete on disk.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_safetensors()?;
        write_atomic(path.as_ref(), |file| file.write_all(&bytes))
    }

    /// Reads a checkpoint written by [`StateDict::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_safetensors(&read_file(path.as_ref())?)
    }
}

/// The optimizer state of `sd` as JSON metadata, its tensors appended to
/// `tensors` as `state.<param>.<key>` (`.<i>` for each of a list).
fn encode_state(sd: &StateDict, tensors: &mut Vec<Encoded>) -> Map<String, Value> {
    let mut state = Map::new();
    for (param, entries) in &sd.state {
        let mut out = Map::new();
        for (key, value) in entries {
            let name = format!("state.{param}.{key}");
            let v = match value {
                StateValue::Int(i) => Value::from(*i),
                StateValue::Float(x) => crate::json::number(*x),
                StateValue::Tensor(t) => {
                    tensors.push(Encoded::new(name.clone(), t));
                    Value::Object(Map::from_iter([("tensor".to_string(), Value::from(name))]))
                }
                StateValue::TensorList(list) => {
                    let mut names = Vec::new();
                    for (i, t) in list.iter().enumerate() {
                        let name = format!("{name}.{i}");
                        names.push(Value::from(name.as_str()));
                        tensors.push(Encoded::new(name, t));
                    }
                    Value::Object(Map::from_iter([(
                        "tensors".to_string(),
                        Value::Array(names),
                    )]))
                }
            };
            out.insert(key.clone(), v);
        }
        state.insert(param.to_string(), Value::Object(out));
    }
    state
}

/// The bytes of a safetensors file of `tensors` with `metadata`; refused
/// if its header would be larger than a reader accepts.
fn serialize(tensors: &[Encoded], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| TensorView::new(t.dtype, t.shape.clone(), &t.bytes).map(|v| (t.name.as_str(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format_error(e.to_string()))?;
    let bytes = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| format_error(e.to_string()))?;
    // A header the reader refuses would be a checkpoint that saves and never loads.
    let header = bytes
        .get(..8)
        .map_or(0, |n| u64::from_le_bytes(n.try_into().unwrap_or([0; 8])));
    if header > MAX_HEADER_BYTES {
        return Err(format_error(format!(
            "the header (names, shapes and metadata of {} tensors) would take {header} bytes, \
             more than the {MAX_HEADER_BYTES} a safetensors reader accepts; save this \
             state_dict as JSON (StateDict::to_json) instead",
            tensors.len()
        )));
    }
    Ok(bytes)
}

/// A safetensors file and its metadata, which must name `format`.
fn open<'a>(bytes: &'a [u8], format: &str) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format_error(e.to_string()))?;
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format_error(e.to_string()))?;
    let meta = metadata
        .metadata()
        .clone()
        .ok_or_else(|| format_error("no metadata; expected a ferroptim checkpoint"))?;
    match meta.get("format") {
        Some(f) if f == format => {}
        other => {
            return Err(format_error(format!(
                "metadata format is {other:?}; expected {format:?}"
            )))
        }
    }
    Ok((file, meta))
}

/// The tensors of a file, each to be taken by name exactly once.
struct Tensors<'a> {
    views: BTreeMap<String, TensorView<'a>>,
    taken: std::collections::BTreeSet<String>,
}

impl<'a> Tensors<'a> {
    fn new(file: &'a SafeTensors<'a>) -> Self {
        Tensors {
            views: file.tensors().into_iter().collect(),
            taken: Default::default(),
        }
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        let Some(view) = self.views.remove(name) else {
            return Err(format_error(if self.taken.contains(name) {
                format!("metadata names tensor {name:?} twice; each tensor is its own")
            } else {
                format!("metadata names tensor {name:?}, which the file lacks")
            }));
        };
        self.taken.insert(name.to_string());
        tensor_from_view(name, &view)
    }

    fn take_ref(&mut self, name: &Value) -> Result<Tensor> {
        let name = name
            .as_str()
            .ok_or_else(|| format_error(format!("tensor reference {name} is not a name")))?;
        self.take(name)
    }

    /// Every tensor must have been referenced by the metadata.
    fn all_taken(&self) -> Result<()> {
        match self.views.keys().next() {
            Some(name) => Err(format_error(format!(
                "tensor {name:?} is not referenced by the metadata"
            ))),
            None => Ok(()),
        }
    }
}

/// The bytes of the file at `path` (every loader's first step).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_error(path, e))
}

/// Metadata `key`, read from its JSON.
fn meta_json<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
) -> Result<T> {
    let text = meta
        .get(key)
        .ok_or_else(|| format_error(format!("metadata has no {key:?}")))?;
    Ok(serde_json::from_str(text)?)
}

/// The optimizer state_dict of metadata `meta` (`param_groups`, `state`).
fn decode_state(meta: &HashMap<String, String>, tensors: &mut Tensors<'_>) -> Result<StateDict> {
    let param_groups: Vec<Map<String, Value>> = meta_json(meta, "param_groups")?;
    let saved: BTreeMap<usize, Map<String, Value>> = meta_json(meta, "state")?;
    let mut state = BTreeMap::new();
    for (param, entries) in saved {
        let mut out = ParamStateDict::new();
        for (key, value) in entries {
            let v = match &value {
                Value::Object(o) if o.len() == 1 && o.contains_key("tensor") => {
                    StateValue::Tensor(tensors.take_ref(&o["tensor"])?)
                }
                Value::Object(o) if o.len() == 1 && o.contains_key("tensors") => {
                    let names = o["tensors"].as_array().ok_or_else(|| {
                        format_error(format!("state.{param}.{key}: \"tensors\" is not a list"))
                    })?;
                    StateValue::TensorList(
                        names
                            .iter()
                            .map(|n| tensors.take_ref(n))
                            .collect::<Result<_>>()?,
                    )
                }
                _ => crate::json::from_value(value)?,
            };
            out.insert(key, v);
        }
        state.insert(param, out);
    }
    Ok(StateDict {
        state,
        param_groups,
    })
}

/// The `format` of a [`TrainingCheckpoint`] file.
pub const TRAINING_FORMAT: &str = "ferroptim.training.v1";

/// Everything a training run resumes from, in one safetensors file: the
/// model's weights, the optimizer's state_dict, the schedulers' states, and
/// the run's own values (epoch, step, anything JSON). Saved atomically, as
/// every ferroptim checkpoint.
///
/// The file's tensors are `model.<name>` and the optimizer's
/// `state.<param>.<key>`; its metadata holds the model's names in order
/// (`model`), the optimizer's `param_groups` and `state` as in a
/// [`StateDict`] file, `lr_schedulers` (a list of state_dicts) and
/// `metadata`. `tools/ferroptim_checkpoint.py`'s `load_training` gives
/// torch's usual `{'model': ..., 'optimizer': ..., 'lr_scheduler': ...,
/// 'epoch': ...}`; [`TrainingCheckpoint::from_torch`] reads that dict (or
/// Lightning's) from a `torch.save` file.
///
/// ```
/// use ferroptim::checkpoint::TrainingCheckpoint;
/// use ferroptim::lr_scheduler::{LrScheduler, StepLR, StepLRConfig};
/// use ferroptim::{optim::{Adam, AdamConfig}, Optimizer, Param, Tensor};
/// let w = Param::from_vec(vec![1.0f32, 2.0], &[2])?;
/// let mut opt = Adam::new([("w", w.clone())], AdamConfig::default())?;
/// let mut sched = StepLR::new(&mut opt, StepLRConfig::new(10))?;
/// w.set_grad(Tensor::from_vec(vec![0.5f32, -0.5], &[2])?)?;
/// opt.step()?;
/// sched.step(&mut opt)?;
/// let ckpt = TrainingCheckpoint::new(&opt)
///     .with_model([("w".to_string(), w.value())])
///     .with_scheduler(&sched)
///     .with("epoch", 1);
/// let dir = std::env::temp_dir().join(format!("ferroptim-train-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// ckpt.save(dir.join("run.safetensors"))?;
/// let back = TrainingCheckpoint::load(dir.join("run.safetensors"))?;
/// assert_eq!(back, ckpt);
/// assert_eq!(back.metadata["epoch"], 1);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingCheckpoint {
    /// The model's weights by name, in order (torch's `model.state_dict()`).
    pub model: Vec<(String, Tensor)>,
    /// The optimizer's state_dict.
    pub optimizer: StateDict,
    /// Each scheduler's state_dict, in the order they were added.
    pub schedulers: Vec<SchedulerState>,
    /// The run's own values: `epoch`, `step`, anything JSON.
    pub metadata: Map<String, Value>,
}

impl TrainingCheckpoint {
    /// A checkpoint of `opt`'s state_dict; add the rest with the `with_` methods.
    pub fn new(opt: &dyn crate::Optimizer) -> Self {
        TrainingCheckpoint {
            optimizer: opt.state_dict(),
            ..Default::default()
        }
    }

    /// With the model's weights (name, tensor), in the model's order.
    #[must_use]
    pub fn with_model(mut self, model: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        self.model = model.into_iter().collect();
        self
    }

    /// With one more scheduler's state_dict.
    #[must_use]
    pub fn with_scheduler(mut self, scheduler: &dyn LrScheduler) -> Self {
        self.schedulers.push(scheduler.state_dict());
        self
    }

    /// With a value of the run's own (`"epoch"`, `"step"`, ...); NaN and
    /// infinities are kept (see [`json`](crate::json)).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let value = crate::json::to_value(&value).unwrap_or(Value::Null);
        self.metadata.insert(key.to_string(), value);
        self
    }

    /// The checkpoint as the bytes of a safetensors file.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<Encoded> = Vec::new();
        let mut names = Vec::with_capacity(self.model.len());
        let mut seen = std::collections::BTreeSet::new();
        for (name, t) in &self.model {
            if !seen.insert(name.as_str()) {
                return Err(format_error(format!(
                    "the model has two tensors named {name:?}"
                )));
            }
            names.push(Value::from(name.as_str()));
            tensors.push(Encoded::new(format!("model.{name}"), t));
        }
        let state = encode_state(&self.optimizer, &mut tensors);
        let metadata = HashMap::from([
            ("format".to_string(), TRAINING_FORMAT.to_string()),
            ("model".to_string(), serde_json::to_string(&names)?),
            (
                "param_groups".to_string(),
                serde_json::to_string(&self.optimizer.param_groups)?,
            ),
            ("state".to_string(), serde_json::to_string(&state)?),
            (
                "lr_schedulers".to_string(),
                serde_json::to_string(&self.schedulers)?,
            ),
            (
                "metadata".to_string(),
                serde_json::to_string(&self.metadata)?,
            ),
        ]);
        serialize(&tensors, metadata)
    }

    /// Reads the bytes of a file written by [`TrainingCheckpoint::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let (file, meta) = open(bytes, TRAINING_FORMAT)?;
        let mut tensors = Tensors::new(&file);
        let names: Vec<String> = meta_json(&meta, "model")?;
        let model = names
            .into_iter()
            .map(|name| {
                let t = tensors.take(&format!("model.{name}"))?;
                Ok((name, t))
            })
            .collect::<Result<_>>()?;
        let optimizer = decode_state(&meta, &mut tensors)?;
        let schedulers: Vec<Map<String, Value>> = meta_json(&meta, "lr_schedulers")?;
        let metadata = meta_json(&meta, "metadata")?;
        tensors.all_taken()?;
        Ok(TrainingCheckpoint {
            model,
            optimizer,
            schedulers,
            metadata,
        })
    }

    /// Writes the checkpoint to `path` atomically (see [`write_atomic`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_safetensors()?;
        write_atomic(path.as_ref(), |file| file.write_all(&bytes))
    }

    /// Reads a checkpoint written by [`TrainingCheckpoint::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_safetensors(&read_file(path.as_ref())?)
    }

    /// The training checkpoint in a `torch.save` file, in torch's usual
    /// layout (`model`, `optimizer`, `lr_scheduler`, and plain values such
    /// as `epoch`) or Lightning's (`state_dict`, `optimizer_states[0]`,
    /// `lr_schedulers`). Other plain top-level values become
    /// [`metadata`](Self::metadata); objects ferroptim does not read are left out.
    pub fn from_torch(file: &crate::TorchCheckpoint) -> Result<Self> {
        let first = |keys: &[&'static str]| keys.iter().copied().find(|k| file.contains(k));
        let optimizer_key = first(&["optimizer", "optimizer_states[0]", "optimizer_state_dict"])
            .ok_or_else(|| {
                format_error(format!(
                    "no optimizer state in the torch checkpoint (looked for \"optimizer\", \
                     \"optimizer_states\", \"optimizer_state_dict\"); it holds: {}",
                    file.keys().join(", ")
                ))
            })?;
        let model_key = first(&["model", "state_dict", "model_state_dict"]);
        let model = match model_key {
            Some(key) => file.tensors(key)?,
            None => Vec::new(),
        };
        let schedulers = match first(&["lr_scheduler", "scheduler"]) {
            Some(key) => vec![scheduler_state(file.json(key)?, key)?],
            None if file.contains("lr_schedulers") => match file.json("lr_schedulers")? {
                Value::Array(list) => list
                    .into_iter()
                    .map(|s| scheduler_state(s, "lr_schedulers"))
                    .collect::<Result<_>>()?,
                _ => return Err(format_error("lr_schedulers is not a list")),
            },
            None => Vec::new(),
        };
        let taken = [optimizer_key.split('[').next().unwrap_or(optimizer_key)]
            .into_iter()
            .chain(model_key)
            .chain(["lr_scheduler", "scheduler", "lr_schedulers"]);
        let taken: Vec<&str> = taken.collect();
        let metadata = file
            .keys()
            .into_iter()
            .filter(|k| !taken.contains(&k.as_str()))
            .filter_map(|k| file.json(&k).ok().map(|v| (k, v)))
            .collect();
        Ok(TrainingCheckpoint {
            model,
            optimizer: file.state_dict(optimizer_key)?,
            schedulers,
            metadata,
        })
    }
}

fn scheduler_state(value: Value, key: &str) -> Result<SchedulerState> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(format_error(format!(
            "{key}: a scheduler state that is not a dict"
        ))),
    }
}

/// Replaces `path` with what `write` puts in a new file, atomically: the
/// data goes to a temporary file in the same directory, is synced to disk,
/// and is renamed over `path`. If `write` (or anything else) fails, the
/// temporary file is removed and `path` is untouched.
///
/// - **Symlinks are followed**: when `path` is a symbolic link, the file it
///   points to is replaced and the link stays a link. A link to nothing is
///   an error.
/// - **Permissions are kept**: the new file gets the old one's mode (a
///   checkpoint made private stays private); a new path gets the usual
///   `0666` less the umask.
/// - **Temporary files** are named `.<file>.tmp-<random>`, created
///   exclusively, and locked while written. After a successful save, such
///   files of the same target left by a save that was killed (no longer
///   locked) are removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let target = resolve_links(path).map_err(|e| io_error(path, e))?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io_error(path, std::io::Error::other("not a file path")))?;
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let existing = std::fs::metadata(&target).ok().map(|m| m.permissions());
    let result = (|| {
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // As File::create: 0666, less the process's umask at creation.
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder.tempfile_in(&dir)?;
        // Held until the file is renamed or removed: a cleaner sees it is alive.
        tmp.as_file().lock()?;
        if let Some(permissions) = existing {
            tmp.as_file().set_permissions(permissions)?;
        }
        write(tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&target).map_err(|e| e.error)?;
        // Make the rename itself durable where the platform allows it.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| io_error(path, e))?;
    remove_stale_temporaries(&dir, &prefix);
    Ok(())
}

/// `path`, or the file its chain of symbolic links ends at.
fn resolve_links(path: &Path) -> std::io::Result<std::path::PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("a symbolic link whose target cannot be reached: {e}"),
            )
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Removes the temporary files `prefix*` in `dir` that no save holds locked:
/// those of a save that was killed. Best effort: a file that cannot be
/// opened, locked or removed is left.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Ok(file) = File::options().read(true).open(entry.path()) else {
            continue;
        };
        if file.try_lock().is_ok() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferroptim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_write_failing_halfway_leaves_the_old_file_and_no_temporary() {
        let dir = scratch_dir("atomic");
        let path = dir.join("ckpt.safetensors");
        std::fs::write(&path, b"the previous checkpoint").unwrap();
        let err = write_atomic(&path, |f| {
            f.write_all(b"half of the new")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous checkpoint");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file was not removed");
        write_atomic(&path, |f| f.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_save_keeps_the_targets_mode_and_follows_its_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_dir("mode");
        let real = dir.join("real.safetensors");
        std::fs::write(&real, b"old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("latest.safetensors");
        std::os::unix::fs::symlink("real.safetensors", &link).unwrap();
        write_atomic(&link, |f| f.write_all(b"new")).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the checkpoint became {mode:o}");
        // A link to nothing is an error, and creates nothing.
        let dangling = dir.join("dangling.safetensors");
        std::os::unix::fs::symlink("missing/nothing.safetensors", &dangling).unwrap();
        let err = write_atomic(&dangling, |f| f.write_all(b"x")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A new file gets the usual mode: not the temporary file's 0600.
        let fresh = dir.join("fresh.safetensors");
        write_atomic(&fresh, |f| f.write_all(b"x")).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporaries_of_a_killed_save_are_removed_and_names_never_collide() {
        let dir = scratch_dir("stale");
        let path = dir.join("ckpt.safetensors");
        // What a save killed mid-write (or an older ferroptim) left: PID-style names.
        for stale in [".ckpt.safetensors.tmp-1-0", ".ckpt.safetensors.tmp-1-1"] {
            std::fs::write(dir.join(stale), vec![0u8; 1024]).unwrap();
        }
        // A save in progress holds its file locked: it must survive.
        let live = dir.join(".ckpt.safetensors.tmp-live");
        let held = File::create(&live).unwrap();
        held.lock().unwrap();
        let other = dir.join(".other.safetensors.tmp-1-0");
        std::fs::write(&other, b"another target's").unwrap();
        write_atomic(&path, |f| f.write_all(b"new")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".ckpt.safetensors.tmp-live",
                ".other.safetensors.tmp-1-0",
                "ckpt.safetensors"
            ]
        );
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_kind_of_state_value_round_trips_bit_for_bit() {
        let sd = StateDict {
            state: BTreeMap::from([(
                3,
                ParamStateDict::from([
                    ("step".into(), StateValue::Tensor(Tensor::scalar(7.0f32))),
                    ("func_evals".into(), StateValue::Int(12)),
                    ("t".into(), StateValue::Float(0.1 + 0.2)),
                    (
                        "m".into(),
                        StateValue::Tensor(
                            Tensor::from_vec(vec![f64::NAN, -0.0, 1e-310], &[3]).unwrap(),
                        ),
                    ),
                    (
                        "old_dirs".into(),
                        StateValue::TensorList(vec![
                            Tensor::from_vec(vec![1.5f32, 2.5], &[2])
                                .unwrap();
                            2
                        ]),
                    ),
                ]),
            )]),
            param_groups: vec![Map::from_iter([
                ("lr".to_string(), Value::from(1e-3)),
                ("params".to_string(), Value::from(vec![3])),
            ])],
        };
        let back = StateDict::from_safetensors(&sd.to_safetensors().unwrap()).unwrap();
        assert_eq!(back.to_json().unwrap(), sd.to_json().unwrap());
        let bits = |s: &StateDict| match &s.state[&3]["m"] {
            StateValue::Tensor(t) => t
                .as_slice::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            _ => unreachable!(),
        };
        assert_eq!(bits(&back), bits(&sd));
    }

    #[test]
    fn files_that_are_not_our_checkpoints_are_typed_errors() {
        assert!(StateDict::from_safetensors(b"").is_err());
        assert!(StateDict::from_safetensors(&[0xff; 64]).is_err());
        let plain = safetensors::tensor::serialize(
            [(
                "w",
                TensorView::new(StDtype::F32, vec![1], &[0, 0, 128, 63]).unwrap(),
            )],
            None,
        )
        .unwrap();
        let err = StateDict::from_safetensors(&plain).unwrap_err();
        assert!(err.to_string().contains("no metadata"), "{err}");
        assert!(matches!(
            StateDict::load("/nonexistent/ferroptim.safetensors"),
            Err(Error::Io { .. })
        ));
    }
}
