//! Reading optimizer checkpoints written by `torch.save(optimizer.state_dict(), path)`.
//!
//! Such a file is a zip archive (entries stored, not compressed) holding
//! `<name>/data.pkl`, a pickle of the state_dict, and `<name>/data/<key>`,
//! the raw little-endian bytes of each tensor storage. The pickle is read by
//! a small machine that knows exactly what state_dicts hold: dicts, lists,
//! tuples, numbers, strings, `None`, booleans, and tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` from float32 or float64 storages. Any
//! other object is a typed error, never code execution: this reader calls
//! nothing the file names. LBFGS's `al` (scratch that every step
//! recomputes) is dropped.
//!
//! ```no_run
//! use ferroptim::{optim, Optimizer, Param, StateDict};
//! let mut opt = optim::build("adam", "{}", [Param::zeros::<f32>(&[10])])?;
//! opt.load_state_dict(&StateDict::load_torch("opt.pt")?)?;
//! # Ok::<(), ferroptim::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::state::{ParamStateDict, StateDict, StateValue};
use crate::tensor::{Tensor, TensorData};

/// Nesting deeper than this is refused (a state_dict is 4 levels deep).
const MAX_DEPTH: usize = 32;
/// Tensors with more elements than this are refused (a corrupt size, not a real checkpoint).
const MAX_ELEMENTS: usize = 1 << 34;
/// What one JSON value of a param group is counted as, beyond its text.
const NODE_BYTES: u64 = 16;

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

fn bad(reason: impl Into<String>) -> Error {
    Error::state("torch checkpoint", reason)
}

/// The objects a state_dict pickle builds. Containers refer to other
/// objects by index into the machine's arena, so that a memoised container
/// filled later is seen filled, as in Python.
#[derive(Clone, Debug)]
enum Obj {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(String, String),
    Storage {
        f64: bool,
        key: String,
        numel: usize,
    },
    Tensor(Tensor),
}

struct Machine<'a> {
    code: &'a [u8],
    at: usize,
    arena: Vec<Obj>,
    stack: Vec<usize>,
    memo: HashMap<u32, usize>,
    storage: &'a mut dyn FnMut(&str) -> Result<Vec<u8>>,
    /// Storages read so far, by key: each is read from the archive once.
    storages: HashMap<String, Vec<u8>>,
    /// Bytes built so far, and the most allowed.
    spent: std::cell::Cell<u64>,
    limit: u64,
}

impl<'a> Machine<'a> {
    /// Counts `bytes` more against the budget, before they are allocated.
    fn charge(&self, bytes: u64, what: &str) -> Result<()> {
        let spent = self.spent.get().saturating_add(bytes);
        if spent > self.limit {
            return Err(bad(format!(
                "{what} would take the state_dict past {} bytes, the budget of this read \
                 (TorchLoadLimits; a checkpoint builds about its own size)",
                self.limit
            )));
        }
        self.spent.set(spent);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.code.len());
        let end = end.ok_or_else(|| bad("the pickle ends in the middle of an instruction"))?;
        let s = &self.code[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn push(&mut self, obj: Obj) {
        self.arena.push(obj);
        self.stack.push(self.arena.len() - 1);
    }

    fn pop(&mut self) -> Result<usize> {
        self.stack
            .pop()
            .ok_or_else(|| bad("the pickle pops an empty stack"))
    }

    fn top(&self) -> Result<usize> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| bad("the pickle reads an empty stack"))
    }

    /// The objects since the last mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>> {
        let mark = self
            .stack
            .iter()
            .rposition(|&i| matches!(self.arena[i], Obj::Mark))
            .ok_or_else(|| bad("the pickle closes a mark it never opened"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.code[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("unterminated GLOBAL"))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| bad("GLOBAL is not UTF-8"))?;
        self.at += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<()> {
        let s =
            String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("a string is not UTF-8"))?;
        self.push(Obj::Str(s));
        Ok(())
    }

    fn add_items(&mut self, items: Vec<usize>) -> Result<()> {
        let target = self.top()?;
        match &mut self.arena[target] {
            Obj::List(list) => list.extend(items),
            Obj::Dict(dict) => {
                if !items.len().is_multiple_of(2) {
                    return Err(bad("a dict gets a key without a value"));
                }
                dict.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
            }
            _ => {
                return Err(bad(
                    "the pickle adds items to something that is not a list or dict",
                ))
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<usize> {
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    self.byte()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'}' => self.push(Obj::Dict(Vec::new())),
                b']' => self.push(Obj::List(Vec::new())),
                b')' => self.push(Obj::Tuple(Vec::new())),
                b'(' => self.push(Obj::Mark),
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'K' => {
                    let v = self.byte()?;
                    self.push(Obj::Int(i64::from(v)));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.push(Obj::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Obj::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    if n > 8 {
                        return Err(bad("an integer wider than 64 bits"));
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Obj::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut buf = [0; 8];
                    buf.copy_from_slice(b);
                    self.push(Obj::Float(f64::from_be_bytes(buf)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    self.text(n)?;
                }
                0x8c => {
                    let n = usize::from(self.byte()?);
                    self.text(n)?;
                }
                b'q' => {
                    let k = u32::from(self.byte()?);
                    let top = self.top()?;
                    self.memo.insert(k, top);
                }
                b'r' => {
                    let k = self.u32()?;
                    let top = self.top()?;
                    self.memo.insert(k, top);
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    let top = self.top()?;
                    self.memo.insert(k, top);
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        u32::from(self.byte()?)
                    } else {
                        self.u32()?
                    };
                    let i = *self
                        .memo
                        .get(&k)
                        .ok_or_else(|| bad(format!("memo {k} was never stored")))?;
                    self.stack.push(i);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(bad("a tuple of more items than the stack holds"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Obj::Tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.add_items(vec![v])?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.add_items(vec![k, v])?;
                }
                b'e' | b'u' => {
                    let items = self.pop_mark()?;
                    self.add_items(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global(module, name));
                }
                0x93 => {
                    // STACK_GLOBAL (protocol 4+): module and name from the stack.
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.arena[module], &self.arena[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let global = Obj::Global(m.clone(), n.clone());
                            self.push(global);
                        }
                        _ => return Err(bad("STACK_GLOBAL of something that is not two strings")),
                    }
                }
                0x8d => {
                    // BINUNICODE8
                    let b = self.take(8)?;
                    let n = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
                    let n = usize::try_from(n).map_err(|_| bad("a string longer than memory"))?;
                    self.text(n)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.storage_of(pid)?;
                    self.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let obj = self.reduce(callable, args)?;
                    self.push(obj);
                }
                b'b' => {
                    // BUILD on an empty OrderedDict (tensor hooks): only an empty state is accepted.
                    let state = self.pop()?;
                    match &self.arena[state] {
                        Obj::None => {}
                        Obj::Dict(d) if d.is_empty() => {}
                        _ => return Err(bad("BUILD with a state: not a state_dict object")),
                    }
                }
                b'.' => return self.pop(),
                other => {
                    return Err(bad(format!(
                        "pickle opcode 0x{other:02x} is not one a state_dict uses"
                    )))
                }
            }
        }
    }

    fn items(&self, i: usize) -> Option<&[usize]> {
        match &self.arena[i] {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    fn int(&self, i: usize) -> Option<i64> {
        match self.arena[i] {
            Obj::Int(v) => Some(v),
            _ => None,
        }
    }

    /// torch's persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
    fn storage_of(&self, pid: usize) -> Result<Obj> {
        let items = self
            .items(pid)
            .filter(|v| v.len() == 5)
            .ok_or_else(|| bad("a persistent id that is not a storage"))?;
        let kind = match &self.arena[items[1]] {
            Obj::Global(m, n) if m == "torch" => n.as_str(),
            _ => return Err(bad("a storage without a torch storage type")),
        };
        let f64 = match kind {
            "FloatStorage" => false,
            "DoubleStorage" => true,
            other => {
                return Err(bad(format!(
                    "{other} tensors: ferroptim keeps float32 and float64 state"
                )))
            }
        };
        let key = match &self.arena[items[2]] {
            Obj::Str(s) => s.clone(),
            _ => return Err(bad("a storage key that is not a string")),
        };
        let numel = self
            .int(items[4])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad("a storage size that is not a sane count"))?;
        Ok(Obj::Storage { f64, key, numel })
    }

    fn reduce(&mut self, callable: usize, args: usize) -> Result<Obj> {
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
            _ => Err(bad(format!(
                "{module}.{name}: not an object a state_dict holds"
            ))),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: gathers the view into a contiguous tensor.
    fn rebuild_tensor(&mut self, args: &[usize]) -> Result<Obj> {
        let (f64, key, numel) = match &self.arena[args[0]] {
            Obj::Storage { f64, key, numel } => (*f64, key.clone(), *numel),
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
        let width = if f64 { 8 } else { 4 };
        self.charge(
            count as u64 * width as u64,
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
        let data = if f64 {
            TensorData::F64(
                positions
                    .by_ref()
                    .map(|p| p.map(|p| f64::from_le_bytes(le_bytes(bytes, p))))
                    .collect::<Result<_>>()?,
            )
        } else {
            TensorData::F32(
                positions
                    .by_ref()
                    .map(|p| p.map(|p| f32::from_le_bytes(le_bytes(bytes, p))))
                    .collect::<Result<_>>()?,
            )
        };
        Ok(Obj::Tensor(Tensor::new(data, &size)?))
    }

    fn json(&self, i: usize, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(bad("nesting deeper than a state_dict's"));
        }
        self.charge(NODE_BYTES, "a param group value")?;
        Ok(match &self.arena[i] {
            Obj::None => Value::Null,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(v) => Value::from(*v),
            // A lr of NaN saves in torch; it loads here too.
            Obj::Float(x) => crate::json::number(*x),
            Obj::Str(s) => {
                self.charge(s.len() as u64, "a string")?;
                Value::String(s.clone())
            }
            Obj::List(v) | Obj::Tuple(v) => Value::Array(
                v.iter()
                    .map(|&j| self.json(j, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            Obj::Dict(kv) => {
                let mut map = Map::new();
                for &(k, v) in kv {
                    map.insert(self.key(k)?, self.json(v, depth + 1)?);
                }
                Value::Object(map)
            }
            Obj::Tensor(_) => {
                return Err(bad(
                    "a tensor-valued hyperparameter (ferroptim's are numbers)",
                ))
            }
            _ => return Err(bad("an object a param group does not hold")),
        })
    }

    fn key(&self, i: usize) -> Result<String> {
        match &self.arena[i] {
            Obj::Str(s) => Ok(s.clone()),
            Obj::Int(v) => Ok(v.to_string()),
            _ => Err(bad("a dict key that is not a string or an integer")),
        }
    }

    fn dict(&self, i: usize, what: &str) -> Result<&[(usize, usize)]> {
        match &self.arena[i] {
            Obj::Dict(kv) => Ok(kv),
            _ => Err(bad(format!("{what} is not a dict"))),
        }
    }

    /// A copy of tensor `t` for the state_dict, counted against the budget.
    fn tensor_copy(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        let width = match t.dtype() {
            crate::tensor::Dtype::F32 => 4,
            crate::tensor::Dtype::F64 => 8,
        };
        self.charge(t.numel() as u64 * width + NODE_BYTES, what)?;
        Ok(t.clone())
    }

    fn state_value(&self, i: usize, what: &str) -> Result<StateValue> {
        self.charge(NODE_BYTES, what)?;
        Ok(match &self.arena[i] {
            Obj::Tensor(t) => StateValue::Tensor(self.tensor_copy(t, what)?),
            Obj::Int(v) => StateValue::Int(*v),
            Obj::Float(x) => StateValue::Float(*x),
            Obj::List(v) | Obj::Tuple(v) => StateValue::TensorList(
                v.iter()
                    .map(|&j| match &self.arena[j] {
                        Obj::Tensor(t) => self.tensor_copy(t, what),
                        _ => Err(bad(format!(
                            "{what}: a list of something other than tensors"
                        ))),
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(bad(format!(
                    "{what}: not a tensor, number or list of tensors"
                )))
            }
        })
    }

    fn state_dict(&self, root: usize) -> Result<StateDict> {
        let mut state = BTreeMap::new();
        let mut param_groups = None;
        for &(k, v) in self.dict(root, "the checkpoint")? {
            match self.key(k)?.as_str() {
                "state" => {
                    for &(p, entries) in self.dict(v, "state")? {
                        let param = self
                            .int(p)
                            .and_then(|p| usize::try_from(p).ok())
                            .ok_or_else(|| bad("a state key that is not a parameter index"))?;
                        let mut out = ParamStateDict::new();
                        for &(key, value) in self.dict(entries, "a parameter's state")? {
                            let key = self.key(key)?;
                            if key == "al" {
                                // LBFGS's scratch (a list of None and 0-d tensors), recomputed
                                // by every step: torch keeps it only to reuse the memory.
                                continue;
                            }
                            let what = format!("state[{param}].{key}");
                            out.insert(key, self.state_value(value, &what)?);
                        }
                        state.insert(param, out);
                    }
                }
                "param_groups" => {
                    let groups = self.json(v, 0)?;
                    let groups = match groups {
                        Value::Array(gs) => gs
                            .into_iter()
                            .map(|g| match g {
                                Value::Object(m) => Ok(m),
                                _ => Err(bad("a param group that is not a dict")),
                            })
                            .collect::<Result<Vec<_>>>()?,
                        _ => return Err(bad("param_groups is not a list")),
                    };
                    param_groups = Some(groups);
                }
                other => {
                    return Err(bad(format!(
                        "unexpected top-level key {other:?}; expected state and param_groups"
                    )))
                }
            }
        }
        Ok(StateDict {
            state,
            param_groups: param_groups.ok_or_else(|| bad("no param_groups"))?,
        })
    }
}

/// The `N` little-endian bytes of element `p` of `bytes` (in bounds: every
/// position was checked against the storage's length).
fn le_bytes<const N: usize>(bytes: &[u8], p: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[p * N..p * N + N]);
    out
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
        let mut machine = Machine {
            code: &code,
            at: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
            storage: &mut storage,
            storages: HashMap::new(),
            spent: std::cell::Cell::new(0),
            limit: limits.max_bytes,
        };
        let root = machine.run()?;
        machine.state_dict(root)
    }
}
