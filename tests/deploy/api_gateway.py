"""API Gateway (REST, v1 proxy events) in front of a Lambda container, as far as a first deploy needs it.

moto creates the API's resources and methods from cloudformation/api.yaml but does not
serve them, and skips its authorizer, gateway responses and stage. :class:`RestApi` does
what API Gateway does with them: it routes a request to a resource and method *as moto
holds them* (most specific path first, ``{proxy+}`` last), calls the REQUEST authorizer
for a ``CUSTOM`` method (uncached: api.yaml's TTL is 0), answers a Deny or a failed
authorizer with the template's gateway response, passes an Allow's context to the
function, and writes an access-log line in the stage's format.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from tests.deploy.lambda_harness import proxy_event

CONTAINER = Path(__file__).with_name("lambda_container.py")


class LambdaContainer:
    """One execution environment of the function: a fresh ``python -S`` on the package's code, kept
    running between invocations as Lambda keeps a warm container; its output is the function's log."""

    def __init__(self, code_paths: list[Path], environment: dict[str, str], log: Path):
        self.log = log
        read, write = os.pipe()
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-S", str(CONTAINER), str(write)], stdin=subprocess.PIPE, stdout=output,
                stderr=subprocess.STDOUT, pass_fds=(write,), cwd=code_paths[0], text=True,
                env={**environment, "PYTHONDONTWRITEBYTECODE": "1",
                     "PYTHONPATH": os.pathsep.join(map(str, code_paths))})
        os.close(write)
        self.answers = os.fdopen(read)

    def invoke(self, event: dict) -> dict:
        """The handler's answer to ``event``: ``{"result": ...}`` or ``{"error": ...}``."""
        self.process.stdin.write(json.dumps(event) + "\n")
        self.process.stdin.flush()
        line = self.answers.readline()
        if not line:
            raise RuntimeError(f"the function's process ended: {self.log.read_text()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        """End the process (as Lambda recycles an environment)."""
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.answers.close()

    def output(self) -> str:
        """Everything the function printed and logged so far."""
        return self.log.read_text()


@dataclass
class Answer:
    """What the client receives."""

    status: int
    headers: dict[str, str]
    body: str
    #: How far the request got: "function", "authorizer" (refused there) or "gateway" (no route).
    reached: str = "function"

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class RestApi:
    """One deployed stage of a REST API, its routes read from moto and its settings from the template."""

    client: object  # boto3 apigateway client
    api_id: str
    stage: str
    template: dict
    container: LambdaContainer
    account: str = "123456789012"
    region: str = "us-east-1"
    access_log: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.routes = {r["path"]: r.get("resourceMethods", {})
                       for r in self.client.get_resources(restApiId=self.api_id, embed=["methods"])["items"]}
        properties = {body["Type"]: body["Properties"] for body in self.template["Resources"].values()}
        self.responses = {body["Properties"]["ResponseType"]: body["Properties"]
                          for body in self.template["Resources"].values()
                          if body["Type"] == "AWS::ApiGateway::GatewayResponse"}
        self.log_format = properties["AWS::ApiGateway::Stage"]["AccessLogSetting"]["Format"]

    def _route(self, method: str, path: str) -> tuple[str, dict] | None:
        """The resource and method API Gateway picks: an exact path, else the greedy ``{proxy+}`` one."""
        candidates = [path] if path in self.routes else []
        candidates += sorted((p for p in self.routes if p.endswith("/{proxy+}")
                              and path.startswith(p.removesuffix("{proxy+}")) and path != p.removesuffix("/{proxy+}")),
                             key=len, reverse=True)
        for resource in candidates:
            methods = self.routes[resource]
            if method in methods or "ANY" in methods:
                return resource, methods.get(method) or methods["ANY"]
        return None

    def request(self, method: str, path: str, headers: dict | None = None, body: dict | None = None) -> Answer:
        """Send one request through the stage; returns the client's answer."""
        request_id = str(uuid.uuid4())
        context = {"requestId": request_id, "httpMethod": method, "path": f"/{self.stage}{path}",
                   "identity.sourceIp": "203.0.113.9"}
        routed = self._route(method, path)
        if routed is None:
            return self._gateway_response("DEFAULT_4XX", 403, context, "gateway")
        resource, settings = routed
        event = proxy_event(method, path, body, headers, stage=self.stage)
        event["resource"] = event["requestContext"]["resourcePath"] = resource
        event["requestContext"]["requestId"] = request_id
        if settings["authorizationType"] == "CUSTOM":
            method_arn = (f"arn:aws:execute-api:{self.region}:{self.account}:{self.api_id}/{self.stage}/"
                          f"{method}{path}")
            authorizer_event = {"type": "REQUEST", "methodArn": method_arn,
                                **{k: v for k, v in event.items() if k not in ("body", "isBase64Encoded")}}
            outcome = self.container.invoke(authorizer_event)
            if "error" in outcome:
                return self._gateway_response("AUTHORIZER_FAILURE", 500, context, "authorizer")
            policy = outcome["result"]
            context.update({f"authorizer.{k}": v for k, v in policy.get("context", {}).items()})
            context["authorizer.principalId"] = policy["principalId"]
            if not _allows(policy, method_arn):
                return self._gateway_response("ACCESS_DENIED", 403, context, "authorizer")
            event["requestContext"]["authorizer"] = {**policy.get("context", {}), "principalId": policy["principalId"]}
        outcome = self.container.invoke(event)
        if "error" in outcome:
            return self._gateway_response("DEFAULT_5XX", 502, context, "function")
        result = outcome["result"]
        answer = Answer(result["statusCode"], {k.lower(): v[-1] for k, v in result["multiValueHeaders"].items()},
                        result.get("body") or "")
        self._log(context, answer)
        return answer

    def _gateway_response(self, kind: str, default_status: int, context: dict, reached: str) -> Answer:
        """API Gateway's own answer of type ``kind``: the template's, or its DEFAULT_4XX/5XX."""
        response = self.responses.get(kind) or self.responses["DEFAULT_5XX" if default_status >= 500 else "DEFAULT_4XX"]
        status = int(response.get("StatusCode", default_status))
        headers = {name.removeprefix("gatewayresponse.header.").lower(): _value(source, context)
                   for name, source in response.get("ResponseParameters", {}).items()}
        body = _render(response["ResponseTemplates"]["application/json"], {
            **context, "error.messageString": json.dumps(kind), "error.responseType": kind})
        answer = Answer(status, headers, body, reached)
        self._log({**context, "error.responseType": kind}, answer)
        return answer

    def _log(self, context: dict, answer: Answer) -> None:
        line = _render(self.log_format, {**context, "status": str(answer.status),
                                         "responseLength": str(len(answer.body))})
        self.access_log.append(json.loads(line))


def _allows(policy: dict, method_arn: str) -> bool:
    """IAM's evaluation of an authorizer policy for one method: an explicit Deny wins, else an Allow."""
    matching = [s for s in policy["policyDocument"]["Statement"]
                if s["Action"] in ("execute-api:Invoke", "execute-api:*")
                and any(fnmatch(method_arn, r) for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                           else s["Resource"]))]
    return bool(matching) and all(s["Effect"] == "Allow" for s in matching)


def _value(source: str, context: dict) -> str:
    """A gateway response parameter: a quoted literal, or ``context.NAME``."""
    if source.startswith("'"):
        return source.strip("'")
    return str(context.get(source.removeprefix("context."), ""))


def _render(text: str, context: dict) -> str:
    """``$context.NAME`` replaced as API Gateway does in templates and log formats ("-" when unset)."""
    return re.sub(r"\$context\.([\w.]+)", lambda m: str(context.get(m.group(1), "-")), text)
