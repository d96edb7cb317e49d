#!/usr/bin/env python3
"""Reference schedules for ferroptim's lr_scheduler, produced by torch itself.

    .venv/bin/python tools/torch_reference/schedulers.py

writes `crates/ferroptim/tests/fixtures/lr_scheduler.json`: one case per
scheduler configuration (every scheduler of torch.optim.lr_scheduler and
swa_utils.SWALR, several
configurations each, chained and sequential combinations), each run for STEPS
steps on a two-group optimizer, recording after construction and after every
step each group's `lr` and momentum (`momentum`, or `betas[0]` for Adam) and
`get_last_lr()`. At MID the scheduler's and the optimizer's state_dicts are
saved, a fresh optimizer and scheduler are built, the state_dicts loaded
(optimizer first, as torch's docs do it), and the run goes on from there:
`resumed` holds those values, and `state_dict_mid` torch's scheduler state.

Lambdas are named (LAMBDAS); the Rust tests define the same functions.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import torch
from torch.optim import lr_scheduler as ls
from torch.optim import swa_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import value_json  # noqa: E402  (the fixtures' one JSON writer)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "ferroptim" / "tests" / "fixtures" / "lr_scheduler.json"
STEPS = 250
MID = 120

LAMBDAS = {
    "exp95": lambda e: 0.95 ** e,
    "inverse": lambda e: 1.0 / (1.0 + 0.05 * e),
    "const97": lambda e: 0.97,
    "halve_every_10": lambda e: 0.5 if e % 10 == 0 else 1.0,
    "decay_by_cycle": lambda x: 1.0 / (1.0 + 0.1 * x),
}

OPTIMIZERS = {
    # Two groups each; SGD has momentum to cycle, Adam has betas.
    "sgd": lambda params: torch.optim.SGD(
        [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}], lr=0.1, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(
        [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}], lr=0.01),
}


def S(name, **kwargs):
    return {"scheduler": name, "kwargs": kwargs}


CASES = [
    ("sgd", S("LambdaLR", lr_lambda="exp95")),
    ("adam", S("LambdaLR", lr_lambda=["exp95", "inverse"])),
    ("sgd", S("MultiplicativeLR", lr_lambda="const97")),
    ("adam", S("MultiplicativeLR", lr_lambda=["halve_every_10", "const97"])),
    ("sgd", S("StepLR", step_size=30, gamma=0.5)),
    ("adam", S("StepLR", step_size=7)),
    ("sgd", S("MultiStepLR", milestones=[30, 80, 80, 150], gamma=0.5)),
    ("sgd", S("ConstantLR")),
    ("adam", S("ConstantLR", factor=0.5, total_iters=40)),
    ("sgd", S("LinearLR")),
    ("adam", S("LinearLR", start_factor=0.25, end_factor=0.9, total_iters=100)),
    ("sgd", S("ExponentialLR", gamma=0.99)),
    ("sgd", S("PolynomialLR")),
    ("adam", S("PolynomialLR", total_iters=100, power=2.0)),
    ("sgd", S("CosineAnnealingLR", T_max=50, eta_min=0.001)),
    ("adam", S("CosineAnnealingLR", T_max=100)),
    ("sgd", S("ReduceLROnPlateau", patience=5)),
    ("adam", S("ReduceLROnPlateau", mode="max", threshold_mode="abs", threshold=0.01, cooldown=3,
               factor=0.5, patience=2, min_lr=[0.001, 0.0005])),
    ("sgd", S("ReduceLROnPlateau", mode="min", threshold_mode="abs", threshold=0.001, factor=0.9,
              patience=0, min_lr=0.01, eps=1e-3)),
    ("adam", S("ReduceLROnPlateau", mode="max", threshold=0.05, patience=3, cooldown=5)),
    ("sgd", S("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=20)),
    ("adam", S("CyclicLR", base_lr=[0.001, 0.002], max_lr=[0.01, 0.03], step_size_up=15, step_size_down=25,
               mode="triangular2", base_momentum=0.85, max_momentum=0.95)),
    ("sgd", S("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=10, mode="exp_range", gamma=0.99)),
    ("sgd", S("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=12, scale_fn="decay_by_cycle",
              scale_mode="iterations", cycle_momentum=False)),
    ("sgd", S("OneCycleLR", max_lr=0.5, total_steps=STEPS)),
    ("adam", S("OneCycleLR", max_lr=[0.01, 0.02], total_steps=STEPS + 10, anneal_strategy="linear",
               three_phase=True)),
    ("sgd", S("OneCycleLR", max_lr=0.3, epochs=26, steps_per_epoch=10, pct_start=0.25, div_factor=10.0,
              final_div_factor=100.0, cycle_momentum=False)),
    ("sgd", S("CosineAnnealingWarmRestarts", T_0=10, T_mult=2, eta_min=1e-4)),
    ("adam", S("CosineAnnealingWarmRestarts", T_0=25)),
    ("sgd", {"chained": [S("ExponentialLR", gamma=0.99), S("StepLR", step_size=40, gamma=0.5)]}),
    ("adam", {"chained": [S("ConstantLR", factor=0.5, total_iters=10), S("ExponentialLR", gamma=0.98),
                          S("CosineAnnealingLR", T_max=60, eta_min=0.0001)]}),
    ("sgd", {"sequential": [S("LinearLR", start_factor=0.1, total_iters=20), S("CosineAnnealingLR", T_max=200)],
             "milestones": [20]}),
    ("adam", {"sequential": [S("ConstantLR", factor=0.3, total_iters=10), S("ExponentialLR", gamma=0.99),
                             S("StepLR", step_size=30, gamma=0.5)], "milestones": [30, 100]}),
    ("sgd", {"sequential": [S("LinearLR", start_factor=0.5, total_iters=10),
                            S("CosineAnnealingWarmRestarts", T_0=20), S("MultiStepLR", milestones=[10, 20])],
             "milestones": [10, 130]}),
    ("sgd", S("SWALR", swa_lr=0.05, anneal_epochs=10)),
    ("adam", S("SWALR", swa_lr=[0.001, 0.005], anneal_epochs=5, anneal_strategy="linear")),
    ("sgd", S("SWALR", swa_lr=0.02, anneal_epochs=0)),
    # The SWA recipe: cosine annealing, then a constant SWA learning rate.
    ("sgd", {"sequential": [S("CosineAnnealingLR", T_max=100), S("SWALR", swa_lr=0.01, anneal_epochs=20)],
             "milestones": [100]}),
]


def metric(step: int) -> float:
    """A loss with plateaus and noise, for ReduceLROnPlateau."""
    return 1.0 / (1 + step // 17) + 0.002 * math.sin(step * 1.7) + (0.05 if step % 41 == 40 else 0.0)


def build(spec, opt):
    if "chained" in spec:
        return ls.ChainedScheduler([build(s, opt) for s in spec["chained"]], opt)
    if "sequential" in spec:
        return ls.SequentialLR(opt, [build(s, opt) for s in spec["sequential"]], spec["milestones"])
    kwargs = dict(spec["kwargs"])
    for key in ("lr_lambda", "scale_fn"):
        if key in kwargs:
            v = kwargs[key]
            kwargs[key] = [LAMBDAS[x] for x in v] if isinstance(v, list) else LAMBDAS[v]
    cls = getattr(ls, spec["scheduler"], None) or getattr(swa_utils, spec["scheduler"])
    return cls(opt, **kwargs)


def snapshot(opt, sched) -> dict:
    momenta = []
    for g in opt.param_groups:
        momenta.append(g["betas"][0] if "betas" in g else g["momentum"])
    return {"lr": [g["lr"] for g in opt.param_groups], "momentum": momenta,
            "last_lr": [float(x) for x in sched.get_last_lr()]}


def step(sched, opt, i):
    opt.step()  # no gradients: only keeps torch from warning about the order
    if isinstance(sched, ls.ReduceLROnPlateau):
        sched.step(metric(i))
    else:
        sched.step()


def run(opt_name, spec) -> dict:
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    opt = OPTIMIZERS[opt_name](params)
    sched = build(spec, opt)
    values = [snapshot(opt, sched)]
    resumed, sd_mid = [], None
    for i in range(STEPS):
        step(sched, opt, i)
        values.append(snapshot(opt, sched))
        if i + 1 == MID:
            sd_mid = value_json(sched.state_dict())
            opt_sd = opt.state_dict()
            params2 = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
            opt2 = OPTIMIZERS[opt_name](params2)
            sched2 = build(spec, opt2)
            opt2.load_state_dict(opt_sd)
            sched2.load_state_dict(sched.state_dict())
    for i in range(MID, STEPS):
        step(sched2, opt2, i)
        resumed.append(snapshot(opt2, sched2))
    return {"optimizer": opt_name, "spec": spec, "values": values, "mid": MID,
            "state_dict_mid": sd_mid, "resumed": resumed}


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cases = [run(opt_name, spec) for opt_name, spec in CASES]
    data = {
        "generator": "tools/torch_reference/schedulers.py",
        "torch_version": torch.__version__,
        "steps": STEPS,
        "metrics": [metric(i) for i in range(STEPS)],
        "cases": cases,
    }
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(cases)} cases, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:])
