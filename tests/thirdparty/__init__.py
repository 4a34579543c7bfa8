"""Third-party plugins that replace the built-in ``apikey`` and ``mcp``, written against the documented hooks only."""
