"""The gateway's test helpers: make_app, issue_key, chat, FakeProvider and the gateway_* fixtures."""
pytest_plugins = ["gateway.testing"]
