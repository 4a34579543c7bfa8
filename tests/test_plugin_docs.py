"""docs/plugins.md stays true: each of its code examples is run, registered or compared with the real files.

- Python blocks that define tests are run with pytest, as a plugin author would.
- Other Python blocks are executed as a module; those with hook implementations are
  registered in an app, which must start and answer a chat completion.
- JSON blocks are settings the gateway must accept; the INI block must match the
  example package's real setup.cfg.
"""
from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.hookspecs import hookimpl
from gateway.testing import chat, issue_key, make_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "plugins.md").read_text()
BLOCK = re.compile(r"^ *```(\w+)\n(.*?)^ *```$", re.MULTILINE | re.DOTALL)
IMPL_MARK = hookimpl.project_name + "_impl"


def blocks(language: str) -> list[str]:
    found = [body for lang, body in BLOCK.findall(DOCS) if lang == language]
    return [re.sub(r"(?m)^" + re.escape(min(re.findall(r"(?m)^ *(?=\S)", b), key=len)), "", b) for b in found]


PYTHON = blocks("python")
TEST_BLOCKS = [b for b in PYTHON if "def test_" in b]
PLUGIN_BLOCKS = [b for b in PYTHON if "def test_" not in b]


def test_the_docs_have_the_examples_this_test_runs():
    assert len(TEST_BLOCKS) == 1 and len(PLUGIN_BLOCKS) >= 9
    assert blocks("json") and blocks("ini")


@pytest.mark.parametrize("index", range(len(PLUGIN_BLOCKS)))
def test_each_plugin_example_registers_and_the_gateway_still_answers(tmp_path, monkeypatch, index):
    module = types.ModuleType(f"docs_example_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(PLUGIN_BLOCKS[index], f"docs/plugins.md example {index}", "exec"), module.__dict__)
    implementations = [name for name, value in vars(module).items() if hasattr(value, IMPL_MARK)]
    assert implementations, f"example {index} implements no hook:\n{PLUGIN_BLOCKS[index]}"
    app = make_app(tmp_path, plugins=(module,))
    response = chat(app.test_client(), issue_key(app), "hello docs")
    assert response.status_code == 200, response.get_json()


def test_the_testing_example_passes_under_pytest(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["gateway.testing"]\n')
    (tmp_path / "test_docs_example.py").write_text(TEST_BLOCKS[0])
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    expected = len(re.findall(r"^def test_", TEST_BLOCKS[0], re.MULTILINE))
    assert f"{expected} passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("index", range(len(blocks("json"))))
def test_each_settings_example_is_accepted(index):
    settings = load_settings(json.loads(blocks("json")[index]), environ={})
    assert settings.plugin_settings


def test_the_packaging_example_matches_the_real_package():
    documented, real = configparser.ConfigParser(), configparser.ConfigParser()
    documented.read_string(blocks("ini")[0])
    real.read(ROOT / "examples" / "gateway-pii-guard" / "setup.cfg")
    for section in documented.sections():
        for option, value in documented[section].items():
            assert real[section][option] == value, f"[{section}] {option}"


def test_each_hook_section_has_an_example_implementing_it():
    """Every hook of gateway/hookspecs.py has its section, and the section's example implements it."""
    from gateway import hookspecs

    hooks = {name for name in vars(hookspecs) if name.startswith("gateway_")}
    sections = dict(re.findall(r"^### (gateway_\w+)\n(.*?)(?=^##)", DOCS, re.MULTILINE | re.DOTALL))
    assert set(sections) == hooks
    for name, text in sections.items():
        examples = [body for lang, body in BLOCK.findall(text) if lang == "python"]
        assert any(f"def {name}(" in body for body in examples), f"the {name} section has no example of it"
