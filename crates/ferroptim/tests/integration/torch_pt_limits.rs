//! Reading torch checkpoints: every pickle protocol torch writes, NaN
//! hyperparameters, and small hostile files that would make the reader
//! build gigabytes (a zero-stride view, memoised references, one tensor
//! referenced many times) refused by its budget with a typed error.

use std::io::Write;
use std::path::PathBuf;

use ferroptim::{json, optim, GroupSpec, Param, StateDict, TorchLoadLimits};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_pt")
        .join(name)
}

#[test]
fn pickle_protocols_4_and_5_read_as_protocol_2() {
    let want = StateDict::load_torch(fixture("adam-float32.pt")).unwrap();
    for protocol in [4, 5] {
        let path = fixture(&format!("adam-float32-protocol{protocol}.pt"));
        let got =
            StateDict::load_torch(&path).unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
        assert_eq!(got, want, "protocol {protocol}");
    }
}

#[test]
fn a_nan_lr_saved_by_torch_loads_as_nan() {
    let sd = StateDict::load_torch(fixture("adam-float32-nan-lr.pt")).unwrap();
    let lr = json::as_f64(&sd.param_groups[0]["lr"]).unwrap();
    assert!(lr.is_nan());
    // Parameters of the shapes and groups the state_dict has.
    let groups: Vec<GroupSpec> = sd
        .param_groups
        .iter()
        .map(|g| {
            let ids = g["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as usize);
            GroupSpec::new(ids.map(|i| match &sd.state[&i]["exp_avg"] {
                ferroptim::StateValue::Tensor(t) => Param::zeros::<f32>(t.shape()),
                _ => panic!("no exp_avg"),
            }))
        })
        .collect();
    let mut opt = optim::build("adam", "{}", groups).unwrap();
    opt.load_state_dict(&sd).unwrap();
    assert!(opt.lr(0).unwrap().is_nan() && opt.lr(1).unwrap().is_nan());
}

/// A torch.save archive holding `pickle` and these storages.
fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    out.start_file("archive/data.pkl", options).unwrap();
    out.write_all(pickle).unwrap();
    for (key, bytes) in storages {
        out.start_file(format!("archive/data/{key}"), options)
            .unwrap();
        out.write_all(bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// Pickle opcodes, as torch's protocol 2 writes them.
fn text(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn int(v: i32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// `_rebuild_tensor_v2(storage '0' of `numel` floats, 0, size, stride)`.
fn tensor(numel: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.push(b'(');
    p.extend(text("storage"));
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    p.extend(text("0"));
    p.extend(text("cpu"));
    p.extend(int(numel));
    p.extend_from_slice(b"tQ");
    p.extend(int(0));
    for dims in [size, stride] {
        p.push(b'(');
        dims.iter().for_each(|&d| p.extend(int(d)));
        p.push(b't');
    }
    p.extend_from_slice(b"tR");
    p
}

fn refused_by_the_budget(bytes: &[u8]) {
    let err = StateDict::from_torch_bytes(bytes).unwrap_err().to_string();
    assert!(err.contains("budget"), "{err}");
}

#[test]
fn a_zero_stride_view_of_2_to_the_34_elements_is_refused() {
    // 1.3 KB that would be a 64 GiB tensor.
    let mut p = b"\x80\x02".to_vec();
    p.extend(tensor(1, &[131072, 131072], &[0, 0]));
    p.push(b'.');
    refused_by_the_budget(&archive(&p, &[("0", vec![0; 4])]));
}

#[test]
fn memoised_references_cannot_multiply_a_small_file() {
    // param_groups = L12, where L(k) holds 8 references to L(k-1): 8^12 values.
    let depth = 12u8;
    let mut p = b"\x80\x02}".to_vec();
    p.extend(text("param_groups"));
    for level in (1..=depth).rev() {
        p.extend_from_slice(&[b']', b'q', level, b'(']);
    }
    p.extend_from_slice(b"]q\x00(");
    p.extend(std::iter::repeat_n(*b"K\x01", 8).flatten());
    p.push(b'e');
    for level in 1..=depth {
        for _ in 0..7 {
            p.extend_from_slice(&[b'h', level - 1]);
        }
        p.push(b'e');
    }
    p.extend_from_slice(b"s.");
    refused_by_the_budget(&archive(&p, &[]));
}

/// `{"state": {i: {"exp_avg": t} for i in range(refs)}, "param_groups": []}`,
/// `t` one memoised tensor of `numel` floats, as an archive.
fn one_tensor_many_times(refs: i32, numel: i32) -> Vec<u8> {
    let mut p = b"\x80\x02}".to_vec();
    p.extend(text("state"));
    p.extend_from_slice(b"}(");
    for i in 0..refs {
        p.extend(int(i));
        p.push(b'}');
        p.extend(text("exp_avg"));
        if i == 0 {
            p.extend(tensor(numel, &[numel], &[1]));
            p.extend_from_slice(b"q\x00");
        } else {
            p.extend_from_slice(b"h\x00");
        }
        p.push(b's');
    }
    p.extend_from_slice(b"us");
    p.extend(text("param_groups"));
    p.extend_from_slice(b"]s.");
    archive(&p, &[("0", vec![0; 4 * numel as usize])])
}

#[test]
fn one_tensor_referenced_a_thousand_times_is_refused() {
    // 1000 copies of one 4 MB tensor: 4 GB from a 4 MB file.
    let n = 1 << 20;
    refused_by_the_budget(&one_tensor_many_times(1000, n));
    // Three fit the default budget; a budget below them refuses them.
    let small = one_tensor_many_times(3, n);
    let sd = StateDict::from_torch_bytes(&small).unwrap();
    assert_eq!(sd.state.len(), 3);
    let tight = TorchLoadLimits { max_bytes: 8 << 20 };
    let err = StateDict::from_torch_bytes_with(&small, tight)
        .unwrap_err()
        .to_string();
    assert!(err.contains("8388608"), "{err}");
}

#[test]
fn one_storage_named_as_two_types_is_an_error_not_a_panic() {
    // Storage "0" (4 bytes) rebuilt as a float tensor, then as a double one.
    let mut p = b"\x80\x02(".to_vec();
    p.extend(tensor(1, &[1], &[1]));
    let double = tensor(1, &[1], &[1]);
    let at = double
        .windows(12)
        .position(|w| w == b"FloatStorage")
        .unwrap();
    p.extend_from_slice(&double[..at]);
    p.extend_from_slice(b"DoubleStorage");
    p.extend_from_slice(&double[at + 12..]);
    p.extend_from_slice(b"l.");
    let err = StateDict::from_torch_bytes(&archive(&p, &[("0", vec![0; 4])])).unwrap_err();
    assert!(err.to_string().contains("storage 0 holds 4 bytes"), "{err}");
}

/// A Lookahead file (`{"base_optimizer": ..., "lookahead_state": ...}`)
/// whose base_optimizer is the file's own dict, a memoised reference to
/// itself, is an error, not a recursion without end.
#[test]
fn a_lookahead_file_that_contains_itself_is_an_error() {
    let mut p = b"\x80\x02}q\x00(".to_vec();
    p.extend(text("base_optimizer"));
    p.extend_from_slice(b"h\x00");
    p.extend(text("lookahead_state"));
    p.extend_from_slice(b"}u.");
    let err = StateDict::from_torch_bytes(&archive(&p, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no optimizer state_dict here"), "{err}");
}

/// Slow weights keyed by a `(group, index)` the base optimizer does not
/// have, or by something else, are errors that say so.
#[test]
fn lookahead_state_for_a_parameter_the_base_lacks_is_an_error() {
    let file = |key: &[u8]| {
        // {"base_optimizer": {"state": {}, "param_groups": [{"params": [0]}]},
        //  "lookahead_state": {key: {"slow_params": tensor}}}
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(text("base_optimizer"));
        p.extend_from_slice(b"}(");
        p.extend(text("state"));
        p.push(b'}');
        p.extend(text("param_groups"));
        p.extend_from_slice(b"](}(");
        p.extend(text("params"));
        p.extend_from_slice(b"](");
        p.extend(int(0));
        p.extend_from_slice(b"eueu");
        p.extend(text("lookahead_state"));
        p.extend_from_slice(b"}(");
        p.extend_from_slice(key);
        p.extend_from_slice(b"}(");
        p.extend(text("slow_params"));
        p.extend(tensor(1, &[1], &[1]));
        p.extend_from_slice(b"uuu.");
        archive(&p, &[("0", vec![0; 4])])
    };
    let pair = |g: i32, i: i32| [int(g), int(i), vec![0x86]].concat();
    let sd = StateDict::from_torch_bytes(&file(&pair(0, 0))).unwrap();
    assert!(sd.state[&0].contains_key("slow_params"));
    let err = StateDict::from_torch_bytes(&file(&pair(0, 3)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lookahead_state[(0, 3)]: base_optimizer has no parameter 3 in param group 0"),
        "{err}"
    );
    let err = StateDict::from_torch_bytes(&file(&text("0,0")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a (group, index) pair"), "{err}");
}
