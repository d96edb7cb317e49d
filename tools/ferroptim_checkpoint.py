"""Load a ferroptim checkpoint (StateDict::save, a .safetensors file) into torch.

    import ferroptim_checkpoint
    optimizer.load_state_dict(ferroptim_checkpoint.load("opt.safetensors"))

Needs `torch` and `safetensors` (pip install safetensors). The file's
tensors are the optimizer state; its metadata holds `param_groups` and the
non-tensor state in torch's structure (see crates/ferroptim/src/checkpoint.rs).
"""

from __future__ import annotations

import json

from safetensors import safe_open

FORMAT = "ferroptim.state_dict.v1"


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


def load(path: str) -> dict:
    """The checkpoint as torch's `optimizer.state_dict()` dict."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a ferroptim checkpoint (format {meta.get('format')!r})")
        tensors = {name: f.get_tensor(name) for name in f.keys()}
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
