"""Every report caption renders without a docutils warning or error, as `snakemake --report` renders it:
first as a Jinja template (with the shipped config), then as reStructuredText."""

import io
import re

import jinja2
import pytest
import yaml
from docutils.core import publish_parts

from conftest import ROOT

CAPTIONS = sorted((ROOT / "report").glob("*.rst"))


class Placeholder:
    """Stands in for the job-specific parts of Snakemake's `snakemake` object (wildcards, params, …)."""

    def __getattr__(self, name):
        return Placeholder()

    def __getitem__(self, key):
        return Placeholder()

    def __str__(self):
        return "x"


class StubSnakemake(Placeholder):
    def __init__(self, config):
        self.config = config


def test_every_report_entry_has_its_caption_and_every_caption_is_used():
    rules = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))])
    named = set(re.findall(r'caption="\.\./report/([\w.]+\.rst)"', rules))
    named |= set(re.findall(r'^report: "\.\./report/([\w.]+\.rst)"', rules, re.M))
    assert named == {p.name for p in CAPTIONS}


@pytest.mark.parametrize("path", CAPTIONS, ids=lambda p: p.name)
def test_caption_renders_cleanly(path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    # StrictUndefined: a caption that names a config key the config lacks fails here, not as blank text.
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text())
    text = template.render(snakemake=StubSnakemake(config), categories={}, files={})
    messages = io.StringIO()
    publish_parts(
        text,
        source_path=str(path),
        writer="html",
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": messages},
    )
    assert not messages.getvalue(), f"docutils on {path.name}:\n{messages.getvalue()}"
