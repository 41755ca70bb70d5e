"""Every generated config (nftables, CNI conflists, the graph page) is a Jinja2 template in templates/.

Environments are made once per process and kept: compiling a template costs
tens of milliseconds, and a lab renders the same templates once per node.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@functools.cache
def environment(*, trim: bool = False, html: bool = False) -> jinja2.Environment:
    """`trim`: drop the newline after a block tag and the indentation before it (for nft text);
    `html`: autoescape."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        trim_blocks=trim,
        lstrip_blocks=trim,
        keep_trailing_newline=True,
    )


def render(template: str, /, *, trim: bool = False, html: bool = False, **variables: object) -> str:
    return environment(trim=trim, html=html).get_template(template).render(**variables)
