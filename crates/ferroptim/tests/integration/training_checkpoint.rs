//! Whole training checkpoints: torch's nested `torch.save({'model', 'optimizer',
//! 'lr_scheduler', 'epoch', ...})` and Lightning's layout read by key, and
//! ferroptim's one-file `TrainingCheckpoint` (which torch loads back through
//! tools/ferroptim_checkpoint.py; see tools/torch_reference/checkpoints.py training).

use std::path::PathBuf;

use ferroptim::checkpoint::TrainingCheckpoint;
use ferroptim::lr_scheduler::{
    CosineAnnealingLR, CosineAnnealingLRConfig, LinearLR, LinearLRConfig, LrScheduler, SequentialLR,
};
use ferroptim::optim::{AdamW, AdamWConfig};
use ferroptim::{GroupSpec, Optimizer, Param, StateDict, Tensor, TorchCheckpoint};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_pt")
        .join(name)
}

fn record() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("training.json")).unwrap()).unwrap()
}

fn tensor(v: &Value) -> Tensor {
    serde_json::from_value(v.clone()).unwrap()
}

/// The run of checkpoints.py's `training_run`, rebuilt at its mid point:
/// AdamW over the recorded parameters in the two named groups, and
/// LinearLR warmup then cosine.
fn training_run(record: &Value) -> (AdamW, SequentialLR, Vec<Param>) {
    let params: Vec<Param> = record["mid_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Param::new(tensor(t)))
        .collect();
    let names = record["param_names"].as_array().unwrap();
    let mut at = 0;
    let groups: Vec<GroupSpec> = names
        .iter()
        .map(|group| {
            let group = group.as_array().unwrap();
            let named: Vec<(String, Param)> = group
                .iter()
                .map(|n| {
                    at += 1;
                    (n.as_str().unwrap().to_string(), params[at - 1].clone())
                })
                .collect();
            GroupSpec::named(named)
        })
        .collect();
    let groups = vec![
        groups[0].clone(),
        groups[1].clone().set("weight_decay", 0.0),
    ];
    let config = AdamWConfig {
        lr: 0.01,
        ..Default::default()
    };
    let mut opt = AdamW::new(groups, config).unwrap();
    let warmup = LinearLR::new(
        &mut opt,
        LinearLRConfig {
            start_factor: 0.25,
            total_iters: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let cosine = CosineAnnealingLR::new(&mut opt, CosineAnnealingLRConfig::new(6)).unwrap();
    let sched =
        SequentialLR::new(&mut opt, vec![Box::new(warmup), Box::new(cosine)], vec![2]).unwrap();
    (opt, sched, params)
}

/// Steps on as torch did after the checkpoint: parameters within 1e-6 of
/// torch's (relative to the tensor's scale) and the learning rates equal.
fn continue_as_torch(record: &Value, opt: &mut AdamW, sched: &mut SequentialLR, params: &[Param]) {
    for (s, step) in record["steps"].as_array().unwrap().iter().enumerate() {
        for (p, g) in params.iter().zip(step["grads"].as_array().unwrap()) {
            p.set_grad(tensor(g)).unwrap();
        }
        opt.step().unwrap();
        sched.step(opt).unwrap();
        for (i, (p, want)) in params
            .iter()
            .zip(step["params"].as_array().unwrap())
            .enumerate()
        {
            let (got, want) = (p.value().to_f64_vec(), tensor(want).to_f64_vec());
            let scale = want.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    ((a - b) / scale).abs() <= 1e-6,
                    "step {s}, param {i}: {a} vs torch {b}"
                );
            }
        }
        for (g, want) in step["lr"].as_array().unwrap().iter().enumerate() {
            let (got, want) = (opt.lr(g).unwrap(), want.as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-15 * want.abs(),
                "step {s}, group {g}: lr {got} vs {want}"
            );
        }
    }
}

#[test]
fn a_nested_torch_checkpoint_is_read_by_key() {
    let record = record();
    let file = TorchCheckpoint::load(fixture("training.pt")).unwrap();
    assert_eq!(
        file.keys(),
        [
            "model",
            "optimizer",
            "lr_scheduler",
            "epoch",
            "args",
            "halves"
        ]
    );
    // The model's state_dict (an OrderedDict with _metadata), an int64
    // buffer among the floats.
    let model = file.tensors("model").unwrap();
    let want = record["model"].as_object().unwrap();
    let mut names: Vec<&str> = model.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, want.keys().map(String::as_str).collect::<Vec<_>>());
    for (name, t) in &model {
        assert_eq!(t.to_f64_vec(), tensor(&want[name]).to_f64_vec(), "{name}");
    }
    // bfloat16, float16 and int32 tensors, exactly.
    for (key, values) in record["halves"].as_object().unwrap() {
        let t = &file.tensors("halves").unwrap();
        let (_, t) = t.iter().find(|(n, _)| n == key).unwrap();
        let want: Vec<f64> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(t.to_f64_vec(), want, "{key}");
    }
    assert_eq!(file.json("epoch").unwrap(), 3);
    // An object this reader does not build is kept opaque: the rest reads, asking for it fails.
    let err = file.json("args").unwrap_err().to_string();
    assert!(err.contains("argparse.Namespace"), "{err}");
    // The whole file is not an optimizer state_dict: the error lists what it holds.
    let err = StateDict::load_torch(fixture("training.pt"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model, optimizer, lr_scheduler, epoch, args, halves")
            && err.contains("load_torch_key"),
        "{err}"
    );
    let err = file.state_dict("optimiser").unwrap_err().to_string();
    assert!(
        err.contains("no key \"optimiser\"") && err.contains("lr_scheduler"),
        "{err}"
    );
}

#[test]
fn the_optimizer_and_scheduler_of_a_torch_checkpoint_resume_as_torch_did() {
    let record = record();
    let sd = StateDict::load_torch_key(fixture("training.pt"), "optimizer").unwrap();
    let file = TorchCheckpoint::load(fixture("training.pt")).unwrap();
    let Value::Object(sched_state) = file.json("lr_scheduler").unwrap() else {
        panic!("lr_scheduler is not a dict")
    };
    let (mut opt, mut sched, params) = training_run(&record);
    opt.load_state_dict(&sd).unwrap();
    sched.load_state_dict(&sched_state).unwrap();
    for (g, want) in record["mid_lr"].as_array().unwrap().iter().enumerate() {
        assert_eq!(opt.lr(g), want.as_f64());
    }
    continue_as_torch(&record, &mut opt, &mut sched, &params);
}

#[test]
fn lightning_and_torch_layouts_give_one_training_checkpoint() {
    let torch =
        TrainingCheckpoint::from_torch(&TorchCheckpoint::load(fixture("training.pt")).unwrap())
            .unwrap();
    let lightning =
        TrainingCheckpoint::from_torch(&TorchCheckpoint::load(fixture("lightning.pt")).unwrap())
            .unwrap();
    assert_eq!(torch.model, lightning.model);
    assert_eq!(torch.optimizer, lightning.optimizer);
    assert_eq!(torch.schedulers, lightning.schedulers);
    assert_eq!(torch.schedulers.len(), 1);
    // Plain values come along; the opaque object and the tensors do not.
    assert_eq!(torch.metadata.keys().collect::<Vec<_>>(), ["epoch"]);
    assert_eq!(lightning.metadata["epoch"], 3);
    assert_eq!(lightning.metadata["global_step"], 3);
    let err =
        TrainingCheckpoint::from_torch(&TorchCheckpoint::load(fixture("adam-named.pt")).unwrap());
    assert!(err.unwrap_err().to_string().contains("no optimizer state"));
}

/// ferroptim resumes torch's run, then writes its own one-file checkpoint;
/// read back it is the same, and it resumes as torch did. With
/// `FERROPTIM_WRITE_FIXTURES=1` it is written to
/// `tests/fixtures/ferroptim_ckpt/training.safetensors`, which
/// tools/torch_reference/checkpoints.py loads into torch and continues.
#[test]
fn a_training_checkpoint_resumes_in_torch_as_torch_did() {
    let record = record();
    let torch =
        TrainingCheckpoint::from_torch(&TorchCheckpoint::load(fixture("training.pt")).unwrap())
            .unwrap();
    let (mut opt, mut sched, _) = training_run(&record);
    opt.load_state_dict(&torch.optimizer).unwrap();
    sched.load_state_dict(&torch.schedulers[0]).unwrap();
    let ckpt = TrainingCheckpoint::new(&opt)
        .with_model(torch.model.clone())
        .with_scheduler(&sched)
        .with("epoch", 3);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ferroptim_ckpt/training.safetensors");
    if std::env::var_os("FERROPTIM_WRITE_FIXTURES").is_some() {
        ckpt.save(&path).unwrap();
    }
    let saved = TrainingCheckpoint::load(&path).unwrap();
    assert_eq!(saved, ckpt);
    // A fresh optimizer and scheduler from the file continue as torch did.
    let (mut opt, mut sched, params) = training_run(&record);
    opt.load_state_dict(&saved.optimizer).unwrap();
    sched.load_state_dict(&saved.schedulers[0]).unwrap();
    continue_as_torch(&record, &mut opt, &mut sched, &params);
    // Corrupt or foreign bytes are a typed error.
    let bytes = ckpt.to_safetensors().unwrap();
    assert!(TrainingCheckpoint::from_safetensors(&bytes[..bytes.len() / 2]).is_err());
    assert!(
        TrainingCheckpoint::from_safetensors(&opt.state_dict().to_safetensors().unwrap())
            .unwrap_err()
            .to_string()
            .contains("ferroptim.training.v1")
    );
}
