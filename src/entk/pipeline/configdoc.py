"""The config reference (config/README.md), generated from the JSON schema's ``description`` fields.

The schema (with each kind's settings from the kind itself, ``entk.pipeline.config.load_schema``)
is the one place a key is described, so the reference cannot drift from what the
workflow validates: ``python -m entk.pipeline.configdoc schemas/config.schema.yaml > config/README.md``
regenerates it, and tests/test_configdoc.py fails when the committed file is stale or a key has no
description.

Every key becomes one row, named by its dotted path: ``a.b`` for a nested property, ``a.<name>``
for an entry of a map (``additionalProperties``) and ``a[]`` for the elements of a list of objects.
``$ref`` (to ``#/...``) is followed, and the properties of ``allOf`` / ``anyOf`` / ``oneOf`` /
``if``-``then``-``else`` branches are listed under the same path.
"""

import json
import sys
from collections.abc import Iterator
from typing import NamedTuple

from entk.pipeline.config import load_schema

COMMAND = "python -m entk.pipeline.configdoc schemas/config.schema.yaml > config/README.md"
BRANCHES = ("allOf", "anyOf", "oneOf", "then", "else")


class Row(NamedTuple):
    path: str
    schema: dict  # the key's schema, $ref resolved
    required: bool


def resolve(schema: dict, root: dict, seen: frozenset = frozenset()) -> dict:
    """``schema`` with a local ``$ref`` replaced by its target (sibling keywords win, as in 2020-12)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not ref.startswith("#/") or ref in seen:
        raise ValueError(f"cannot follow $ref {ref!r} (only acyclic references inside the schema)")
    target = root
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    merged = {**resolve(target, root, seen | {ref}), **schema}
    del merged["$ref"]
    return merged


def rows(schema: dict, root: dict | None = None, prefix: str = "") -> Iterator[Row]:
    """One Row per key below ``schema``, depth first, in the schema's order."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        sub = resolve(sub, root)
        yield Row(path, sub, name in required)
        yield from rows(sub, root, path)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        path = f"{prefix}.<name>" if prefix else "<name>"
        extra = resolve(extra, root)
        yield Row(path, extra, False)
        yield from rows(extra, root, path)
    items = schema.get("items")
    if isinstance(items, dict) and _has_keys(resolve(items, root), root):
        yield from rows(items, root, f"{prefix}[]")
    for keyword in BRANCHES:
        branches = schema.get(keyword, [])
        for branch in [branches] if isinstance(branches, dict) else branches:
            yield from rows(branch, root, prefix)


def _has_keys(schema: dict, root: dict) -> bool:
    return next(rows(schema, root), None) is not None


def missing_descriptions(schema: dict) -> list[str]:
    """The paths of the keys that have no ``description``."""
    parts = [("", schema), *((f"settings of kind {k}.", v) for k, v in kind_settings(schema).items())]
    return sorted(
        {
            label + row.path
            for label, part in parts
            for row in rows(part, schema)
            if not str(row.schema.get("description", "")).strip()
        }
    )


def _value(value) -> str:
    return f"`{json.dumps(value)}`"


def type_text(schema: dict, root: dict) -> str:
    """A short type such as ``integer``, ``list of number``, ``map``, or alternatives joined by ``|``."""
    schema = resolve(schema, root)
    if "const" in schema:
        return _value(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_value(v) for v in schema["enum"])
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema and "type" not in schema:
            return " | ".join(type_text(branch, root) for branch in schema[keyword])
    kind = schema.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"list of {type_text(schema['items'], root)}"
    if kind == "object" and "properties" not in schema and isinstance(schema.get("additionalProperties"), dict):
        return "map"
    return kind


CONSTRAINTS = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minProperties": "at least {} entries",
    "minLength": "at least {} characters",
    "pattern": "matches `{}`",
}


def constraint_text(schema: dict, root: dict) -> str:
    """The value's bounds, its list elements' bounds after ``elements``, and the map keys' pattern."""
    parts = [template.format(schema[key]) for key, template in CONSTRAINTS.items() if key in schema]
    if schema.get("uniqueItems"):
        parts.append("no repeats")
    names = schema.get("propertyNames", {})
    if "pattern" in names:
        parts.append(f"names match `{names['pattern']}`")
    items = schema.get("items")
    if isinstance(items, dict):
        inner = constraint_text(resolve(items, root), root)
        if inner:
            parts.append(f"elements {inner}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(part: dict, root: dict, prefix: str = "") -> list[str]:
    """Markdown table lines, one row per key below ``part``."""
    lines = ["| key | type | required | default | allowed | description |", "| --- | --- | --- | --- | --- | --- |"]
    seen = set()
    for row in rows(part, root, prefix):
        default = _value(row.schema["default"]) if "default" in row.schema else ""
        cells = [
            f"`{row.path}`",
            type_text(row.schema, root),
            "yes" if row.required else "",
            default,
            constraint_text(row.schema, root),
            row.schema.get("description", ""),
        ]
        line = "| " + " | ".join(_cell(c) for c in cells) + " |"
        if line not in seen:  # the same key described alike in two branches is listed once
            seen.add(line)
            lines.append(line)
    return lines


def kind_settings(schema: dict) -> dict[str, dict]:
    """{kind: its settings schema} from the ``$defs`` named ``<kind>_settings``."""
    return {k.removesuffix("_settings"): v for k, v in schema.get("$defs", {}).items() if k.endswith("_settings")}


def render(schema: dict) -> str:
    """The markdown reference of ``schema``: its description, one table row per key, then a table of
    each model kind's settings (``$defs/<kind>_settings``)."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the schema's descriptions by `{COMMAND}`; edit the schema, not this file.",
        "",
    ]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    lines += _table(schema, schema)
    for kind, part in kind_settings(schema).items():
        lines += ["", f"## Settings of kind `{kind}`", ""]
        if part.get("description"):
            lines += [_cell(part["description"]), ""]
        lines += _table(part, schema, "experiments.<name>.settings")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: {COMMAND}", file=sys.stderr)
        return 2
    schema = load_schema(argv[0])
    missing = missing_descriptions(schema)
    if missing:
        print("keys without a description in the schema:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    sys.stdout.write(render(schema))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
