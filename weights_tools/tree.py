"""Weights as a nested dict keyed by the segments of NeMo's state_dict names.

``encoder.layers.3.self_attn.linear_q.weight`` lives at
``weights["encoder"]["layers"]["3"]["self_attn"]["linear_q"]["weight"]`` (every key a string, numeric ones too,
because NeMo's numbering is sparse: ``pre_encode.conv.{0,2,3,5,6}``, ``joint_net.2``). Layer functions take
the sub-dict of their module, so a missing weight fails loudly with a KeyError naming it.
"""

from __future__ import annotations

import numpy as np


def unflatten(flat: dict) -> dict:
    """{'a.b.c': array} -> {'a': {'b': {'c': array}}}."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for i, p in enumerate(parents):
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"weight name {name!r} nests under the array {'.'.join(parents[: i + 1])!r}")
            node = child
        if leaf in node:
            raise ValueError(f"weight {name!r} given twice")
        node[leaf] = value
    return tree


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': {'c': array}}} -> {'a.b.c': array}, in insertion order."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, name))
        else:
            out[name] = v
    return out


def get(tree: dict, name: str):
    """The array (or sub-dict) at a dotted NeMo name; KeyError names the missing weight."""
    node = tree
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"weight {name!r} is missing")
        node = node[part]
    return node


def astype(tree: dict, dtype) -> dict:
    """The same tree with every floating-point array as a C-contiguous array of dtype (copied only where it was
    not one already); integer arrays are left alone."""
    return {
        k: astype(v, dtype)
        if isinstance(v, dict)
        else (np.ascontiguousarray(v, dtype) if np.asarray(v).dtype.kind == "f" else v)
        for k, v in tree.items()
    }
