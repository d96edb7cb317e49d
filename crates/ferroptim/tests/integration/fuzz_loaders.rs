//! Fuzzing the checkpoint loaders: mutated and random inputs to the JSON and
//! safetensors readers and to `load_state_dict`, seeded from the torch
//! fixtures. None may panic; a failed load must leave the optimizer exactly
//! as it was. `FERROPTIM_FUZZ_CASES` sets the number of cases per target
//! (CI runs the default, 20,000 in all).

use crate::common::load;
use ferroptim::{Optimizer, StateDict};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::{Cell, RefCell};

fn cases(default: u32) -> u32 {
    std::env::var("FERROPTIM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Up to 8 byte edits (positions modulo the length) and an optional truncation.
fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<Option<usize>>(),
    )
}

fn mutate(seed: &[u8], (edits, cut): &(Vec<(usize, u8)>, Option<usize>)) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(at, b) in edits {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] = b;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (seed.len() + 1));
    }
    bytes
}

/// A fixture's optimizer, stepped to the middle, and its state_dict.
fn seed(name: &str) -> (Box<dyn Optimizer>, StateDict) {
    let fixture = load(name);
    let case = &fixture.cases[0];
    let (mut opt, params) = case.build(name, &case.initial_params);
    for i in 0..case.mid_step {
        case.step(i, opt.as_mut(), &params);
    }
    let sd = opt.state_dict();
    (opt, sd)
}

/// Loads `parsed` (if it parsed) and checks a failure changed nothing.
/// Loads `parsed` (if it parsed) and checks a failure changed nothing;
/// counts the inputs that parsed.
fn load_into(
    opt: &mut dyn Optimizer,
    parsed: ferroptim::Result<StateDict>,
    count: &Cell<usize>,
) -> Result<(), TestCaseError> {
    if let Ok(sd) = parsed {
        count.set(count.get() + 1);
        let before = opt.state_dict().to_json().unwrap();
        if opt.load_state_dict(&sd).is_err() {
            prop_assert_eq!(opt.state_dict().to_json().unwrap(), before);
        }
    }
    Ok(())
}

fn fuzz(
    name: &str,
    n: u32,
    encode: fn(&StateDict) -> Vec<u8>,
    decode: fn(&[u8]) -> ferroptim::Result<StateDict>,
) {
    let (opt, sd) = seed(name);
    let opt = RefCell::new(opt);
    let good = encode(&sd);
    let parsed = Cell::new(0);
    let config = Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config.clone())
        .run(&mutations(), |m| {
            let bytes = mutate(&good, &m);
            load_into(opt.borrow_mut().as_mut(), decode(&bytes), &parsed)
        })
        .unwrap();
    // Some mutants must get through the parser, or load_state_dict went unfuzzed.
    assert!(parsed.get() > 0, "{name}: no mutant parsed");
    TestRunner::new(config)
        .run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
            load_into(opt.borrow_mut().as_mut(), decode(&bytes), &parsed)
        })
        .unwrap();
    eprintln!("{name}: {} of {} inputs parsed", parsed.get(), 2 * n);
}

fn json(sd: &StateDict) -> Vec<u8> {
    sd.to_json().unwrap().into_bytes()
}

fn from_json(bytes: &[u8]) -> ferroptim::Result<StateDict> {
    StateDict::from_json(&String::from_utf8_lossy(bytes))
}

fn safetensors(sd: &StateDict) -> Vec<u8> {
    sd.to_safetensors().unwrap()
}

#[test]
fn the_json_loader_never_panics_and_failed_loads_change_nothing() {
    for name in ["adam", "lbfgs_free_sgd"] {
        let name = if name == "lbfgs_free_sgd" {
            "sgd"
        } else {
            name
        };
        fuzz(name, cases(5_000) / 2, json, from_json);
    }
}

#[test]
fn the_safetensors_loader_never_panics_and_failed_loads_change_nothing() {
    for name in ["adam", "adafactor"] {
        fuzz(
            name,
            cases(5_000) / 2,
            safetensors,
            StateDict::from_safetensors,
        );
    }
}

#[test]
fn huge_declared_sizes_are_refused_without_allocating() {
    // A safetensors header that claims an exabyte of data.
    let header = br#"{"state.0.m":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,4611686018427387904]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    assert!(StateDict::from_safetensors(&bytes).is_err());
    // A header length beyond the file.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(StateDict::from_safetensors(&bytes).is_err());
    // A JSON tensor whose shape overflows.
    let json = r#"{"state": {"0": {"m": {"dtype": "float32", "shape": [4294967296, 4294967296, 16], "data": []}}}, "param_groups": []}"#;
    assert!(StateDict::from_json(json).is_err());
}

/// The entries of a torch.save archive, with `data.pkl` replaced by `pickle`, as a new archive.
fn with_pickle(entries: &[(String, Vec<u8>)], pickle: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        out.start_file(name.as_str(), options).unwrap();
        let body = if name.ends_with("data.pkl") {
            pickle
        } else {
            bytes
        };
        out.write_all(body).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn the_torch_checkpoint_reader_never_panics_and_failed_loads_change_nothing() {
    // Protocol 2 (torch.save's default) and protocol 4 (STACK_GLOBAL, FRAME, MEMOIZE).
    for name in ["adam-float32.pt", "adam-float32-protocol4.pt"] {
        fuzz_torch_file(name);
    }
}

fn fuzz_torch_file(name: &str) {
    use std::io::Read;
    let (opt, _) = seed("adam");
    let opt = RefCell::new(opt);
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_pt")
        .join(name);
    let file = std::fs::read(path).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&file)).unwrap();
    let entries: Vec<(String, Vec<u8>)> = (0..zip.len())
        .map(|i| {
            let mut e = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (e.name().to_string(), bytes)
        })
        .collect();
    let pickle = entries
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap()
        .1
        .clone();
    // The rebuilt archive reads like the original.
    assert_eq!(
        StateDict::from_torch_bytes(&with_pickle(&entries, &pickle)).unwrap(),
        StateDict::from_torch_bytes(&file).unwrap()
    );
    let parsed = Cell::new(0);
    let config = Config {
        cases: cases(20_000) / 8,
        failure_persistence: None,
        ..Config::default()
    };
    // Mutated pickles inside a valid archive: the pickle machine itself.
    TestRunner::new(config.clone())
        .run(&mutations(), |m| {
            let bytes = with_pickle(&entries, &mutate(&pickle, &m));
            load_into(
                opt.borrow_mut().as_mut(),
                StateDict::from_torch_bytes(&bytes),
                &parsed,
            )
        })
        .unwrap();
    assert!(parsed.get() > 0, "{name}: no mutated pickle parsed");
    // Mutated archives.
    TestRunner::new(config)
        .run(&mutations(), |m| {
            load_into(
                opt.borrow_mut().as_mut(),
                StateDict::from_torch_bytes(&mutate(&file, &m)),
                &parsed,
            )
        })
        .unwrap();
}
