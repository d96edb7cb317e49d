//! The pickle machine: a stack, a memo and an arena of [`Obj`]s, run over
//! the opcodes a state_dict uses (named in [`op`]), one method per family.

use std::collections::HashMap;

use super::bad;
use crate::error::Result;
use crate::tensor::Tensor;

/// The pickle opcodes a torch checkpoint uses, under the names of Python's `pickle.py`.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    // Beyond a state_dict: what other objects in a training checkpoint use.
    pub const NEWOBJ: u8 = 0x81;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const LIST: u8 = b'l';
    pub const DICT: u8 = b'd';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
}

/// The objects a checkpoint's pickle builds. Containers refer to other
/// objects by index into the arena, so that a memoised container filled
/// later is seen filled, as in Python.
#[derive(Clone, Debug)]
pub(super) enum Obj {
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
        kind: StorageKind,
        key: String,
        numel: usize,
    },
    /// A tensor, and the storage type it was read from.
    Tensor(Tensor, StorageKind),
    /// Something this reader does not build (an `argparse.Namespace`, bytes,
    /// a numpy scalar...): kept as its type's name, so that the rest of the
    /// file still reads and only asking for it is an error.
    Opaque(String),
}

/// The element types of torch's storages, as their pickled class names say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StorageKind {
    F32,
    F64,
    BF16,
    F16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageKind {
    pub(super) fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageKind::F32,
            "DoubleStorage" => StorageKind::F64,
            "BFloat16Storage" => StorageKind::BF16,
            "HalfStorage" => StorageKind::F16,
            "LongStorage" => StorageKind::I64,
            "IntStorage" => StorageKind::I32,
            "ShortStorage" => StorageKind::I16,
            "CharStorage" => StorageKind::I8,
            "ByteStorage" => StorageKind::U8,
            "BoolStorage" => StorageKind::Bool,
            _ => return None,
        })
    }

    /// Bytes per element in the file.
    pub(super) fn width(self) -> usize {
        match self {
            StorageKind::F64 | StorageKind::I64 => 8,
            StorageKind::F32 | StorageKind::I32 => 4,
            StorageKind::BF16 | StorageKind::F16 | StorageKind::I16 => 2,
            StorageKind::I8 | StorageKind::U8 | StorageKind::Bool => 1,
        }
    }

    /// Whether ferroptim reads it as float64 (every value exact), not float32.
    pub(super) fn as_f64(self) -> bool {
        matches!(self, StorageKind::F64 | StorageKind::I64 | StorageKind::I32)
    }

    /// torch's name for the dtype.
    pub(super) fn torch_name(self) -> &'static str {
        match self {
            StorageKind::F32 => "float32",
            StorageKind::F64 => "float64",
            StorageKind::BF16 => "bfloat16",
            StorageKind::F16 => "float16",
            StorageKind::I64 => "int64",
            StorageKind::I32 => "int32",
            StorageKind::I16 => "int16",
            StorageKind::I8 => "int8",
            StorageKind::U8 => "uint8",
            StorageKind::Bool => "bool",
        }
    }
}

/// What the pickle built: the objects, and the budget they were built within.
pub(super) struct Arena {
    pub(super) objs: Vec<Obj>,
    /// Bytes built so far, and the most allowed.
    pub(super) spent: std::cell::Cell<u64>,
    pub(super) limit: u64,
}

impl Arena {
    /// Counts `bytes` more against the budget, before they are allocated.
    pub(super) fn charge(&self, bytes: u64, what: &str) -> Result<()> {
        let spent = self.spent.get().saturating_add(bytes);
        if spent > self.limit {
            return Err(bad(format!(
                "{what} would take the read past {} bytes, the budget of this read \
                 (TorchLoadLimits; a checkpoint builds about its own size)",
                self.limit
            )));
        }
        self.spent.set(spent);
        Ok(())
    }
}

impl std::ops::Index<usize> for Arena {
    type Output = Obj;
    fn index(&self, i: usize) -> &Obj {
        &self.objs[i]
    }
}

impl std::ops::IndexMut<usize> for Arena {
    fn index_mut(&mut self, i: usize) -> &mut Obj {
        &mut self.objs[i]
    }
}

pub(super) struct Machine<'a> {
    pub(super) code: &'a [u8],
    pub(super) at: usize,
    pub(super) arena: Arena,
    pub(super) stack: Vec<usize>,
    pub(super) memo: HashMap<u32, usize>,
    pub(super) storage: &'a mut dyn FnMut(&str) -> Result<Vec<u8>>,
    /// Storages read so far, by key: each is read from the archive once.
    pub(super) storages: HashMap<String, Vec<u8>>,
}

impl<'a> Machine<'a> {
    /// A machine over pickle `code`, reading storages with `storage`,
    /// building at most `limit` bytes.
    pub(super) fn new(
        code: &'a [u8],
        storage: &'a mut dyn FnMut(&str) -> Result<Vec<u8>>,
        limit: u64,
    ) -> Self {
        Machine {
            code,
            at: 0,
            arena: Arena {
                objs: Vec::new(),
                spent: std::cell::Cell::new(0),
                limit,
            },
            stack: Vec::new(),
            memo: HashMap::new(),
            storage,
            storages: HashMap::new(),
        }
    }

    /// Counts `bytes` more against the budget, before they are allocated.
    pub(super) fn charge(&self, bytes: u64, what: &str) -> Result<()> {
        self.arena.charge(bytes, what)
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
        self.arena.objs.push(obj);
        self.stack.push(self.arena.objs.len() - 1);
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

    /// Runs the pickle to its STOP; returns the object it built.
    pub(super) fn run(&mut self) -> Result<usize> {
        use op::*;
        loop {
            let code = self.byte()?;
            match code {
                STOP => return self.pop(),
                PROTO => {
                    self.byte()?;
                }
                FRAME => {
                    self.take(8)?;
                }
                MARK | EMPTY_DICT | EMPTY_LIST | EMPTY_TUPLE | NONE | NEWTRUE | NEWFALSE => {
                    self.constant(code)
                }
                BININT1 | BININT2 | BININT | LONG1 | BINFLOAT => self.number(code)?,
                BINUNICODE | SHORT_BINUNICODE | BINUNICODE8 => self.string(code)?,
                BINPUT | LONG_BINPUT | MEMOIZE | BINGET | LONG_BINGET => self.memo_op(code)?,
                TUPLE | TUPLE1 | TUPLE2 | TUPLE3 | APPEND | APPENDS | SETITEM | SETITEMS => {
                    self.container(code)?
                }
                GLOBAL | STACK_GLOBAL | BINPERSID | REDUCE | BUILD | NEWOBJ | NEWOBJ_EX => {
                    self.object(code)?
                }
                SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                    let n = match code {
                        SHORT_BINBYTES => usize::from(self.byte()?),
                        BINBYTES => self.u32()? as usize,
                        _ => {
                            let b = self.take(8)?;
                            let n = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
                            usize::try_from(n).map_err(|_| bad("bytes longer than memory"))?
                        }
                    };
                    // Skipped, not copied: no state reads raw bytes.
                    self.take(n)?;
                    self.push(Obj::Opaque("bytes".into()));
                }
                EMPTY_SET => self.push(Obj::List(Vec::new())),
                ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    match &mut self.arena[target] {
                        Obj::List(v) => v.extend(items),
                        _ => return Err(bad("ADDITEMS to something that is not a set")),
                    }
                }
                FROZENSET | LIST => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items));
                }
                DICT => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Dict(Vec::new()));
                    self.add_items(items)?;
                }
                POP => {
                    self.pop()?;
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                other => {
                    return Err(bad(format!(
                        "pickle opcode 0x{other:02x} is not one a state_dict uses"
                    )))
                }
            }
        }
    }

    /// MARK and the empty containers and constants.
    fn constant(&mut self, code: u8) {
        self.push(match code {
            op::MARK => Obj::Mark,
            op::EMPTY_DICT => Obj::Dict(Vec::new()),
            op::EMPTY_LIST => Obj::List(Vec::new()),
            op::EMPTY_TUPLE => Obj::Tuple(Vec::new()),
            op::NEWTRUE => Obj::Bool(true),
            op::NEWFALSE => Obj::Bool(false),
            _ => Obj::None,
        });
    }

    /// Integers of 1, 2, 4 and up to 8 bytes, and big-endian floats.
    fn number(&mut self, code: u8) -> Result<()> {
        let obj = match code {
            op::BININT1 => Obj::Int(i64::from(self.byte()?)),
            op::BININT2 => {
                let b = self.take(2)?;
                Obj::Int(i64::from(u16::from_le_bytes([b[0], b[1]])))
            }
            op::BININT => Obj::Int(i64::from(self.u32()? as i32)),
            op::LONG1 => {
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
                Obj::Int(i64::from_le_bytes(buf))
            }
            _ => {
                let b = self.take(8)?;
                Obj::Float(f64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            }
        };
        self.push(obj);
        Ok(())
    }

    /// UTF-8 strings with a 4-, 1- or 8-byte length.
    fn string(&mut self, code: u8) -> Result<()> {
        let n = match code {
            op::BINUNICODE => self.u32()? as usize,
            op::SHORT_BINUNICODE => usize::from(self.byte()?),
            _ => {
                let b = self.take(8)?;
                let n = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
                usize::try_from(n).map_err(|_| bad("a string longer than memory"))?
            }
        };
        self.text(n)
    }

    /// Storing the top of the stack in the memo, and fetching from it.
    fn memo_op(&mut self, code: u8) -> Result<()> {
        match code {
            op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                let k = match code {
                    op::BINPUT => u32::from(self.byte()?),
                    op::LONG_BINPUT => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let top = self.top()?;
                self.memo.insert(k, top);
            }
            _ => {
                let k = if code == op::BINGET {
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
        }
        Ok(())
    }

    /// Tuples from the stack, and items added to lists and dicts.
    fn container(&mut self, code: u8) -> Result<()> {
        match code {
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Obj::Tuple(items));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1 + 1);
                if self.stack.len() < n {
                    return Err(bad("a tuple of more items than the stack holds"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Obj::Tuple(items));
            }
            op::APPEND => {
                let v = self.pop()?;
                self.add_items(vec![v])?;
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.add_items(vec![k, v])?;
            }
            _ => {
                let items = self.pop_mark()?;
                self.add_items(items)?;
            }
        }
        Ok(())
    }

    /// Globals, persistent ids (storages), REDUCE and BUILD: torch's objects,
    /// built by [`rebuild`](super::rebuild) from a closed list.
    fn object(&mut self, code: u8) -> Result<()> {
        match code {
            op::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Obj::Global(module, name));
            }
            op::STACK_GLOBAL => {
                // Protocol 4+: module and name from the stack.
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
            op::BINPERSID => {
                let pid = self.pop()?;
                let storage = self.storage_of(pid)?;
                self.push(storage);
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let obj = self.reduce(callable, args)?;
                self.push(obj);
            }
            op::NEWOBJ | op::NEWOBJ_EX => {
                // cls.__new__(cls, *args): an instance of a class this reader does not build.
                if code == op::NEWOBJ_EX {
                    self.pop()?;
                }
                self.pop()?;
                let class = self.pop()?;
                let name = match &self.arena[class] {
                    Obj::Global(m, n) => format!("{m}.{n}"),
                    _ => "an object".to_string(),
                };
                self.push(Obj::Opaque(name));
            }
            _ => {
                // BUILD sets an object's attributes: a model state_dict's
                // OrderedDict gets its `_metadata` (not needed here), an
                // opaque object its fields (not kept). Nothing else has any.
                let state = self.pop()?;
                let target = self.top()?;
                match (&self.arena[target], &self.arena[state]) {
                    (Obj::Opaque(_), _) => {}
                    (_, Obj::None) => {}
                    (Obj::Dict(_), Obj::Dict(_)) => {}
                    (Obj::Tensor(..), Obj::Dict(d)) if d.is_empty() => {}
                    _ => return Err(bad("BUILD with a state on an object that has none")),
                }
            }
        }
        Ok(())
    }
}
