"""gateway.aws: one boto3 client per service and region for the whole process, and one table helper."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from gateway import aws
from gateway.cache import open_backend
from gateway.config import load_settings
from gateway.limit_storage import DynamoDBStorage
from gateway.store import open_store
from tests.contract.conftest import ENDPOINT_VARIABLES, FAKE_AWS


@pytest.fixture
def fake_aws(monkeypatch):
    """Fake credentials in moto's in-process mock."""
    from moto import mock_aws

    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        yield


def test_the_store_the_counters_and_the_cache_share_one_dynamodb_client(fake_aws):
    store = open_store(load_settings({"store": "dynamodb", "aws_region": "eu-west-1"}, environ={}))
    counters = DynamoDBStorage("dynamodb://counters?region=eu-west-1")
    cache = open_backend("dynamodb://cache", "eu-west-1")
    assert store.client is counters.client is cache.client is aws.client("dynamodb", "eu-west-1")
    assert store.client.meta.region_name == "eu-west-1"
    assert aws.client("dynamodb", "us-east-1") is not store.client
    assert aws.client("ssm", "eu-west-1").meta.service_model.service_name == "ssm"


def test_threads_asking_at_once_get_the_same_client(fake_aws):
    start = threading.Barrier(8)
    got = []

    def ask():
        start.wait()
        got.append(aws.client("dynamodb", "us-east-1"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len({id(client) for client in got}) == 1


def test_a_forgotten_client_is_built_again_from_the_environment_of_now(fake_aws, monkeypatch):
    first = aws.client("dynamodb", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    assert aws.client("dynamodb", "us-east-1") is first  # a process keeps its client
    aws.forget_clients()
    assert aws.client("dynamodb", "us-east-1").meta.endpoint_url == "http://127.0.0.1:9"


def test_a_forked_child_builds_its_own_client(fake_aws):
    parent = aws.client("dynamodb", "us-east-1")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report whether it inherited the parent's client, then leave at once
        try:
            os.write(write, b"inherited" if aws._clients else b"none")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        assert answer.read() == b"none"
    os.waitpid(child, 0)
    assert aws.client("dynamodb", "us-east-1") is parent  # the parent keeps its own


def test_create_tables_creates_indexes_and_ttl_once(fake_aws):
    dynamodb = aws.client("dynamodb", "us-east-1")
    table = aws.Table("things", "thingId", ttl_attribute="expiresAt", attributes={"owner": "S", "at": "N"},
                      indexes={"ByOwner": ("owner", "at"), "ByAt": ("at", None)})
    aws.create_tables(dynamodb, [table])
    aws.create_tables(dynamodb, [table])  # idempotent
    made = dynamodb.describe_table(TableName="things")["Table"]
    assert made["KeySchema"] == [{"AttributeName": "thingId", "KeyType": "HASH"}]
    assert {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in made["GlobalSecondaryIndexes"]} == {
        "ByOwner": ["owner", "at"], "ByAt": ["at"]}
    ttl = dynamodb.describe_time_to_live(TableName="things")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expiresAt")
    aws.create_tables(dynamodb, [aws.Table("plain", "id")])
    assert not dynamodb.describe_table(TableName="plain")["Table"].get("GlobalSecondaryIndexes")
    assert dynamodb.describe_time_to_live(TableName="plain")["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


def test_importing_the_module_loads_no_boto3():
    done = subprocess.run([sys.executable, "-c", "import sys, gateway.aws; print('boto3' in sys.modules, "
                           "'botocore' in sys.modules)"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
