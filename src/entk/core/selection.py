"""Which parameters a kernel covers: selections by parameter or module name, and layer groups.

A *group* names a set of parameters whose kernel is wanted (a layer, a tensor, the whole model).
Groups may overlap; the kernels of the *atoms* they induce (parameters that belong to exactly the
same groups) are computed once and summed into each group's kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

GroupSpec = str | dict[str, list[str] | None] | None


def resolve_params(model: nn.Module, params: list[str] | None) -> dict[str, list[str]]:
    """Selected parameter names grouped by the module that directly owns them ('' = root)."""
    all_params = dict(model.named_parameters())
    if params is None:
        selected = list(all_params)
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be a list of names, got the string {params!r}: wrap it in a list")
        modules = dict(model.named_modules())
        selected = []
        for name in params:
            if name in all_params:
                selected.append(name)
            elif name in modules and name != "":
                selected += [f"{name}.{p}" for p, _ in modules[name].named_parameters()]
            else:
                raise ValueError(
                    f"unknown parameter or module name {name!r}; parameters: {sorted(all_params)}, "
                    f"modules: {sorted(m for m in modules if m)}"
                )
        selected = list(dict.fromkeys(selected))
    if not selected:
        raise ValueError("no parameters selected: the model has none or params is empty")
    groups: dict[str, list[str]] = {}
    for name in selected:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return groups


def selected_names(model: nn.Module, params: list[str] | None) -> list[str]:
    """The selected parameter names, in ``model.named_parameters()`` order."""
    chosen = {n for names in resolve_params(model, params).values() for n in names}
    return [n for n, _ in model.named_parameters() if n in chosen]


# The group of the parameters a model owns itself (a module name of ""), in per-module groupings.
ROOT_GROUP = "root"


def module_groups(model: nn.Module, within: list[str] | None = None) -> dict[str, list[str]]:
    """{module name: its parameter names} for each module that directly owns parameters (in
    ``within``, None = all); the model's own parameters form the group ``ROOT_GROUP``."""
    return {(m or ROOT_GROUP): names for m, names in resolve_params(model, within).items()}


def module_name(group: str) -> str:
    """The module a group of ``module_groups`` stands for: "" (the model itself) for ``ROOT_GROUP``."""
    return "" if group == ROOT_GROUP else group


def layer_groups(model: nn.Module, groups: GroupSpec, within: list[str]) -> dict[str, list[str]]:
    """{group name: parameter names} for ``groups``: "per_tensor", "per_module" (also for None), or
    {name: parameter/module names, None = all}; only parameters in ``within`` count."""
    keep = set(within)
    if groups is None or groups == "per_module":
        return module_groups(model, within)
    if groups == "per_tensor":
        return {n: [n] for n in within}
    if not isinstance(groups, dict):
        raise ValueError(f"groups must be 'per_tensor', 'per_module' or a dict of names, got {groups!r}")
    out = {}
    for name, spec in groups.items():
        try:
            names = selected_names(model, spec)
        except ValueError as err:
            raise ValueError(f"group {name!r}: {err}") from None
        outside = [n for n in names if n not in keep]
        if outside and spec is not None:
            raise ValueError(f"group {name!r} names parameters outside the selection: {outside}")
        out[name] = [n for n in names if n in keep]
    return out


def atoms(names: list[str], groups: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Partition of ``names`` by which groups hold each name (parameters in no group form their own atom)."""
    member: dict[str, tuple[str, ...]] = {n: tuple(g for g, ns in groups.items() if n in ns) for n in names}
    parts: dict[tuple[str, ...], list[str]] = {}
    for n in names:
        parts.setdefault(member[n] or (f"\0{n}",), []).append(n)
    return [tuple(p) for p in parts.values()]


def forward_checked(model: nn.Module, x: Tensor) -> Tensor:
    """model(x) with a ValueError unless it is (N, C) for x of N samples."""
    out = model(x)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"the model must map x of shape (N, ...) to outputs (N, C); got {tuple(out.shape)} for N = "
            f"{x.shape[0]}: reshape or select the outputs in a wrapper module"
        )
    return out


def to_model(model: nn.Module, x: Tensor) -> Tensor:
    """x on the model's device, in its dtype if x is floating point (token ids stay integers)."""
    ref = next(model.parameters())
    return x.to(device=ref.device, dtype=ref.dtype if x.is_floating_point() else x.dtype)


def n_outputs(model: nn.Module, x: Tensor) -> int:
    """C, the model's number of outputs (one forward pass on one sample)."""
    with torch.no_grad():
        return forward_checked(model, x[:1]).shape[1]
