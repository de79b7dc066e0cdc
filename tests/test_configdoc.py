"""config/README.md is generated from the schema's descriptions (entk.pipeline.configdoc) and stays in sync."""

from conftest import ROOT
from entk.pipeline.config import load_schema
from entk.pipeline.configdoc import COMMAND, missing_descriptions, render, rows

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
DOC = ROOT / "config" / "README.md"

# A planted schema with every construct the renderer follows: nesting, a map of objects, a list
# of objects, a $ref, branch properties (oneOf) and an undescribed key.
PLANTED = {
    "description": "Top.",
    "type": "object",
    "required": ["seed", "runs"],
    "$defs": {"rate": {"type": "number", "exclusiveMinimum": 0, "description": "A step size."}},
    "properties": {
        "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "Random seed."},
        "runs": {
            "type": "object",
            "description": "Runs by name.",
            "propertyNames": {"pattern": "^[a-z]+$"},
            "additionalProperties": {
                "type": "object",
                "description": "One run.",
                "required": ["lr"],
                "properties": {
                    "lr": {"$ref": "#/$defs/rate"},
                    "layers": {
                        "description": "all | names",
                        "oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}],
                    },
                },
                "oneOf": [{"properties": {"beta": {"type": "number", "description": "Only for some runs."}}}],
            },
        },
        "views": {
            "type": "array",
            "minItems": 1,
            "description": "Views.",
            "items": {"type": "object", "properties": {"k": {"type": "integer", "maximum": 9}}},
        },
    },
}


def test_rows_follow_every_construct():
    got = [(row.path, row.required) for row in rows(PLANTED)]
    assert got == [
        ("seed", True),
        ("runs", True),
        ("runs.<name>", False),
        ("runs.<name>.lr", True),
        ("runs.<name>.layers", False),
        ("runs.<name>.beta", False),
        ("views", False),
        ("views[].k", False),
    ]
    assert missing_descriptions(PLANTED) == ["views[].k"]


def test_render_writes_one_row_per_key():
    lines = render(PLANTED).splitlines()
    assert lines[0] == "# Configuration reference" and "Top." in lines
    table = [line for line in lines if line.startswith("| `")]
    assert table[0] == "| `seed` | integer | yes | `0` | ≥ 0 | Random seed. |"
    assert "| `runs` | map | yes |  | names match `^[a-z]+$` | Runs by name. |" in table
    assert "| `runs.<name>.lr` | number | yes |  | > 0 | A step size. |" in table  # via $ref
    # a literal | would split the markdown cell
    assert '| `runs.<name>.layers` | `"all"` \\| list of string |  |  |  | all \\| names |' in table
    assert "| `views` | list of object |  |  | at least 1 items | Views. |" in table
    assert len(table) == 8


def test_every_config_key_has_a_description():
    missing = missing_descriptions(load_schema(SCHEMA))
    assert not missing, f"add a description to these keys of {SCHEMA.name}: {', '.join(missing)}"


def test_committed_config_doc_is_current():
    assert DOC.exists(), f"generate it: {COMMAND}"
    assert DOC.read_text() == render(load_schema(SCHEMA)), f"stale; regenerate: {COMMAND}"
