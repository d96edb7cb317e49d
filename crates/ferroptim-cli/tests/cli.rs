//! The `ferroptim` binary end to end.

use std::process::Command;

fn ferroptim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferroptim"))
}

/// Runs `cmd`, checks that it succeeded, and returns its standard output.
fn stdout_of_success(cmd: &mut Command) -> String {
    let run = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

#[test]
fn trajectories_draws_one_png_per_function_and_prints_the_table() {
    let out = std::env::temp_dir().join(format!("ferroptim-cli-{}", std::process::id()));
    let stdout = stdout_of_success(
        ferroptim()
            .args(["trajectories", "--steps", "30", "--out"])
            .arg(&out),
    );
    for name in ["rosenbrock", "beale", "saddle", "ill_conditioned"] {
        let png = std::fs::read(out.join(format!("trajectories_{name}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name}"
        );
    }
    // Every optimizer ran on every function.
    for name in ferroptim::optim::NAMES {
        assert_eq!(
            stdout.matches(&format!("\n  {name} ")).count(),
            4,
            "{name}:\n{stdout}"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_flags_are_one_clear_line_and_a_failure_exit() {
    let run = ferroptim()
        .args(["trajectories", "--optimizers", "adam,adamz", "--out"])
        .arg(std::env::temp_dir().join("ferroptim-cli-unused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: unknown optimizer \"adamz\""),
        "{stderr}"
    );
    for args in [
        &["trajectories", "--steps", "many"][..],
        &["demo", "--no-such-flag"],
        &["demo", "--lr", "-1"],
        &["no-such-command"],
    ] {
        let run = ferroptim().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        if args.contains(&"-1") {
            assert!(stderr.contains("Invalid learning rate: -1.0"), "{stderr}");
        }
    }
}

#[test]
fn bench_prints_a_table_with_the_floor() {
    let stdout = stdout_of_success(ferroptim().args([
        "bench",
        "--shrink",
        "10000",
        "--reps",
        "1",
        "--optimizers",
        "adam,sgd,muon",
        "--threads",
        "1,2",
    ]));
    assert!(
        stdout.starts_with("| optimizer | dtype | size | threads | median ms/step"),
        "{stdout}"
    );
    // Three sizes at two thread counts each; Adam and SGD have a floor, Muon (not element-wise) none.
    assert_eq!(
        stdout.matches("\n| adam | float32 | ").count(),
        6,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("\n| muon | float32 | ").count(),
        6,
        "{stdout}"
    );
    assert_eq!(stdout.matches(" | 2 | ").count(), 9, "{stdout}");
    let adam = stdout
        .lines()
        .find(|l| l.starts_with("| adam | float32 | 1 x 1k"))
        .unwrap();
    let ratio: f64 = adam.rsplit('|').nth(1).unwrap().trim().parse().unwrap();
    assert!(ratio > 0.0, "{adam}");
}

/// `--dtype bf16` benches 16-bit steps against a floor of 16-bit arrays;
/// an optimizer without a 16-bit path is refused with its reason.
#[test]
fn bench_runs_16_bit_steps_and_names_what_cannot_run_them() {
    let stdout = stdout_of_success(ferroptim().args([
        "bench",
        "--shrink",
        "10000",
        "--reps",
        "1",
        "--optimizers",
        "adamw,sgd",
        "--threads",
        "1",
        "--dtype",
        "bf16",
    ]));
    assert_eq!(
        stdout.matches("\n| adamw | bfloat16 | ").count(),
        3,
        "{stdout}"
    );
    let out = ferroptim()
        .args([
            "bench",
            "--shrink",
            "10000",
            "--reps",
            "1",
            "--optimizers",
            "lamb",
            "--dtype",
            "f16",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("float16, which Lamb does not take"),
        "{stderr}"
    );
}

#[test]
fn demo_trains_on_the_digits_prints_the_table_and_draws_the_curves() {
    let out = std::env::temp_dir().join(format!("ferroptim-demo-{}", std::process::id()));
    let stdout = stdout_of_success(
        ferroptim()
            .args([
                "demo",
                "--optimizers",
                "adam,sgd,lbfgs",
                "--epochs",
                "8",
                "--out",
            ])
            .arg(&out),
    );
    let png = std::fs::read(out.join("loss_curves.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let svg = std::fs::read_to_string(out.join("loss_curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("adam"));
    // One table row per optimizer: | name | lr | loss | accuracy% | seconds | steps/s |
    let accuracies: Vec<f64> = ["adam", "sgd", "lbfgs"]
        .iter()
        .map(|name| {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            cells[4].trim_end_matches('%').parse().unwrap()
        })
        .collect();
    let best = accuracies.iter().copied().fold(0.0, f64::max);
    assert!(best > 90.0, "best test accuracy {best}%:\n{stdout}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// `demo --dtype bf16`: bfloat16 weights written back by round to nearest
/// lag behind float32 (a final training loss 1.5x or more), and each of the
/// three modes keeps up: test accuracy within half a point of float32.
#[test]
fn demo_in_bf16_shows_round_to_nearest_lagging_and_each_mode_keeping_up() {
    let out = std::env::temp_dir().join(format!("ferroptim-bf16-{}", std::process::id()));
    let stdout = stdout_of_success(
        ferroptim()
            .args(["demo", "--dtype", "bf16", "--out"])
            .arg(&out),
    );
    let png = std::fs::read(out.join("bf16_modes.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    // | optimizer | weights | lr | loss | accuracy% | seconds | steps/s |
    let row = |name: &str, weights: &str| -> (f64, f64) {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name} | {weights} |")))
            .unwrap_or_else(|| panic!("no row for {name} {weights}:\n{stdout}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        (
            cells[4].parse().unwrap(),
            cells[5].trim_end_matches('%').parse().unwrap(),
        )
    };
    for name in ["sgd", "adam"] {
        let (f32_loss, f32_accuracy) = row(name, "float32");
        let (nearest_loss, _) = row(name, "bf16, round to nearest");
        assert!(nearest_loss > 1.5 * f32_loss, "{name}:\n{stdout}");
        for mode in ["master weights", "stochastic rounding", "kahan summation"] {
            let (loss, accuracy) = row(name, &format!("bf16 + {mode}"));
            assert!(accuracy >= f32_accuracy - 0.5, "{name} {mode}:\n{stdout}");
            assert!(nearest_loss > 1.5 * loss, "{name} {mode}:\n{stdout}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn demo_refuses_bad_input_in_one_line() {
    let missing = std::env::temp_dir().join("ferroptim-no-such-mnist-dir");
    for args in [
        vec![
            "demo",
            "--optimizers",
            "adam",
            "--data",
            missing.to_str().unwrap(),
        ],
        vec!["demo", "--optimizers", "adamz"],
        vec!["demo", "--optimizers", "adam", "--lr", "sgd=0.1"],
        vec!["demo", "--optimizers", "adam", "--lr", "fast"],
        vec!["demo", "--epochs", "0"],
        vec!["demo", "--dtype", "f16"],
        vec!["demo", "--optimizers", "adam", "--lr=-1"],
        // A negative number after a space is a value, refused as a learning rate.
        vec!["demo", "--optimizers", "adam", "--lr", "-1"],
        vec![
            "demo",
            "--optimizers",
            "adam",
            "--hidden",
            "18446744073709551615",
        ],
        vec!["demo", "--optimizers", "adam", "--hidden", "100000"],
    ] {
        let run = ferroptim().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_every_optimizer_and_bench_says_what_it_cannot_time() {
    for command in ["demo", "bench", "trajectories"] {
        let help = stdout_of_success(ferroptim().args([command, "--help"]));
        for name in ferroptim::optim::NAMES {
            assert!(
                help.contains(&format!(" {name},")) || help.contains(&format!(" {name}]")),
                "{command}: {name}"
            );
        }
    }
    for (name, why) in [
        ("lbfgs", "calls a closure"),
        ("sparseadam", "sparse gradients"),
    ] {
        let run = ferroptim()
            .args(["bench", "--optimizers", name])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{name}");
        assert!(
            stderr.contains(&format!("{name} is not benched")) && stderr.contains(why),
            "{stderr}"
        );
    }
}

#[test]
fn demo_list_names_every_optimizer_with_its_reference() {
    let out = stdout_of_success(ferroptim().args(["demo", "--list"]));
    let entries: Vec<_> = ferroptim::optim::registry::entries().collect();
    assert_eq!(out.lines().count(), entries.len());
    assert_eq!(entries.len(), ferroptim::optim::NAMES.len() + 1); // and Lookahead
    for entry in entries {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(entry.name))
            .unwrap();
        assert!(line.ends_with(entry.reference), "{line}");
    }
    assert!(out.contains("lion-pytorch 0.2.5"));
}
