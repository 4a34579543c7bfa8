"""The ``store`` fixture: one contract suite, run against every store adapter.

- ``sqlite``: SQLiteStore on a file in ``tmp_path``.
- ``dynamodb-moto``: DynamoDBStore on moto's in-process mock (``mock_aws``).
- ``dynamodb-server``: DynamoDBStore on a moto server in a separate process, reached
  through ``AWS_ENDPOINT_URL`` (the variable boto3 honours itself); each test gets
  its own tables through a unique ``table_prefix``.

Every store is built by ``open_store(load_settings(...))``, so the factory is exercised too.
"""
from __future__ import annotations

import uuid

import pytest

from gateway.config import load_settings
from gateway.store import open_store
from tests.fakes import servers

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """The endpoint URL of a moto server running in its own process for the session."""
    with servers.moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def _dynamodb_settings():
    return load_settings({"store": "dynamodb", "stage": "dev", "aws_region": "us-east-1",
                          "table_prefix": f"t{uuid.uuid4().hex[:12]}"}, environ={})


@pytest.fixture(params=["sqlite", "dynamodb-moto", "dynamodb-server"])
def store(request, tmp_path, monkeypatch):
    """An initialised, empty store of each adapter."""
    if request.param == "sqlite":
        from gateway.store.sqlite import SQLiteStore

        built = open_store(load_settings({"store": "sqlite", "sqlite_path": str(tmp_path / "gateway.db")},
                                         environ={}))
        assert isinstance(built, SQLiteStore)
        built.init()
        yield built
        return

    from gateway.store.dynamodb import DynamoDBStore

    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    if request.param == "dynamodb-server":
        monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_server"))
        built = open_store(_dynamodb_settings())
        assert isinstance(built, DynamoDBStore)
        assert built.client.meta.endpoint_url == request.getfixturevalue("moto_server")
        built.init()
        yield built
        return

    from moto import mock_aws

    # Backends are still reset per test; keeping boto3's default session saves reloading
    # its service models for every test.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        built = open_store(_dynamodb_settings())
        assert isinstance(built, DynamoDBStore)
        assert built.client.meta.endpoint_url == "https://dynamodb.us-east-1.amazonaws.com"
        built.init()
        yield built
