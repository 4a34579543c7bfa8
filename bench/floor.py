"""The floor: the thinnest Flask pass-through the gateway is measured against.

It checks one key, parses the JSON, forwards it with a pooled HTTP client and
returns the upstream's answer. Nothing else: no validation, no logging, no limits.
"""
import json
import os

import urllib3
from flask import Flask, Response, abort, request

UPSTREAM = os.environ["FLOOR_UPSTREAM"]  # e.g. http://127.0.0.1:18080/v1/chat/completions
KEY = os.environ["BENCH_KEY"]

app = Flask(__name__)
pool = urllib3.PoolManager(maxsize=256)  # one connection per call in flight, as the gateway keeps


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/v1/chat/completions")
def forward():
    if request.headers.get("Authorization") != f"Bearer {KEY}":
        abort(401)
    body = json.loads(request.get_data())
    upstream = pool.request("POST", UPSTREAM, body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"})
    return Response(upstream.data, status=upstream.status, mimetype="application/json")
