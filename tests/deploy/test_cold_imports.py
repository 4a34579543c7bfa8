"""A cold start imports no heavy SDK: openai and boto3 load where first used, not with the app.

(On Lambda Zappa's handler imports boto3 itself; the gateway must not add openai, and
must not need boto3 unless the DynamoDB store or remote settings are configured: botocore's
sessions and clients stay unloaded.)
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.lambda_harness import ROOT, base_environment, local_environment

PROBE = """
import json, sys
import gateway.wsgi
from plugins.apikey import create_key
app = gateway.wsgi.app
key = create_key(app.extensions["gateway"], "cold", "free")[0]
answer = app.test_client().post("/v1/chat/completions", headers={"X-API-Key": key},
                                json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
heavy = sorted(({name.split(".")[0] for name in sys.modules} & {"openai", "boto3", "httpx", "pydantic"})
               | ({"botocore.session", "botocore.client"} & set(sys.modules)))
print("PROBE " + json.dumps({"status": answer.status_code, "heavy": heavy}))
"""


def test_first_completion_loads_no_heavy_sdk(tmp_path):
    environment = {**base_environment(tmp_path), **local_environment("dev", tmp_path / "gateway.db"),
                   "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=environment, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probe = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))  # EMF lines share stdout
    assert json.loads(probe.removeprefix("PROBE ")) == {"status": 200, "heavy": []}


GC_PROBE = """
import gc, json, sys
try:
    import gateway.wsgi
    built = True
except Exception:
    built = False
print("PROBE " + json.dumps({"built": built, "collecting": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def gc_probe(tmp_path, **environment) -> dict:
    done = subprocess.run([sys.executable, "-c", GC_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**base_environment(tmp_path), **local_environment("dev", tmp_path / "gateway.db"),
                               "PYTHONPATH": str(ROOT), **environment})
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])


def test_building_the_app_leaves_the_collector_on_with_start_up_objects_frozen(tmp_path):
    probe = gc_probe(tmp_path)
    assert probe["built"] and probe["collecting"] and probe["frozen"] > 10_000


def test_a_failed_build_leaves_the_collector_on(tmp_path):
    probe = gc_probe(tmp_path, GATEWAY_STORE="not-a-store")
    assert not probe["built"] and probe["collecting"]


LAZY_PROBE = """
import json, sys
import gateway.wsgi
from plugins.apikey import create_key
app = gateway.wsgi.app
key = create_key(app.extensions["gateway"], "cold", "free", permissions=["completions", "admin"])[0]
client = app.test_client()
lazy = ("gateway.openapi", "apispec", "plugins.mcp_server", "plugins.catalog_admin", "plugins.catalog_search")
answer = client.post("/v1/chat/completions", headers={"X-API-Key": key},
                     json={"model": "echo", "messages": [{"role": "user", "content": "a red running shoe"}]})
before = sorted(set(lazy) & set(sys.modules))
document = client.get("/openapi.json").status_code
removed = client.delete("/api/v1/admin/catalog/products/no-such-product", headers={"X-API-Key": key}).status_code
after = sorted(set(lazy) & set(sys.modules))
print("PROBE " + json.dumps({"status": answer.status_code, "before": before, "document": document,
                             "removed": removed, "after": after}))
"""


def test_routes_a_first_completion_never_calls_load_with_their_first_request(tmp_path):
    done = subprocess.run([sys.executable, "-c", LAZY_PROBE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**base_environment(tmp_path),
                                            **local_environment("dev", tmp_path / "gateway.db"),
                                            "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe == {"status": 200, "before": [], "document": 200, "removed": 404,
                     "after": ["apispec", "gateway.openapi", "plugins.catalog_admin", "plugins.catalog_search"]}
