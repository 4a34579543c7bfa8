"""docs/deploy.md says what the templates do: what survives a stack deletion, the stacks and their order."""
from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import ROOT, TEMPLATES, resources_of, template

GUIDE = (ROOT / "docs" / "deploy.md").read_text()


def _section(title: str) -> str:
    return GUIDE.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[2:]  # past the header and its rule


def _describe(stack: str, loaded: dict, logical_id: str, body: dict) -> str:
    """How the guide names a retained resource."""
    properties = body["Properties"]
    if body["Type"] == "AWS::DynamoDB::Table":
        return f"table `{properties['TableName']['Fn::Sub'].removeprefix('ai-gateway-${Stage}-')}`"
    if body["Type"] == "AWS::SecretsManager::Secret":
        return f"secret `{properties['Name']['Fn::Sub'].replace('${Stage}', 'STAGE')}`"
    if body["Type"] == "AWS::KMS::Key":
        [alias] = [a["Properties"]["AliasName"]["Fn::Sub"] for a in resources_of(loaded, "AWS::KMS::Alias").values()
                   if a["Properties"]["TargetKeyId"] == {"Ref": logical_id}]
        return f"KMS key `{alias.replace('${Stage}', 'STAGE')}`"
    if stack == "api" and body["Type"] in ("AWS::IAM::Role", "AWS::ApiGateway::Account"):
        return "API Gateway's logging role and account setting"
    raise AssertionError(f"{stack}.{logical_id}: a retained resource the guide's table does not describe")


def test_the_guides_table_of_what_survives_is_the_templates_retained_resources():
    retained = set()
    for path in TEMPLATES.glob("*.yaml"):
        loaded = template(path.stem)
        for logical_id, body in loaded["Resources"].items():
            if body.get("DeletionPolicy") == "Retain":
                assert body.get("UpdateReplacePolicy") == "Retain", logical_id  # a replacement loses nothing either
                retained.add((_describe(path.stem, loaded, logical_id, body), path.stem))
    rows = _table_rows(_section("What survives a stack deletion"))
    assert {(resource, stack.strip("`")) for resource, stack, _ in rows} == retained
    assert all(policy.startswith("Retain") for _, _, policy in rows)
    assert len(retained) == 6


def test_the_stack_table_lists_every_template_in_the_deploy_order():
    rows = _table_rows(GUIDE.split("\n## Prerequisites", 1)[0])
    listed = [row[1].strip("`").removesuffix(".yaml") for row in rows]
    assert sorted(listed) == sorted(p.stem for p in TEMPLATES.glob("*.yaml"))
    steps = re.findall(r"^deploy (\w+)", _section("First deploy"), flags=re.MULTILINE)
    assert steps == listed  # the table's order is the order the guide deploys in
    first_deploy = _section("First deploy")
    assert first_deploy.index("zappa deploy") < first_deploy.index("deploy api")


@pytest.mark.parametrize("stale", ["us-east-1", "token_header", "zappa certify", "lambda_concurrency\": 200"])
def test_the_guide_names_nothing_the_deployment_no_longer_has(stale):
    assert stale not in GUIDE
