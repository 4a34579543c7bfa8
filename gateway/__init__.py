"""AI Model Gateway: one OpenAI-compatible API in front of many model providers.

Plugin authors write ``from gateway import hookimpl``.
"""
from gateway.hookspecs import hookimpl

__all__ = ["create_app", "hookimpl"]


def __getattr__(name: str):
    # create_app pulls in Flask and the store; importing only ``hookimpl`` stays light.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(name)
