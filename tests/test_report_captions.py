"""Every report caption renders without a docutils warning or error, as `snakemake --report` renders it:
first as a Jinja template (with the shipped config), then as reStructuredText."""

import io

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


def test_there_are_captions():
    assert len(CAPTIONS) >= 2


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
