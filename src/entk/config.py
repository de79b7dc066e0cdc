"""Config validation with messages that name the offending key and say how to fix it."""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The workflow config does not fit the schema; the message lists every problem."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error, schema: dict) -> str:
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
    return [_describe(e, schema) for e in errors]


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise ``ConfigError`` naming every bad key of ``config``; return quietly when it is valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
