"""Lookahead reference data: pytorch-optimizer's `Lookahead` wrapped around
torch's optimizers, for tools/torch_reference/generate.py.

Lookahead is not an optimizer of its own but a wrapper, so its cases name
a base optimizer and its arguments besides Lookahead's (`k`, `alpha`,
`pullback_momentum`). Each case runs as generate.py's cases do (two
groups, the second at half the lr, some steps without a gradient for some
parameters), and records after every step the parameters and Lookahead's
slow weights. The state_dicts keep the reference's layout, with its
`(group, index)` tuple keys written as "group,index".
"""

from __future__ import annotations

import torch

# (base optimizer, its arguments, Lookahead's arguments, description)
CONFIGS = [
    ("SGD", {"lr": 0.01, "momentum": 0.9}, {}, "SGD momentum 0.9; defaults k 5, alpha 0.5, pullback none"),
    ("SGD", {"lr": 0.01, "momentum": 0.9}, {"k": 3, "alpha": 0.8, "pullback_momentum": "reset"},
     "SGD momentum 0.9; k 3, alpha 0.8, reset"),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}, {"k": 4, "alpha": 0.3, "pullback_momentum": "pullback"},
     "SGD nesterov; k 4, alpha 0.3, pullback (param 2 has no gradient at an update)"),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5}, {"k": 3, "pullback_momentum": "pullback"},
     "RMSprop momentum 0.5; k 3, pullback"),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.01}, {}, "AdamW; defaults"),
    ("Adam", {"lr": 0.01, "amsgrad": True}, {"k": 2, "alpha": 0.6}, "Adam amsgrad; k 2, alpha 0.6"),
    ("Adam", {"lr": 0.01}, {"k": 1, "alpha": 0.9}, "Adam; k 1, alpha 0.9 (an update every step)"),
    ("Adam", {"lr": 0.01}, {"k": 7, "alpha": 0.0}, "Adam; k 7, alpha 0 (back to the slow weights)"),
]

ERRORS = [
    ({"k": 0}, "k 0"),
    ({"k": -2}, "k -2"),
    ({"alpha": -0.1}, "alpha -0.1"),
    ({"alpha": 1.0}, "alpha 1 (the range is [0, 1))"),
    ({"pullback_momentum": "both"}, "pullback_momentum both"),
]


def state_dict_json(sd: dict, h) -> dict:
    return {
        "lookahead_state": {f"{g},{i}": {k: h["value_json"](v) for k, v in s.items()}
                            for (g, i), s in sd["lookahead_state"].items()},
        "base_optimizer": h["state_dict_json"](sd["base_optimizer"]),
    }


def run(base: str, base_kwargs: dict, kwargs: dict, dtype, seed: int, h, on_mid=None) -> dict:
    """One case; `on_mid(opt)` runs after step MID_STEP (checkpoints.py saves
    the state_dict there)."""

    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in h["SHAPES"]]
    initial = [h["tensor_json"](p) for p in params]
    lr = base_kwargs["lr"]
    groups = h["GROUPS"]
    opt = make(base, base_kwargs, kwargs, params, h)
    index = {id(p): i for i, p in enumerate(params)}
    steps, sd_mid = [], None
    for step in range(h["STEPS"]):
        grads = []
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=dtype)
            if (step, i) in h["NO_GRAD"]:
                p.grad = None
                grads.append(None)
            else:
                p.grad = g.clone()
                grads.append(h["tensor_json"](g))
        opt.step()
        slow = {str(index[id(p)]): {k: h["value_json"](v) for k, v in s.items()} for p, s in opt.state.items()}
        steps.append({"grads": grads, "params": [h["tensor_json"](p) for p in params], "lookahead_state": slow})
        if step + 1 == h["MID_STEP"]:
            sd_mid = state_dict_json(opt.state_dict(), h)
            if on_mid is not None:
                on_mid(opt)
    return {
        "base": base.lower(),
        "base_kwargs": base_kwargs,
        "kwargs": kwargs,
        "groups": [{"params": groups[0]}, {"params": groups[1], "lr": lr * h["GROUP1_LR_SCALE"]}],
        "initial_params": initial,
        "steps": steps,
        "mid_step": h["MID_STEP"],
        "state_dict_mid": sd_mid,
        "state_dict_final": state_dict_json(opt.state_dict(), h),
    }


def generate(h) -> dict:
    from pytorch_optimizer import Lookahead

    cases = []
    for n, (base, base_kwargs, kwargs, desc) in enumerate(CONFIGS):
        for dtype in h["DTYPES"]:
            case = run(base, base_kwargs, kwargs, dtype, 1000 + n, h)
            case.update({"desc": desc, "dtype": str(dtype).removeprefix("torch.")})
            cases.append(case)
    errors = []
    for kwargs, desc in ERRORS:
        p = torch.nn.Parameter(torch.zeros(2))
        try:
            Lookahead(torch.optim.SGD([p], lr=0.1), **kwargs)
        except Exception as e:  # the reference's own exception and message
            errors.append({"desc": desc, "kwargs": kwargs, "error": type(e).__name__, "message": str(e)})
        else:
            raise AssertionError(f"Lookahead accepted {kwargs}")
    return {"cases": cases, "errors": errors, "scenarios": [scenario(dtype, h) for dtype in h["DTYPES"]]}


# The scenario: SGD with momentum under Lookahead with pullback, one group to
# start with; a second group added after ADD_AFTER steps; the slow weights
# swapped in after CACHE_AFTER steps (backup_and_load_cache), the state_dict
# taken then (it holds the backup), and the fast weights swapped back
# (clear_and_load_backup) before the run goes on.
SCENARIO = {"base": "SGD", "base_kwargs": {"lr": 0.01, "momentum": 0.9},
            "kwargs": {"k": 3, "alpha": 0.5, "pullback_momentum": "pullback"},
            "added_group": {"lr": 0.02, "momentum": 0.5}, "add_after": 2, "cache_after": 5, "steps": 8}


def scenario(dtype, h) -> dict:
    """add_param_group, backup_and_load_cache and clear_and_load_backup, as the reference runs them."""
    from pytorch_optimizer import Lookahead

    sc = SCENARIO
    gen = torch.Generator().manual_seed(77)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in h["SHAPES"][:3]]
    initial = [h["tensor_json"](p) for p in params]
    opt = Lookahead(getattr(torch.optim, sc["base"])(params[:2], **sc["base_kwargs"]), **sc["kwargs"])
    steps, cached = [], None
    for step in range(sc["steps"]):
        if step == sc["add_after"]:
            opt.add_param_group({"params": [params[2]], **sc["added_group"]})
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        steps.append({"grads": [h["tensor_json"](g) for g in grads], "params": [h["tensor_json"](p) for p in params]})
        if step + 1 == sc["cache_after"]:
            opt.backup_and_load_cache()
            cached = {"params": [h["tensor_json"](p) for p in params],
                      "state_dict": state_dict_json(opt.state_dict(), h)}
            opt.clear_and_load_backup()
            cached["restored_params"] = [h["tensor_json"](p) for p in params]
    return {**sc, "dtype": str(dtype).removeprefix("torch."), "initial_params": initial, "steps": steps,
            "cached": cached, "state_dict_final": state_dict_json(opt.state_dict(), h)}


# The configuration whose checkpoints go both ways (checkpoints.py): pullback
# keeps a slow momentum beside the slow weights.
CHECKPOINT_CONFIG = 2


def make(base: str, base_kwargs: dict, kwargs: dict, params: list, h):
    """The reference over `params` in generate.py's two groups."""
    from pytorch_optimizer import Lookahead

    groups = h["GROUPS"]
    lr = base_kwargs["lr"]
    specs = [{"params": [params[i] for i in groups[0]]},
             {"params": [params[i] for i in groups[1]], "lr": lr * h["GROUP1_LR_SCALE"]}]
    return Lookahead(getattr(torch.optim, base)(specs, **base_kwargs), **kwargs)
