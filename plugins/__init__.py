"""The gateway's built-in plugins, registered through the same hooks a third-party plugin uses."""
