#!/usr/bin/env python3
"""torch.save'd optimizer checkpoints, for ferroptim's torch import.

    .venv/bin/python tools/torch_reference/checkpoints.py
    .venv/bin/python tools/torch_reference/checkpoints.py protocols   # only the protocol 4/5 and NaN-lr files
    .venv/bin/python tools/torch_reference/checkpoints.py named       # only the named-parameters files
    .venv/bin/python tools/torch_reference/checkpoints.py training    # only the full training checkpoints
    .venv/bin/python tools/torch_reference/checkpoints.py lion        # only these optimizers' files
    .venv/bin/python tools/torch_reference/checkpoints.py lookahead   # only Lookahead's, both ways

For every optimizer in generate.py's OPTIMIZERS, reruns the first
configuration of its fixture (float32 and float64, same seeds, so the run is
the committed fixture's case 0 and 1, which is checked) and saves
`torch.save(optimizer.state_dict(), ...)` after step MID_STEP to
`crates/ferroptim/tests/fixtures/torch_pt/<name>-<dtype>.pt`. The Rust test
loads each file and must continue the remaining steps as torch did (the
fixture's steps after MID_STEP).

It also checks the other direction: the ferroptim checkpoints committed under
`tests/fixtures/ferroptim_ckpt/<name>.safetensors` (case 0 after MID_STEP,
written by the Rust test `checkpoints_for_torch_hold_what_ferroptim_saves`
with FERROPTIM_WRITE_FIXTURES=1) are loaded into torch with
tools/ferroptim_checkpoint.py, and torch must continue them as the fixture
records (the parity tolerances).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ferroptim_checkpoint  # noqa: E402
import generate as g  # noqa: E402


def tensor(j) -> torch.Tensor:
    def f(v):
        return float(v) if isinstance(v, str) else v
    return torch.tensor([f(v) for v in j["data"]], dtype=getattr(torch, j["dtype"])).reshape(j["shape"])


def resume_in_torch(name: str, cls, fixture: dict) -> float:
    """Loads ferroptim's checkpoint of case 0 into torch, continues, returns the worst relative error."""
    case = fixture["cases"][0]
    mid = case["mid_step"]
    params = [torch.nn.Parameter(tensor(t)) for t in case["steps"][mid - 1]["params"]]
    groups = [{**{k: v for k, v in grp.items() if k != "params"}, "params": [params[i] for i in grp["params"]]}
              for grp in case["groups"]]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in case["kwargs"].items()}
    opt = cls(groups, **kwargs)
    opt.load_state_dict(ferroptim_checkpoint.load(str(g.OUT_DIR / "ferroptim_ckpt" / f"{name}.safetensors")))
    worst = 0.0
    for step in case["steps"][mid:]:
        for p, grad in zip(params, step["grads"]):
            if grad is None:
                p.grad = None
            elif "indices" in grad:
                values = tensor(grad["values"])
                idx = torch.tensor(grad["indices"]).unsqueeze(0)
                p.grad = torch.sparse_coo_tensor(idx, values, p.shape, check_invariants=True)
            else:
                p.grad = tensor(grad)
        opt.step()
        for p, want in zip(params, step["params"]):
            want = tensor(want)
            scale = max(want.abs().max().item() if want.numel() else 0.0, 1e-30)
            err = (p.detach() - want).abs().max().item() / scale if want.numel() else 0.0
            worst = max(worst, err)
    return worst

OUT = g.OUT_DIR / "torch_pt"


def main(names: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    every = {**g.OPTIMIZERS, **{n: ref for n, ref in g.REFERENCES.items()}}
    if names == ["lookahead"]:
        return save_lookahead()
    for name in names or list(every):
        cls = every[name][0] if name in g.OPTIMIZERS else every[name]()[0]
        fixture = json.loads((g.OUT_DIR / f"{name}.json").read_text())
        kwargs = fixture["cases"][0]["kwargs"]
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        sparse = fixture["cases"][0]["desc"].startswith("sparse grads: ")
        for seed, dtype in enumerate(g.DTYPES, start=1):
            path = OUT / f"{name}-{str(dtype).removeprefix('torch.')}.pt"
            case = g.run_case(cls, dict(kwargs), dtype, seed, sparse, g.SHAPES_FOR.get(name),
                              on_mid=lambda opt: torch.save(opt.state_dict(), path),
                              lr_scale=g.group1_lr_scale(name, kwargs))
            want = fixture["cases"][seed - 1]
            if case["steps"] != want["steps"]:
                raise RuntimeError(f"{name}: the rerun differs from the committed fixture case {seed - 1}")
            print(f"{path.relative_to(g.ROOT)}: {path.stat().st_size} bytes")
        if not (g.OUT_DIR / "ferroptim_ckpt" / f"{name}.safetensors").exists():
            print(f"{name}: no ferroptim checkpoint yet (FERROPTIM_WRITE_FIXTURES=1 cargo test); not resumed")
            continue
        worst = resume_in_torch(name, cls, fixture)
        tol = 2e-4 if name == "muon" else 1e-6
        if not worst <= tol:
            raise RuntimeError(f"{name}: torch resumed from ferroptim's checkpoint is off by {worst:e}")
        print(f"{name}: torch resumed from ferroptim's checkpoint, worst relative error {worst:.1e}")
    if names:
        return
    save_lbfgs()
    save_lookahead()
    save_protocols()
    save_named()
    save_training()


def save_lookahead() -> None:
    """pytorch-optimizer's Lookahead both ways, on lookahead.py's
    CHECKPOINT_CONFIG: its `state_dict()` (the nested layout, `(group,
    index)` tuple keys) saved after MID_STEP to `lookahead-<dtype>.pt`,
    which ferroptim must read and continue as the fixture; and ferroptim's
    checkpoint of the float32 case (`ferroptim_ckpt/lookahead.safetensors`)
    split by ferroptim_checkpoint.load_lookahead and loaded into the
    reference, which must continue it as the fixture records."""
    import lookahead as la

    h = g.lookahead_helpers()
    fixture = json.loads((g.OUT_DIR / "lookahead.json").read_text())
    n = la.CHECKPOINT_CONFIG
    base, base_kwargs, kwargs, _ = la.CONFIGS[n]
    for d, dtype in enumerate(g.DTYPES):
        path = OUT / f"lookahead-{str(dtype).removeprefix('torch.')}.pt"
        case = la.run(base, base_kwargs, kwargs, dtype, 1000 + n, h,
                      on_mid=lambda opt, path=path: torch.save(opt.state_dict(), path))
        if case["steps"] != fixture["cases"][2 * n + d]["steps"]:
            raise RuntimeError(f"lookahead: the rerun differs from the committed fixture case {2 * n + d}")
        print(f"{path.relative_to(g.ROOT)}: {path.stat().st_size} bytes")
    path = g.OUT_DIR / "ferroptim_ckpt" / "lookahead.safetensors"
    if not path.exists():
        print(f"{path.relative_to(g.ROOT)} not written yet (FERROPTIM_WRITE_FIXTURES=1 cargo test); skipped")
        return
    case = fixture["cases"][2 * n]
    mid = case["mid_step"]
    params = [torch.nn.Parameter(tensor(t)) for t in case["steps"][mid - 1]["params"]]
    opt = la.make(base, base_kwargs, kwargs, params, h)
    opt.load_state_dict(ferroptim_checkpoint.load_lookahead(str(path)))
    worst = 0.0
    for step in case["steps"][mid:]:
        for p, grad in zip(params, step["grads"]):
            p.grad = None if grad is None else tensor(grad)
        opt.step()
        for p, want in zip(params, step["params"]):
            want = tensor(want)
            if want.numel():
                scale = max(want.abs().max().item(), 1e-30)
                worst = max(worst, (p.detach() - want).abs().max().item() / scale)
    if worst != 0.0:
        raise RuntimeError(f"lookahead: the reference resumed from ferroptim's checkpoint is off by {worst:e}")
    print("lookahead: the reference resumed from ferroptim's checkpoint, bit for bit")


def save_protocols() -> None:
    """Adam's case 0 (float32) saved with pickle protocols 4 and 5 (STACK_GLOBAL,
    FRAME, MEMOIZE), and once more after its lr was set to NaN, which torch
    allows between steps: ferroptim must read all three."""
    cls, _, _ = g.OPTIMIZERS["adam"]
    fixture = json.loads((g.OUT_DIR / "adam.json").read_text())
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in fixture["cases"][0]["kwargs"].items()}
    dtype = g.DTYPES[0]

    def save(path, protocol, nan_lr=False):
        def on_mid(opt):
            if nan_lr:
                for group in opt.param_groups:
                    group["lr"] = float("nan")
            torch.save(opt.state_dict(), path, pickle_protocol=protocol)
        case = g.run_case(cls, dict(kwargs), dtype, 1, False, g.SHAPES_FOR.get("adam"), on_mid=on_mid)
        if not nan_lr and case["steps"] != fixture["cases"][0]["steps"]:
            raise RuntimeError("adam: the rerun differs from the committed fixture case 0")
        print(f"{path.relative_to(g.ROOT)}: {path.stat().st_size} bytes")

    for protocol in (4, 5):
        save(OUT / f"adam-float32-protocol{protocol}.pt", protocol)
    save(OUT / "adam-float32-nan-lr.pt", 2, nan_lr=True)


def save_named() -> None:
    """Adam over a model's named parameters, two groups (torch 2.6+ keeps each
    group's `param_names` in its state_dict), saved after NAMED_MID steps
    to `adam-named.pt`; `adam-named.json` holds the names, the parameters
    at that point, and the gradients and parameters of the steps after it,
    which ferroptim must repeat from the file."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    groups = [
        {"params": [(f"0.{n}", p) for n, p in model[0].named_parameters()]},
        {"params": [(f"2.{n}", p) for n, p in model[2].named_parameters()], "lr": 0.02},
    ]
    opt = torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.95))
    params = [p for group in opt.param_groups for p in group["params"]]
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    named_mid, record = 3, {"steps": []}
    for step in range(named_mid + 2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = [g.tensor_json(p.grad) for p in params]
        opt.step()
        if step + 1 == named_mid:
            torch.save(opt.state_dict(), OUT / "adam-named.pt")
            record["param_names"] = [group["param_names"] for group in opt.state_dict()["param_groups"]]
            record["mid_params"] = [g.tensor_json(p) for p in params]
        elif step + 1 > named_mid:
            record["steps"].append({"grads": grads, "params": [g.tensor_json(p) for p in params]})
    record["generator"] = "tools/torch_reference/checkpoints.py named"
    record["torch_version"] = torch.__version__
    (OUT / "adam-named.json").write_text(json.dumps(record, indent=1))
    print(f"{(OUT / 'adam-named.pt').relative_to(g.ROOT)}: names {record['param_names']}")


def training_run():
    """The training run behind the full-checkpoint files: an MLP with a
    BatchNorm (an int64 buffer in its state_dict), AdamW over its named
    parameters in two groups, LinearLR warmup then cosine (SequentialLR)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 2))
    decay = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [(n, p) for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=2)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[2])
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    return model, opt, sched, x, y


TRAINING_MID = 3


def save_training() -> None:
    """A whole training checkpoint as people save one, at TRAINING_MID steps:
    `training.pt` is torch.save({'model', 'optimizer', 'lr_scheduler',
    'epoch', ...}) with an opaque object and bf16/f16/int tensors beside;
    `lightning.pt` is Lightning's layout ('state_dict', 'optimizer_states',
    'lr_schedulers'). `training.json` holds the model's tensors, the names,
    and the gradients, parameters and learning rates of the steps after it."""
    import argparse

    model, opt, sched, x, y = training_run()
    params = [p for group in opt.param_groups for p in group["params"]]
    record = {"steps": []}
    for step in range(TRAINING_MID + 3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = [g.tensor_json(p.grad) for p in params]
        opt.step()
        sched.step()
        if step + 1 == TRAINING_MID:
            halves = {"bf16": torch.tensor([1.5, -2.25, 3.0, 0.1]).bfloat16(),
                      "f16": torch.tensor([0.5, 65504.0, 0.1]).half(),
                      "i32": torch.tensor([7, -8], dtype=torch.int32)}
            record["halves"] = {k: [float(x) for x in v.tolist()] for k, v in halves.items()}
            torch.save({
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(),
                "epoch": 3,
                "args": argparse.Namespace(lr=0.01, note="an object ferroptim does not build"),
                "halves": halves,
            }, OUT / "training.pt")
            torch.save({
                "epoch": 3,
                "global_step": TRAINING_MID,
                "state_dict": model.state_dict(),
                "optimizer_states": [opt.state_dict()],
                "lr_schedulers": [sched.state_dict()],
            }, OUT / "lightning.pt")
            record["model"] = {k: g.tensor_json(v.double() if v.is_floating_point() else v.double())
                               for k, v in model.state_dict().items()}
            record["param_names"] = [group["param_names"] for group in opt.state_dict()["param_groups"]]
            record["mid_params"] = [g.tensor_json(p) for p in params]
            record["mid_lr"] = [group["lr"] for group in opt.param_groups]
        elif step + 1 > TRAINING_MID:
            record["steps"].append({"grads": grads, "params": [g.tensor_json(p) for p in params],
                                    "lr": [group["lr"] for group in opt.param_groups]})
    record["generator"] = "tools/torch_reference/checkpoints.py training"
    record["torch_version"] = torch.__version__
    (OUT / "training.json").write_text(json.dumps(record, indent=1))
    print(f"{(OUT / 'training.pt').relative_to(g.ROOT)}, lightning.pt: {len(record['steps'])} steps after")
    resume_training_in_torch(record)


def resume_training_in_torch(record: dict) -> None:
    """The other direction: ferroptim's one-file training checkpoint
    (`ferroptim_ckpt/training.safetensors`, written by the Rust test
    `a_training_checkpoint_resumes_in_torch_as_torch_did` from
    training.pt) loads into torch through tools/ferroptim_checkpoint.py,
    and torch continues it exactly as the original run did."""
    path = g.OUT_DIR / "ferroptim_ckpt" / "training.safetensors"
    if not path.exists():
        print(f"{path.relative_to(g.ROOT)} not written yet (FERROPTIM_WRITE_FIXTURES=1 cargo test); skipped")
        return
    model, opt, sched, x, y = training_run()
    ckpt = ferroptim_checkpoint.load_training(str(path))
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["lr_scheduler"])
    if ckpt["epoch"] != 3:
        raise RuntimeError(f"training.safetensors: epoch {ckpt['epoch']}, expected 3")
    params = [p for group in opt.param_groups for p in group["params"]]
    for i, want in enumerate(record["steps"]):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
        got = [g.tensor_json(p) for p in params]
        if got != want["params"] or [gr["lr"] for gr in opt.param_groups] != want["lr"]:
            raise RuntimeError(f"training.safetensors: torch's step {i} after loading differs")
    print(f"{path.relative_to(g.ROOT)}: torch resumed it bit-identically for {len(record['steps'])} steps")


def save_lbfgs() -> None:
    """LBFGS: cases 0 and 1 of its fixture, saved after its MID_STEP."""
    import lbfgs

    fixture = json.loads((g.OUT_DIR / "lbfgs.json").read_text())
    helpers = {"tensor_json": g.tensor_json, "value_json": g.value_json}
    for i in range(2):
        want = fixture["cases"][i]
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in want["kwargs"].items()}
        path = OUT / f"lbfgs-{i}.pt"
        case = lbfgs.run(helpers, want["problem"], getattr(torch, want["dtype"]), kwargs,
                         on_mid=lambda opt: torch.save(opt.state_dict(), path))
        if case["steps"] != want["steps"]:
            raise RuntimeError(f"lbfgs: the rerun differs from the committed fixture case {i}")
        print(f"{path.relative_to(g.ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    if sys.argv[1:] == ["protocols"]:
        torch.set_num_threads(1)
        save_protocols()
    elif sys.argv[1:] == ["named"]:
        torch.set_num_threads(1)
        save_named()
    elif sys.argv[1:] == ["training"]:
        torch.set_num_threads(1)
        save_training()
    elif sys.argv[1:]:
        main(sys.argv[1:])  # only these optimizers' files
    else:
        main()
