//! torch's optimizer hooks and named parameters (torch 2.6+), through the
//! public API: calling order with `prepend`, removal by handle, a pre-hook
//! that vetoes a step and changes nothing, hooks that rewrite state_dicts;
//! `param_names` written, checked on load, and read from a torch file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferroptim::optim::{Adam, AdamConfig, Lbfgs, LbfgsConfig, Sgd, SgdConfig};
use ferroptim::{Error, GroupSpec, Optimizer, Param, StateDict, Tensor};
use serde_json::json as j;

fn param(values: &[f32]) -> Param {
    Param::from_vec(values.to_vec(), &[values.len()]).unwrap()
}

fn grad(p: &Param, values: &[f32]) {
    p.set_grad(Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap())
        .unwrap();
}

type Log = Arc<Mutex<Vec<String>>>;

fn log_to(log: &Log, what: &str) -> impl Fn(&(dyn Optimizer + 'static)) + Send + Sync + 'static {
    let (log, what) = (log.clone(), what.to_string());
    move |_| log.lock().unwrap().push(what.clone())
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn step_hooks_run_in_torch_order_and_go_when_removed() {
    let p = param(&[1.0, 2.0]);
    let mut opt = Sgd::new([p.clone()], SgdConfig::default()).unwrap();
    let log = Log::default();
    let a = opt.register_step_pre_hook(
        {
            let f = log_to(&log, "pre a");
            move |o| {
                f(o);
                Ok(())
            }
        },
        false,
    );
    let _b = opt.register_step_pre_hook(
        {
            let f = log_to(&log, "pre b");
            move |o| {
                f(o);
                Ok(())
            }
        },
        false,
    );
    let _c = opt.register_step_pre_hook(
        {
            let f = log_to(&log, "pre c (prepended)");
            move |o| {
                f(o);
                Ok(())
            }
        },
        true,
    );
    let _post = opt.register_step_post_hook(log_to(&log, "post"), false);
    let _first = opt.register_step_post_hook(log_to(&log, "post first"), true);
    grad(&p, &[1.0, 1.0]);
    opt.step().unwrap();
    assert_eq!(
        taken(&log),
        ["pre c (prepended)", "pre a", "pre b", "post first", "post"]
    );
    a.remove();
    opt.step().unwrap();
    assert_eq!(
        taken(&log),
        ["pre c (prepended)", "pre b", "post first", "post"]
    );
    // A step skipped for a NaN gradient is not a step: no hooks, as with torch's GradScaler.
    grad(&p, &[f32::NAN, 1.0]);
    opt.step_if_finite().unwrap();
    assert!(taken(&log).is_empty());
}

#[test]
fn a_pre_hook_can_veto_a_step_and_nothing_changes() {
    let p = param(&[1.0, -1.0]);
    let mut opt = Adam::new([p.clone()], AdamConfig::default()).unwrap();
    grad(&p, &[0.5, 0.5]);
    opt.step().unwrap();
    let before = (opt.state_dict(), p.value());
    let log = Log::default();
    let veto = opt.register_step_pre_hook(
        |o| Err(Error::Vetoed(format!("lr {:?} is frozen", o.lr(0)))),
        false,
    );
    let _post = opt.register_step_post_hook(log_to(&log, "post"), false);
    let err = opt.step().unwrap_err();
    assert!(
        matches!(&err, Error::Vetoed(m) if m.contains("0.001")),
        "{err}"
    );
    assert_eq!((opt.state_dict(), p.value()), before);
    let mut closure = || Ok(1.0);
    assert!(opt.step_with_closure(&mut closure).is_err());
    assert_eq!((opt.state_dict(), p.value()), before);
    assert!(taken(&log).is_empty(), "no post hook after a vetoed step");
    veto.remove();
    opt.step().unwrap();
    assert_ne!(p.value(), before.1);
    assert_eq!(taken(&log), ["post"]);
}

#[test]
fn state_dict_hooks_see_and_rewrite_the_dict() {
    let p = param(&[1.0]);
    let mut opt = Sgd::new(
        [p.clone()],
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        },
    )
    .unwrap();
    grad(&p, &[1.0]);
    opt.step().unwrap();
    let log = Log::default();
    let _pre = opt.register_state_dict_pre_hook(log_to(&log, "pre"), false);
    let tag = opt.register_state_dict_post_hook(
        |_, sd| {
            sd.param_groups[0].insert("saved_by".into(), j!("a hook"));
        },
        false,
    );
    let sd = opt.state_dict();
    assert_eq!(sd.param_groups[0]["saved_by"], j!("a hook"));
    assert_eq!(taken(&log), ["pre"]);
    tag.remove();
    assert!(!opt.state_dict().param_groups[0].contains_key("saved_by"));
    assert_eq!(taken(&log), ["pre"], "the pre-hook stays");

    // A load pre-hook rewrites the dict being loaded (here, its lr); the
    // caller's dict is left as it was.
    let rewrite = opt.register_load_state_dict_pre_hook(
        |_, sd| {
            sd.param_groups[0].insert("lr".into(), j!(0.5));
            Ok(())
        },
        false,
    );
    let _loaded = opt.register_load_state_dict_post_hook(log_to(&log, "loaded"), false);
    opt.load_state_dict(&sd).unwrap();
    assert_eq!(opt.lr(0), Some(0.5));
    assert_eq!(sd.param_groups[0]["lr"], j!(0.1));
    assert_eq!(
        sd.param_groups[0]["saved_by"],
        j!("a hook"),
        "kept as an extra key"
    );
    assert_eq!(taken(&log), ["loaded"]);
    rewrite.remove();

    // A load pre-hook's error refuses the load: nothing changes, no post hook.
    let _refuse =
        opt.register_load_state_dict_pre_hook(|_, _| Err(Error::Vetoed("read-only".into())), true);
    let before = opt.state_dict();
    let mut other = before.clone();
    other.param_groups[0].insert("lr".into(), j!(0.25));
    assert!(matches!(opt.load_state_dict(&other), Err(Error::Vetoed(_))));
    assert_eq!(opt.state_dict(), before);
    assert_eq!(
        taken(&log),
        ["pre", "pre"],
        "state_dict's hook only: no load post hook"
    );
}

#[test]
fn hooks_work_through_dyn_optimizer_and_lbfgs_and_clones_keep_their_own() {
    let p = param(&[3.0]);
    let mut opt: Box<dyn Optimizer> =
        Box::new(Lbfgs::new([p.clone()], LbfgsConfig::default()).unwrap());
    let log = Log::default();
    let handle = opt
        .hooks()
        .register_step_post_hook(log_to(&log, "lbfgs post"), false);
    let q = p.clone();
    let mut closure = move || {
        let x = q.to_vec::<f32>()?[0];
        q.set_grad(Tensor::from_vec(vec![2.0 * x], &[1])?)?;
        Ok(f64::from(x * x))
    };
    opt.step_with_closure(&mut closure).unwrap();
    assert_eq!(taken(&log), ["lbfgs post"]);
    handle.remove();
    opt.step_with_closure(&mut closure).unwrap();
    assert!(taken(&log).is_empty());

    let sgd = Sgd::new([param(&[1.0])], SgdConfig::default()).unwrap();
    let h = sgd.register_step_pre_hook(
        {
            let f = log_to(&log, "pre");
            move |o| {
                f(o);
                Ok(())
            }
        },
        false,
    );
    let mut copy = sgd.clone();
    h.remove(); // removed from the original only
    copy.step().unwrap();
    assert_eq!(taken(&log), ["pre"]);
}

fn names(sd: &StateDict) -> Vec<serde_json::Value> {
    sd.param_groups
        .iter()
        .map(|g| g.get("param_names").cloned().unwrap_or_default())
        .collect()
}

#[test]
fn named_parameters_are_saved_and_checked_on_load() {
    let (w, b, v) = (param(&[1.0, 2.0]), param(&[0.5]), param(&[3.0]));
    let build = |first: &str| {
        Adam::new(
            [
                GroupSpec::named([(first, w.clone()), ("fc.bias", b.clone())]),
                GroupSpec::named([("head.weight", v.clone())]).set("lr", 0.1),
            ],
            AdamConfig::default(),
        )
        .unwrap()
    };
    let mut opt = build("fc.weight");
    for (p, g) in [(&w, &[1.0f32, 1.0][..]), (&b, &[1.0]), (&v, &[2.0])] {
        grad(p, g);
    }
    opt.step().unwrap();
    let sd = opt.state_dict();
    assert_eq!(
        names(&sd),
        [j!(["fc.weight", "fc.bias"]), j!(["head.weight"])]
    );
    assert_eq!(
        opt.param_groups()[1].names(),
        Some(&["head.weight".to_string()][..])
    );
    // Through JSON and back.
    let sd = StateDict::from_json(&sd.to_json().unwrap()).unwrap();
    build("fc.weight").load_state_dict(&sd).unwrap();

    // The same shapes under another name: refused, naming both; nothing changes.
    let mut other = build("fc.kernel");
    let before = other.state_dict();
    let err = other.load_state_dict(&sd).unwrap_err();
    assert!(
        matches!(&err, Error::ParamNameMismatch { group: 0, index: 0, expected, found }
            if expected == "fc.kernel" && found == "fc.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("\"fc.kernel\"") && err.to_string().contains("\"fc.weight\""));
    assert_eq!(other.state_dict(), before);

    // An optimizer without names takes the saved ones, as torch's does.
    let mut plain = Adam::new(
        [
            GroupSpec::new([w.clone(), b.clone()]),
            GroupSpec::new([v.clone()]),
        ],
        AdamConfig::default(),
    )
    .unwrap();
    assert_eq!(names(&plain.state_dict()), [j!(null), j!(null)]);
    plain.load_state_dict(&sd).unwrap();
    assert_eq!(names(&plain.state_dict()), names(&sd));

    // A saved dict without names loads into a named optimizer, which keeps its names.
    let mut unnamed = sd.clone();
    unnamed.param_groups.iter_mut().for_each(|g| {
        g.remove("param_names");
    });
    let mut named = build("fc.weight");
    named.load_state_dict(&unnamed).unwrap();
    assert_eq!(names(&named.state_dict()), names(&sd));

    // `param_names` is not a key schedulers may set.
    assert!(named.set_group_extra(0, "param_names", j!(["x"])).is_err());
    // Names that do not fit the group are a corrupt file.
    let mut short = sd.clone();
    short.param_groups[0].insert("param_names".into(), j!(["fc.weight"]));
    assert!(matches!(
        named.load_state_dict(&short),
        Err(Error::InvalidStateDict { .. })
    ));
}

#[test]
fn groups_are_all_named_or_none_as_in_torch() {
    let named = GroupSpec::named([("a", param(&[1.0]))]);
    let plain = GroupSpec::new([param(&[2.0])]);
    let err = Sgd::new([named.clone(), plain.clone()], SgdConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MixedParamNames {
                group: 1,
                expected: "with names",
                found: "without names"
            }
        ),
        "{err}"
    );
    let mut opt = Sgd::new([plain], SgdConfig::default()).unwrap();
    assert!(matches!(
        opt.add_param_group(named),
        Err(Error::MixedParamNames { group: 1, .. })
    ));
    assert_eq!(opt.num_param_groups(), 1);
    // A plain list of (name, parameter) pairs is one named group.
    let opt = Sgd::new(
        vec![("w", param(&[1.0])), ("b", param(&[2.0]))],
        SgdConfig::default(),
    )
    .unwrap();
    assert_eq!(names(&opt.state_dict()), [j!(["w", "b"])]);
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch_pt")
        .join(name)
}

fn tensor(v: &serde_json::Value) -> Tensor {
    serde_json::from_value(v.clone()).unwrap()
}

/// torch saved Adam over `named_parameters()` (tools/torch_reference/checkpoints.py named):
/// the names load, a named optimizer resumes it as torch did, and one
/// whose names differ is refused.
#[test]
fn a_torch_checkpoint_with_param_names_loads_and_resumes() {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("adam-named.json")).unwrap())
            .unwrap();
    let sd = StateDict::load_torch(fixture("adam-named.pt")).unwrap();
    let want_names = record["param_names"].as_array().unwrap();
    assert_eq!(names(&sd), *want_names);
    let params: Vec<Param> = record["mid_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Param::new(tensor(t)))
        .collect();
    let group = |g: usize, range: std::ops::Range<usize>| {
        let names = want_names[g].as_array().unwrap();
        GroupSpec::named(
            range
                .zip(names)
                .map(|(i, n)| (n.as_str().unwrap(), params[i].clone())),
        )
    };
    let config = AdamConfig {
        lr: 0.01,
        betas: (0.8, 0.95),
        ..Default::default()
    };
    let mut opt = Adam::new(
        [group(0, 0..2), group(1, 2..4).set("lr", 0.02)],
        config.clone(),
    )
    .unwrap();
    opt.load_state_dict(&sd).unwrap();
    for step in record["steps"].as_array().unwrap() {
        for (p, g) in params.iter().zip(step["grads"].as_array().unwrap()) {
            p.set_grad(tensor(g)).unwrap();
        }
        opt.step().unwrap();
        for (i, (p, want)) in params
            .iter()
            .zip(step["params"].as_array().unwrap())
            .enumerate()
        {
            let (got, want) = (p.to_vec::<f32>().unwrap(), tensor(want).to_f64_vec());
            let scale = want.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    ((f64::from(*a) - b) / scale).abs() <= 1e-6,
                    "param {i}: {a} vs torch {b}"
                );
            }
        }
    }

    // Names decide: the same parameters listed in another order, each
    // under its own name, load name by name (what a VarMap's hash order needs).
    let mut in_order = Adam::new([group(0, 0..2), group(1, 2..4)], config.clone()).unwrap();
    in_order.load_state_dict(&sd).unwrap();
    let reordered = GroupSpec::named([
        ("0.bias", params[1].clone()),
        ("0.weight", params[0].clone()),
    ]);
    let mut by_name = Adam::new([reordered, group(1, 2..4)], config.clone()).unwrap();
    by_name.load_state_dict(&sd).unwrap();
    for p in &params {
        assert!(by_name.state(p).is_some());
        assert_eq!(by_name.state(p), in_order.state(p));
    }
    assert_eq!(names(&by_name.state_dict())[0], j!(["0.bias", "0.weight"]));

    // A name the file does not have is refused, naming both; nothing changes.
    let renamed = GroupSpec::named([
        ("0.weight", params[0].clone()),
        ("0.kernel", params[1].clone()),
    ]);
    let mut wrong = Adam::new([renamed, group(1, 2..4)], config).unwrap();
    let before = wrong.state_dict();
    let err = wrong.load_state_dict(&sd).unwrap_err();
    assert!(
        matches!(&err, Error::ParamNameMismatch { group: 0, index: 1, expected, found }
            if expected == "0.kernel" && found == "0.bias"),
        "{err}"
    );
    assert_eq!(wrong.state_dict(), before);
}

/// Names decide only when they name one parameter each: a saved group
/// that repeats a name is refused, not matched at random.
#[test]
fn a_saved_group_with_a_repeated_name_is_refused() {
    let (a, b) = (Param::zeros::<f32>(&[2]), Param::zeros::<f32>(&[2]));
    let mut opt = Adam::new(
        GroupSpec::named([("a", a.clone()), ("b", b.clone())]),
        AdamConfig::default(),
    )
    .unwrap();
    let mut sd = opt.state_dict();
    sd.param_groups[0].insert("param_names".into(), j!(["b", "b"]));
    let err = opt.load_state_dict(&sd).unwrap_err();
    assert!(
        matches!(err, Error::ParamNameMismatch { group: 0, .. }),
        "{err}"
    );
    // The same names swapped: matched name by name.
    sd.param_groups[0].insert("param_names".into(), j!(["b", "a"]));
    opt.load_state_dict(&sd).unwrap();
}
