#!/usr/bin/env python3
"""Reference data for ferroptim's 16-bit parameters, produced by torch itself.

    .venv/bin/python tools/torch_reference/half.py            # every optimizer in HALF
    .venv/bin/python tools/torch_reference/half.py adam       # just one
    .venv/bin/python tools/torch_reference/half.py fused      # fused=True runs (FUSED)
    .venv/bin/python tools/torch_reference/half.py fused sgd  # just one of them
    .venv/bin/python tools/torch_reference/half.py grad_scale # FUSED with AMP's grad_scale/found_inf

For each optimizer ferroptim steps in bfloat16 and float16, it runs the
configurations `generate.py` runs (torch's `optim_inputs_func_<name>` plus its
EXTRA_INPUTS) in both dtypes, on torch's default CPU path (single-tensor: each
tensor operation computed in float and rounded to the parameter's dtype, the
state in that dtype), and writes `crates/ferroptim/tests/fixtures/half/<name>.json`
in `generate.py`'s fixture format (no error inputs: those are dtype-free and
live in the main fixtures). The first configuration of each dtype that keeps a state also saves
torch's `state_dict()` at step MID_STEP with `torch.save`, as
`half/<name>-<dtype>.pt`: the Rust tests load it and continue where torch did.

`fused` runs the optimizers of FUSED with `fused=True` (torch's fused CPU
kernels: float math inside, one rounding per stored value) in float32,
float64, bfloat16 and float16, and writes `fixtures/fused/<name>.json`.

Which of torch's optimizers take 16-bit parameters at all: `half_support.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as g  # noqa: E402

OUT_DIR = g.OUT_DIR / "half"
# The optimizers ferroptim steps in 16 bits (Algorithm::REDUCED), as torch's
# default path computes them.
HALF = ["sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta", "adamax", "nadam", "radam", "asgd", "rprop"]
DTYPES = [torch.bfloat16, torch.float16]
# torch's CPU loops run 2 x Vectorized<T>::size() elements at a time and the
# rest through a scalar loop, which rounds differently for 16-bit types (its
# `add(alpha)` rounds alpha and the product, its vector `fmadd` does not).
# With AVX-512 that is 64 elements for bfloat16/float16: the matrix has 90, so
# both loops produce part of the reference numbers.
SHAPES = [(), (10, 9), (7,), (0, 3)]


# torch's fused CPU kernels (fused=True), and the dtypes they take.
FUSED = ["adam", "adamw", "sgd", "adagrad"]
FUSED_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
FUSED_DIR = g.OUT_DIR / "fused"
# Implementation flags a fused run cannot combine with.
NOT_WITH_FUSED = {"foreach", "differentiable", "capturable", "fused"}
# torch's fused SGD cannot step a group where some parameters have a momentum
# buffer and others not yet (`_fused_sgd` passes `None` to the kernel: "expected
# Tensor as element 0 in argument 2"), so its runs give parameter 0 a gradient
# from the first step; parameter 2 still skips one.
FUSED_NO_GRAD = {"sgd": {(7, 2)}}


def generate(name: str, fused: bool = False) -> dict:
    """The default-path runs in DTYPES (each dtype's first state-keeping run
    also torch.saves its mid-run state_dict), or with `fused` the fused=True
    runs in FUSED_DTYPES."""
    cls, inputs_func, _ = g.OPTIMIZERS[name]
    cases, skipped = [], []
    configs = [(i.kwargs, i.desc) for i in inputs_func("cpu", torch.float32)]
    configs += g.EXTRA_INPUTS.get(name, [])
    seed = 2000 if fused else 1000
    saved = set()
    for kwargs, desc in configs:
        if g.has_tensor(kwargs) or (fused and NOT_WITH_FUSED & set(kwargs)):
            skipped.append({"desc": desc, "reason": "tensor-valued lr/betas, or a flag fused does not combine with"
                            if fused else "tensor-valued lr/betas are not supported"})
            continue
        if fused:
            kwargs = dict(kwargs, fused=True)
        for dtype in FUSED_DTYPES if fused else DTYPES:
            seed += 1
            dtype_name = str(dtype).removeprefix("torch.")
            case = {"desc": desc, "dtype": dtype_name, "kwargs": g.value_json(kwargs)}
            on_mid = None
            # SGD's first state-keeping configuration (its default keeps none).
            if not fused and dtype not in saved and (name != "sgd" or kwargs.get("momentum", 0) != 0):
                saved.add(dtype)
                path = OUT_DIR / f"{name}-{dtype_name}.pt"
                case["saved_mid"] = path.name
                on_mid = lambda opt, path=path: torch.save(opt.state_dict(), path)  # noqa: E731
            no_grad = FUSED_NO_GRAD.get(name, g.NO_GRAD) if fused else g.NO_GRAD
            case.update(g.run_case(cls, dict(kwargs), dtype, seed, False, SHAPES, on_mid=on_mid,
                                   lr_scale=g.group1_lr_scale(name, kwargs), no_grad=no_grad))
            cases.append(case)
    return {
        "generator": "tools/torch_reference/half.py" + (" fused" if fused else ""),
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": name,
        "reference": g.reference_of(cls),
        "cases": cases,
        "errors": [],
        "skipped": skipped,
    }


# AMP's gradient scaling as torch's fused optimizers take it: GradScaler sets
# `optimizer.grad_scale` and `optimizer.found_inf` (float32 tensors) before
# `step()`; the kernel divides each gradient by the scale in float, writes it
# back unscaled and steps with the quotient, and with found_inf = 1 changes
# nothing (the step counts are put back). The scale is not a power of two, so
# that the quotients round; found_inf is 1 at step INF_STEP.
GRAD_SCALE = 1536.0
INF_STEP = 2
SCALED_STEPS = 5
SCALED_SHAPES = [(10, 9), (7,)]


def grad_scaled(name: str) -> dict:
    """The fused=True runs of `name`'s configurations in FUSED_DTYPES with
    grad_scale and found_inf: each step's scaled gradients, the gradients
    as the step leaves them, the parameters and the state."""
    cls, inputs_func, _ = g.OPTIMIZERS[name]
    configs = [(i.kwargs, i.desc) for i in inputs_func("cpu", torch.float32)]
    configs += g.EXTRA_INPUTS.get(name, [])
    cases, seed = [], 3000
    for kwargs, desc in configs:
        if g.has_tensor(kwargs) or NOT_WITH_FUSED & set(kwargs):
            continue
        kwargs = dict(kwargs, fused=True)
        for dtype in FUSED_DTYPES:
            seed += 1
            gen = torch.Generator().manual_seed(seed)
            params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SCALED_SHAPES]
            case = {"desc": desc, "dtype": str(dtype).removeprefix("torch."), "kwargs": g.value_json(kwargs),
                    "grad_scale": GRAD_SCALE, "initial_params": [g.tensor_json(p) for p in params], "steps": []}
            opt = cls(params, **kwargs)
            for step in range(SCALED_STEPS):
                grads = [(torch.randn(p.shape, generator=gen) * GRAD_SCALE).to(dtype) for p in params]
                for p, grad in zip(params, grads):
                    p.grad = grad.clone()
                opt.grad_scale = torch.tensor(GRAD_SCALE)
                opt.found_inf = torch.tensor(1.0 if step == INF_STEP else 0.0)
                opt.step()
                index = {id(p): i for i, p in enumerate(params)}
                state = {str(index[id(p)]): {k: g.value_json(v, dtype) for k, v in st.items()}
                         for p, st in opt.state.items()}
                case["steps"].append({
                    "grads": [g.tensor_json(x) for x in grads],
                    "found_inf": step == INF_STEP,
                    "grads_after": [g.tensor_json(p.grad) for p in params],
                    "params": [g.tensor_json(p) for p in params],
                    "state": state,
                })
            cases.append(case)
    return {"generator": "tools/torch_reference/half.py grad_scale", "torch_version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "optimizer": name, "cases": cases}


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"{path.relative_to(g.ROOT)}: {len(data['cases'])} cases, {path.stat().st_size / 1e6:.2f} MB")


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    names = argv[1:] or HALF + ["fused"]
    if names == ["grad_scale"]:
        FUSED_DIR.mkdir(parents=True, exist_ok=True)
        for name in FUSED:
            write(FUSED_DIR / f"{name}-grad_scale.json", grad_scaled(name))
        return
    if "fused" in names:
        # `fused [names]`: those of FUSED named after it (all by default).
        at = names.index("fused")
        names, fused = names[:at], names[at + 1:] or FUSED
        FUSED_DIR.mkdir(parents=True, exist_ok=True)
        for name in fused:
            write(FUSED_DIR / f"{name}.json", generate(name, fused=True))
    for name in names:
        write(OUT_DIR / f"{name}.json", generate(name))


if __name__ == "__main__":
    main(sys.argv)
