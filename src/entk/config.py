"""Config validation with messages that name the offending key and say how to fix it."""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The workflow config does not fit the schema; the message lists every problem."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f" under '{key}'" if error.absolute_path else ""
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown config key {', '.join(repr(e) for e in extra)}{where}{hint} (check the spelling)"
    if error.validator == "required":
        return f"config key '{key}' is missing {error.message.split(' is a required')[0]} (add it; see config.yaml)"
    if error.validator == "oneOf":
        return f"config key '{key}': {error.instance!r} must be the string 'all' or a non-empty list of names"
    if "propertyNames" in error.schema_path:
        return f"config key '{key}': name {error.instance!r} may only use letters, digits, '_', '-' and '.'"
    return f"config key '{key}': {error.message}"


def config_errors(config: dict, schema: dict) -> list[str]:
    """One message per schema violation, sorted by key."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


def semantic_errors(config: dict) -> list[str]:
    """Problems a schema cannot express: values that must fit each other (config already schema-valid)."""
    errors = []
    tms, mlp = config["tms"], config["mlp"]
    dim = tms["n_features"] * tms["n_points"]
    if tms["top_k"] > dim:
        errors.append(f"config key 'tms.top_k': {tms['top_k']} exceeds the kernel's dimension n_features·n_points = {dim}")
    p, k = mlp["p"], mlp["top_k"]
    # Both cliffs, 2(p−1) each after the isolated index 0, plus one eigenvalue past cliff 2.
    need = 4 * (p - 1) + 2
    if not need <= k <= p * p:
        errors.append(f"config key 'mlp.top_k': {k} must lie in [4(p−1)+2, p²] = [{need}, {p * p}] to hold both cliffs")
    scale = config["scale"]
    ps, ks = scale["p"], scale["top_k"]
    if not 4 * (ps - 1) + 2 <= ks <= ps * ps:
        errors.append(
            f"config key 'scale.top_k': {ks} must lie in [4(p−1)+2, p²] = [{4 * (ps - 1) + 2}, {ps * ps}] to hold both cliffs"
        )
    checkpoints = set(range(0, mlp["epochs"] + 1, mlp["checkpoint_every"]))
    if mlp["epochs"] not in checkpoints:
        errors.append(
            f"config key 'mlp.checkpoint_every': {mlp['checkpoint_every']} does not divide mlp.epochs = {mlp['epochs']}; "
            "the final weights need a checkpoint"
        )
    for key in ("fig3_epochs", "fig5_epochs"):
        missing = sorted(set(mlp[key]) - checkpoints)
        if missing:
            errors.append(
                f"config key 'mlp.{key}': epochs {missing} have no checkpoint (checkpoints every "
                f"mlp.checkpoint_every = {mlp['checkpoint_every']} epochs up to mlp.epochs = {mlp['epochs']})"
            )
    lo, hi = config["claims"]["grok_epoch"]
    if lo > hi:
        errors.append(f"config key 'claims.grok_epoch': [{lo}, {hi}] is not an interval (first > second)")
    return errors


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise ``ConfigError`` naming every bad key of ``config``; return quietly when it is valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema) or semantic_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
