"""Fixtures for the deployment tests: the templates, fake AWS credentials, and stacks created in moto."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "cloudformation"
STAGE = "dev"

#: Stacks in deployment order (docs/deploy.md). waf.yaml comes after `zappa deploy` and moto has no WAFv2.
MOTO_STACKS = ("security", "data", "access", "parameters", "observability")


def template(name: str) -> dict:
    """A template as a dict, short-form tags (!Sub, !Ref …) expanded to their Fn:: forms."""
    from cfnlint.decode import decode

    loaded, problems = decode(str(TEMPLATES / f"{name}.yaml"))
    assert not problems, problems
    return loaded


def resources_of(loaded: dict, resource_type: str) -> dict[str, dict]:
    """The template's resources of one type, by logical id."""
    return {name: body for name, body in loaded["Resources"].items() if body["Type"] == resource_type}


@pytest.fixture(scope="module")
def aws_environment():
    """Fake credentials and region, no endpoint override, no profile: AWS is never reached."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ENDPOINT_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in FAKE_AWS.items():
            patch.setenv(name, value)
        yield


def create_stacks(stage: str = STAGE, stacks: tuple[str, ...] = MOTO_STACKS) -> dict[str, dict[str, str]]:
    """Create the stacks through moto's CloudFormation; returns each stack's outputs.

    moto's CloudFormation creates the resources but ignores some of their properties;
    ``TimeToLiveSpecification`` is one the app relies on, so it is applied from the
    template here exactly as CloudFormation would.
    """
    import boto3

    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    outputs: dict[str, dict[str, str]] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not supported by moto's CloudFormation")
        for name in stacks:
            cloudformation.create_stack(
                StackName=f"ai-gateway-{stage}-{name}", TemplateBody=(TEMPLATES / f"{name}.yaml").read_text(),
                Parameters=[{"ParameterKey": "Stage", "ParameterValue": stage}],
                Capabilities=["CAPABILITY_NAMED_IAM"])
            stack = cloudformation.describe_stacks(StackName=f"ai-gateway-{stage}-{name}")["Stacks"][0]
            assert stack["StackStatus"] == "CREATE_COMPLETE", (name, stack.get("StackStatusReason"))
            outputs[name] = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "data" in stacks:
        _apply_ttl(stage)
    return outputs


def _apply_ttl(stage: str) -> None:
    import boto3

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    for table in resources_of(template("data"), "AWS::DynamoDB::Table").values():
        ttl = table["Properties"].get("TimeToLiveSpecification")
        if ttl:
            name = table["Properties"]["TableName"]["Fn::Sub"].replace("${Stage}", stage)
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "Enabled": ttl["Enabled"], "AttributeName": ttl["AttributeName"]})


@pytest.fixture(scope="module")
def stacks(aws_environment):
    """The stage's stacks created in one moto account for the module; yields their outputs."""
    from moto import mock_aws

    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        yield create_stacks()
