"""Config loading and validation with messages that name the offending key (and file, line) and the fix.

Loading, before the schema sees the config:
- ``load_yaml_strict`` reads a file refusing duplicate keys (PyYAML lets the last one win silently)
  and reports syntax errors as file:line:column;
- ``replace_sections`` makes a later config file's top-level section (``experiments``) replace the
  earlier one instead of being merged into it, so a one-off config can drop entries;
- ``coerce_numbers`` turns YAML's near-misses into the types the schema asks for: '1e-3' (PyYAML reads
  exponents without a dot as strings) into a float, 60.0 into the integer 60.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from entk.kinds.registry import KINDS, get_kind


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
        return (
            f"config key '{key}': name {error.instance!r} may only use letters, digits, '_', '-' and '.', and may "
            "not start with '.' (experiment and view names are folders under results/)"
        )
    if error.validator == "type" and key == "experiments":
        return (
            f"config key 'experiments' is a {type(error.instance).__name__}, not a map of experiment ids to entries; "
            "write each entry under its id (experiments:\n  my_id:\n    model: ...) instead of as a list item"
        )
    return f"config key '{key}': {error.message}"


def _kind_settings(config: dict, schema: dict):
    """(experiment id, entry, the settings schema of its kind) for every entry of a registered kind
    whose settings are a map (anything else is for the main schema check to report)."""
    experiments = config.get("experiments")
    for exp_id, entry in experiments.items() if isinstance(experiments, dict) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("settings", {}), dict):
            continue
        sub = schema.get("$defs", {}).get(f"{entry.get('kind')}_settings")
        if sub is not None:
            yield exp_id, entry, sub


def config_errors(config: dict, schema: dict) -> list[str]:
    """One message per schema violation, sorted by key; a registered kind's settings are checked
    against its ``$defs/<kind>_settings`` schema too."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    messages = [_describe(e) for e in errors]
    for exp_id, entry, sub in _kind_settings(config, schema) if not messages else ():
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
            entry = config["experiments"].get(exp_id)
            if entry is None:  # an invalid entry has its own message already
                errors.append(f"config key 'paper.{section}': experiment {exp_id!r} is not under experiments")
            elif "seeds" in entry:
                errors.append(
                    f"config key 'paper.{section}': experiment {exp_id!r} lists seeds; name a single run here and "
                    "map it to the seeds entry under paper.seeds.experiments"
                )
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
    if "transformer" in paper:
        spec = paper["transformer"]
        if known("transformer", spec["experiment"], [spec["tensors_view"], spec["unembed_view"]]):
            kind = experiments[spec["experiment"]].kind
            if kind != "modadd_transformer":
                errors.append(
                    f"config key 'paper.transformer.experiment': {spec['experiment']!r} is of kind {kind}, "
                    "not modadd_transformer"
                )
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
    errors += _seed_study_errors(config)
    grok = config.get("claims", {}).get("grok_epoch")
    if grok and grok[0] > grok[1]:
        errors.append(f"config key 'claims.grok_epoch': {grok} is not an interval (first > second)")
    return errors


def _seed_study_errors(config: dict) -> list[str]:
    """paper.seeds must map paper experiments to entries that list the same seeds."""
    study = config.get("paper", {}).get("seeds")
    if not study:
        return []
    errors, seed_lists = [], {}
    for paper_id, entry_id in study["experiments"].items():
        where = f"config key 'paper.seeds.experiments.{paper_id}'"
        entry = config["experiments"].get(entry_id)
        if paper_id not in config["experiments"]:
            errors.append(f"{where}: {paper_id!r} is not under experiments")
        if entry is None:
            errors.append(f"{where}: {entry_id!r} is not under experiments")
        elif "seeds" not in entry:
            errors.append(f"{where}: experiment {entry_id!r} lists no seeds; add seeds: [0, 1, 2, 3, 4] to it")
        else:
            seed_lists[entry_id] = sorted(entry["seeds"])
    if len({tuple(v) for v in seed_lists.values()}) > 1:
        errors.append(
            f"config key 'paper.seeds.experiments': its entries list different seeds {seed_lists}; give them the same"
        )
    return errors


def _dimension_errors(experiments: dict) -> list[str]:
    """top_k must not exceed a kernel's dimension where the settings fix it."""
    errors = []
    for exp in experiments.values():
        sizes = None if exp.kind is None else get_kind(exp.kind).sizes(exp.settings)
        if sizes is None:
            continue
        n, c = sizes  # the kernel's dimension is C·N (flatten) or N
        for view in exp.views.values():
            dim = n * c if view.outputs == "flatten" else n
            if view.top_k > dim:
                errors.append(
                    f"config key 'experiments.{exp.id}.views.{view.name}.top_k': {view.top_k} exceeds the kernel's "
                    f"dimension {dim}"
                )
    return errors


def semantic_errors(config: dict, basedir: str = ".") -> tuple[dict, list[str]]:
    """Resolved experiments and the problems a schema cannot express (config already schema-valid)."""
    from entk.pipeline.experiments import resolve_experiments
    from entk.pipeline.lm_config import resolve as resolve_language_models

    experiments, errors = resolve_experiments(config, basedir)
    errors += _dimension_errors(experiments)
    errors += _paper_errors(config, experiments)
    errors += resolve_language_models(config, experiments, basedir)[1]
    return experiments, errors


def load_schema(path: str | Path) -> dict:
    """The config schema in ``path`` with each registered kind's settings schema as
    ``$defs/<kind>_settings``: a kind's own object is the one source of its settings."""
    schema = yaml.safe_load(Path(path).read_text())
    schema.setdefault("$defs", {}).update({f"{name}_settings": kind.settings_schema() for name, kind in KINDS.items()})
    return schema


def check_config(config: dict, schema_path: str | Path, basedir: str = ".") -> dict:
    """The config's resolved experiments ({id: Experiment}); ``ConfigError`` naming every bad key."""
    schema = load_schema(schema_path)
    errors = config_errors(config, schema)
    experiments = {}
    if not errors:
        experiments, errors = semantic_errors(config, basedir)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
    return experiments


# --- Loading ---

# A YAML/JSON number that PyYAML leaves as a string (e.g. 1e-3, 5E+2) or that was quoted.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _duplicates(node, path: tuple = ()) -> list[str]:
    """'line L: key 'a.b' given twice (first at line F)' for every duplicate mapping key under ``node``."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                if key in seen:
                    found.append(
                        f"line {key_node.start_mark.line + 1}: key '{_key((*path, key))}' given twice "
                        f"(first at line {seen[key] + 1}); the second would silently win — keep one"
                    )
                seen.setdefault(key, key_node.start_mark.line)
            found += _duplicates(value_node, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicates(item, (*path, i))
    return found


def load_yaml_strict(path: str | Path) -> dict:
    """A YAML (or JSON) config file as a dict; ``ConfigError`` naming the file, line and key of every
    duplicate key, the file:line:column of a syntax error, or a top level that is not a mapping."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{where}: YAML syntax error: {problem} (check indentation, colons and quotes)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML syntax error: {e}") from None
    dups = _duplicates(node)
    if dups:
        raise ConfigError(f"{path}: duplicate config keys:\n  - " + "\n  - ".join(dups))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values, not a {type(data).__name__}")
    return data


def _check_experiments_map(path: str | Path, data: dict) -> None:
    """``ConfigError`` naming the file and line when a file's ``experiments`` is not a map of ids."""
    if "experiments" not in data or isinstance(data["experiments"], dict):
        return
    node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    line = next(k.start_mark.line + 1 for k, _ in node.value if k.value == "experiments")
    raise ConfigError(
        f"{path}:{line}: 'experiments' is a {type(data['experiments']).__name__}, not a map of experiment ids to "
        "entries; write each entry under its id (experiments:\n  my_id:\n    model: ...) instead of as a list item"
    )


def _merge(base: dict, update: dict) -> dict:
    """Snakemake's merge of config maps: nested maps merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def replace_sections(
    config: dict,
    files: Iterable[str | Path],
    keys: Iterable[str] = ("experiments",),
    overrides: dict | None = None,
) -> dict:
    """Make whole top-level sections come from one file rather than a merge of all; update ``config``.

    Snakemake merges config files map by map, so a later file can add or change entries of
    ``experiments`` but never remove one. For each of ``keys``, the last of ``files`` (in order of
    precedence, lowest first) that defines it supplies its whole value; ``overrides`` (the
    ``--config`` values, which Snakemake merges on top of every file) are merged in again. A key no
    file defines is left as it is. Returns ``config``, changed in place.
    """
    loaded = [load_yaml_strict(f) for f in files]
    for key in keys:
        defined = [data[key] for data in loaded if key in data]
        if not defined:
            continue
        value = copy.deepcopy(defined[-1])
        if overrides and key in overrides:
            extra = overrides[key]
            merge = isinstance(value, dict) and isinstance(extra, dict)
            value = _merge(value, extra) if merge else copy.deepcopy(extra)
        config[key] = value
    return config


def _resolve(schema: dict, root: dict) -> dict:
    """Follow local ``$ref``s ('#/$defs/name')."""
    while isinstance(schema, dict) and "$ref" in schema and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: dict) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _fits_type(value, schema: dict) -> bool:
    """Whether ``value`` has one of the schema's JSON types (no ``type`` = any)."""
    types = _types(schema)
    if not types:
        return True
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "null": lambda v: v is None,
    }
    return any(checks[t](value) for t in types if t in checks)


def _coerce(value, schema, root: dict):
    if not isinstance(schema, dict):
        return value
    schema = _resolve(schema, root)
    for sub in schema.get("allOf", []):
        value = _coerce(value, sub, root)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            branches = [_resolve(b, root) for b in schema[key]]
            # A value that already has a branch's type keeps it ("all" stays a string).
            fitting = [b for b in branches if _fits_type(value, b)] or branches
            for b in fitting:
                candidate = _coerce(value, b, root)
                if _fits_type(candidate, b):
                    value = candidate
                    break
    types = _types(schema)
    if isinstance(value, str) and "string" not in types and _NUMBER.fullmatch(value.strip()):
        number = float(value)
        if "integer" in types and number.is_integer():
            return int(number)
        if "number" in types:
            return number
    if isinstance(value, float) and "integer" in types and "number" not in types and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        props, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            subs = [props[k]] if k in props else []
            subs += [s for pattern, s in patterns.items() if re.search(pattern, str(k))]
            if not subs and isinstance(extra, dict):
                subs = [extra]
            for sub in subs:
                v = _coerce(v, sub, root)
            out[k] = v
        return out
    if isinstance(value, list):
        prefix, items = schema.get("prefixItems", []), schema.get("items")
        return [
            _coerce(v, prefix[i] if i < len(prefix) else items, root) if (i < len(prefix) or items) else v
            for i, v in enumerate(value)
        ]
    return value


def coerce_numbers(config: dict, schema: dict) -> dict:
    """A copy of ``config`` with numbers in the types ``schema`` (a JSON schema) asks for.

    Where the schema says ``number``: numeric strings such as '1e-3' (PyYAML reads an exponent without
    a dot as a string) become floats. Where it says ``integer``: integral floats (60.0) and integral
    numeric strings ('1e3') become ints. Anything else is left for the schema check to report with
    its key (e.g. 60.5 where an integer is needed). Follows properties, patternProperties,
    additionalProperties, items, prefixItems, allOf, oneOf/anyOf and local $refs.
    """
    return _coerce(copy.deepcopy(config), schema, schema)


def settle_config(config: dict, files: Iterable[str | Path], overrides: dict, schema_path: str | Path) -> dict:
    """The config the workflow runs, from Snakemake's merged ``config`` (changed in place):

    - every config file re-read strictly (file:line of duplicate keys and syntax errors);
    - ``experiments`` from the last file that defines it, whole (a one-off --configfile says
      exactly which experiments run); ``paper`` and ``language_models``, which name experiments, are
      dropped when that file has none and no --config sets them;
    - numbers in the types the schema asks for ('1e-3' → 0.001, 60.0 → 60).
    """
    files = list(files)
    loaded = [load_yaml_strict(f) for f in files]
    for f, data in zip(files, loaded, strict=True):
        _check_experiments_map(f, data)
    # Sections that name experiments follow the experiments: replaced whole, dropped where the file
    # that defines the experiments has none.
    named = ("paper", "language_models")
    replace_sections(config, files, keys=("experiments", *named), overrides=overrides)
    defining = [data for data in loaded if "experiments" in data]
    for key in named:
        if defining and key not in defining[-1] and key not in (overrides or {}):
            config.pop(key, None)
    schema = load_schema(schema_path)
    config.update(coerce_numbers(config, schema))
    # A registered kind's settings are typed by its own schema ($defs/<kind>_settings).
    for _, entry, sub in _kind_settings(config, schema):
        if "settings" in entry:
            entry["settings"] = coerce_numbers(entry["settings"], sub)
    return config


def main(paths: list[str]) -> int:
    """``python -m entk.pipeline.config FILE...``: check config files as the workflow reads them (syntax errors and
    duplicate keys with file:line); Snakemake's own reading of --configfile names no line."""
    for path in paths:
        try:
            load_yaml_strict(path)
        except (ConfigError, OSError) as e:
            print(e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
