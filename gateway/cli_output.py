"""How ``gateway`` commands answer: a line for people, or one JSON document with ``--json``.

Every data command (all but ``serve``) takes ``--json``: the core's, and plugins' through
``gateway_register_commands`` (``tests/test_cli_json.py`` walks the command tree to check).
"""
from __future__ import annotations

import json
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
"""The ``--json`` flag of a data command; the command receives it as ``as_json``."""


def answer(as_json: bool, data: Any, text: str) -> None:
    """Print ``data`` as one JSON document when ``as_json``, else the human ``text``."""
    click.echo(json.dumps(data) if as_json else text)
