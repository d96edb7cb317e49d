"""Load a ferroptim checkpoint (StateDict::save, a .safetensors file) into torch.

    import ferroptim_checkpoint
    optimizer.load_state_dict(ferroptim_checkpoint.load("opt.safetensors"))

    # ferroptim's Lookahead keeps one state_dict; pytorch-optimizer's two parts.
    lookahead.load_state_dict(ferroptim_checkpoint.load_lookahead("la.safetensors"))

    # A whole training run (TrainingCheckpoint::save): torch's usual dict.
    ckpt = ferroptim_checkpoint.load_training("run.safetensors")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    epoch = ckpt["epoch"]

Needs `torch` and `safetensors` (pip install safetensors). The file's
tensors are the optimizer state; its metadata holds `param_groups` and the
non-tensor state in torch's structure (see crates/ferroptim/src/checkpoint.rs).
"""

from __future__ import annotations

import json

from safetensors import safe_open

FORMAT = "ferroptim.state_dict.v1"
TRAINING_FORMAT = "ferroptim.training.v1"


# JSON has no NaN or infinity: ferroptim writes such floats by name.
_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _float(value):
    """A float written as ferroptim writes one (a number, or "nan", "inf", "-inf")."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def _group_value(key, value):
    # torch keeps list-valued hyperparameters (betas, etas, eps pairs, ...) as tuples.
    if isinstance(value, list) and key != "params":
        return tuple(_float(v) for v in value)
    return _float(value)


def _plain(value):
    """JSON as torch keeps it: non-finite floats back from their names."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _float(value)


def _read(path: str, fmt: str):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path}: not a {fmt} file (format {meta.get('format')!r})")
        return meta, {name: f.get_tensor(name) for name in f.keys()}


def load(path: str) -> dict:
    """The checkpoint as torch's `optimizer.state_dict()` dict."""
    meta, tensors = _read(path, FORMAT)
    return _optimizer(meta, tensors)


# What ferroptim's Lookahead keeps in a parameter's state beside the base optimizer's.
LOOKAHEAD_KEYS = ("slow_params", "slow_momentum", "backup_params")


def load_lookahead(path: str) -> dict:
    """A checkpoint of ferroptim's Lookahead as pytorch-optimizer's
    `Lookahead.state_dict()`: {'lookahead_state': {(group, index): slow
    weights}, 'base_optimizer': the wrapped optimizer's state_dict}."""
    return lookahead_layout(load(path))


def lookahead_layout(sd: dict) -> dict:
    """Splits a one-level Lookahead state_dict into pytorch-optimizer's two parts."""
    where = {p: (g, i) for g, group in enumerate(sd["param_groups"]) for i, p in enumerate(group["params"])}
    slow, base = {}, {}
    for p, entries in sd["state"].items():
        own = {k: v for k, v in entries.items() if k in LOOKAHEAD_KEYS}
        rest = {k: v for k, v in entries.items() if k not in LOOKAHEAD_KEYS}
        if own:
            slow[where[p]] = own
        if rest:
            base[p] = rest
    return {"lookahead_state": slow, "base_optimizer": {"state": base, "param_groups": sd["param_groups"]}}


def load_training(path: str) -> dict:
    """A TrainingCheckpoint as torch's usual training checkpoint:
    {'model': OrderedDict, 'optimizer': ..., 'lr_scheduler': ... (the first
    scheduler, or None), 'lr_schedulers': [...], and the run's own values
    ('epoch', ...) at the top level}."""
    from collections import OrderedDict

    meta, tensors = _read(path, TRAINING_FORMAT)
    model = OrderedDict((name, tensors[f"model.{name}"]) for name in json.loads(meta["model"]))
    schedulers = [_plain(s) for s in json.loads(meta["lr_schedulers"])]
    out = {k: _plain(v) for k, v in json.loads(meta["metadata"]).items()}
    out.update({
        "model": model,
        "optimizer": _optimizer(meta, tensors),
        "lr_scheduler": schedulers[0] if schedulers else None,
        "lr_schedulers": schedulers,
    })
    return out


def _optimizer(meta: dict, tensors: dict) -> dict:
    state = {}
    for param, entries in json.loads(meta["state"]).items():
        out = {}
        for key, value in entries.items():
            if isinstance(value, dict) and "tensor" in value:
                value = tensors[value["tensor"]]
            elif isinstance(value, dict) and "tensors" in value:
                value = [tensors[name] for name in value["tensors"]]
            else:
                value = _float(value)
            out[key] = value
        state[int(param)] = out
    groups = [{k: _group_value(k, v) for k, v in g.items()} for g in json.loads(meta["param_groups"])]
    return {"state": state, "param_groups": groups}
