"""Config validation with messages that name the offending key and say how to fix it."""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The workflow config does not fit the schema; the message lists every problem."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _alternative(schema: dict) -> str:
    """A few words for one branch of a oneOf."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " / ".join(map(repr, schema["enum"]))
    if "$ref" in schema:
        return "a list of names"
    return f"a {schema.get('type', 'value')}"


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
        hint = error.schema.get("description") or " or ".join(_alternative(s) for s in error.schema["oneOf"])
        return f"config key '{key}': {error.instance!r} is not valid here: {hint.strip()}"
    if "propertyNames" in error.schema_path:
        return f"config key '{key}': name {error.instance!r} may only use letters, digits, '_', '-' and '.'"
    return f"config key '{key}': {error.message}"


def config_errors(config: dict, schema: dict) -> list[str]:
    """One message per schema violation, sorted by key; a registered kind's settings are checked
    against its ``$defs/<kind>_settings`` schema too."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    messages = [_describe(e) for e in errors]
    for exp_id, entry in (config.get("experiments") or {}).items() if not messages else ():
        sub = schema.get("$defs", {}).get(f"{entry.get('kind')}_settings")
        if sub is None or not isinstance(entry.get("settings", {}), dict):
            continue
        for e in Draft202012Validator(sub).iter_errors(entry.get("settings", {})):
            e.path.extendleft(reversed(["experiments", exp_id, "settings"]))
            messages.append(_describe(e))
    return messages


def _paper_errors(config: dict, experiments: dict) -> list[str]:
    """The paper section must name experiments and views that exist and fit what its figures need."""
    errors = []
    paper = config.get("paper", {})

    def known(section: str, exp_id: str, views: list[str]) -> bool:
        if exp_id not in experiments:
            errors.append(f"config key 'paper.{section}': experiment {exp_id!r} is not under experiments (or is invalid)")
            return False
        missing = [v for v in views if v not in experiments[exp_id].views]
        if missing:
            errors.append(
                f"config key 'paper.{section}': experiment {exp_id!r} has no view(s) {missing}; "
                f"its views: {sorted(experiments[exp_id].views)}"
            )
        return not missing

    if "tms" in paper:
        tms = paper["tms"]
        for exp_id in tms["experiments"]:
            known("tms.experiments", exp_id, [tms["spectrum_view"], *tms["heatmap_views"]])
    for section in ("modadd", "scale"):
        if section not in paper:
            continue
        spec = paper[section]
        if not known(section, spec["experiment"], [spec["view"]]):
            continue
        exp, view = experiments[spec["experiment"]], experiments[spec["experiment"]].views[spec["view"]]
        p = exp.settings.get("p")
        if exp.kind != "modadd_mlp":
            errors.append(f"config key 'paper.{section}.experiment': {exp.id!r} is of kind {exp.kind}, not modadd_mlp")
            continue
        # Both cliffs, 2(p−1) each after the isolated index 0, plus one eigenvalue past cliff 2.
        need = 4 * (p - 1) + 2
        if not need <= view.top_k <= p * p:
            errors.append(
                f"config key 'experiments.{exp.id}.views.{view.name}.top_k': {view.top_k} must lie in "
                f"[4(p−1)+2, p²] = [{need}, {p * p}] to hold both cliffs"
            )
        if view.outputs != "diag_mean" or not {"full", "layer1", "layer2"} <= set(view.layers or ()):
            errors.append(
                f"config key 'experiments.{exp.id}.views.{view.name}': the paper's figures need outputs: diag_mean and "
                "layers {full: all, layer1: [fc1], layer2: [fc2]}"
            )
        for key in ("fig3_epochs", "fig5_epochs") if section == "modadd" else ():
            missing = sorted(set(spec[key]) - set(view.steps))
            if missing:
                errors.append(
                    f"config key 'paper.modadd.{key}': epochs {missing} have no analysed checkpoint "
                    f"(checkpoints every settings.checkpoint_every = {exp.settings['checkpoint_every']} epochs up to "
                    f"settings.epochs = {exp.settings['epochs']})"
                )
    grok = config.get("claims", {}).get("grok_epoch")
    if grok and grok[0] > grok[1]:
        errors.append(f"config key 'claims.grok_epoch': {grok} is not an interval (first > second)")
    return errors


def _dimension_errors(experiments: dict) -> list[str]:
    """top_k must not exceed a kernel's dimension where the settings fix it."""
    errors = []
    for exp in experiments.values():
        s = exp.settings
        dims = {"tms": lambda o: s["n_points"] * (s["n_features"] if o == "flatten" else 1),
                "modadd_mlp": lambda o: s["p"] ** 2 * (s["p"] if o == "flatten" else 1)}.get(exp.kind)
        for view in exp.views.values() if dims else ():
            if view.top_k > dims(view.outputs):
                errors.append(
                    f"config key 'experiments.{exp.id}.views.{view.name}.top_k': {view.top_k} exceeds the kernel's "
                    f"dimension {dims(view.outputs)}"
                )
    return errors


def semantic_errors(config: dict, basedir: str = ".") -> tuple[dict, list[str]]:
    """Resolved experiments and the problems a schema cannot express (config already schema-valid)."""
    from entk.experiments import resolve_experiments

    experiments, errors = resolve_experiments(config, basedir)
    errors += _dimension_errors(experiments)
    errors += _paper_errors(config, experiments)
    return experiments, errors


def check_config(config: dict, schema_path: str | Path, basedir: str = ".") -> dict:
    """The config's resolved experiments ({id: Experiment}); ``ConfigError`` naming every bad key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema)
    experiments = {}
    if not errors:
        experiments, errors = semantic_errors(config, basedir)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
    return experiments
