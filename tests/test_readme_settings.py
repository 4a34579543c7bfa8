"""Every setting is in the README's settings table (or, for a few, named there by its variable):
a setting is a promise the README must state, with its default."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gateway.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def table_settings() -> set[str]:
    """The names in the first column of the README's settings table."""
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}


def test_every_setting_is_in_the_settings_table():
    documented = table_settings()
    assert {"key_cache_ttl", "request_log_batch_wait_ms", "metrics_emf"} <= documented
    missing = [f.name for f in dataclasses.fields(Settings)
               if f.name not in documented and f"GATEWAY_{f.name.upper()}" not in README]
    assert missing == [], f"settings without a row in the README's settings table: {missing}"
