"""The plugins' declarations (``gateway_declare``), merged once at start-up.

The core assembles its contracts from them: the permissions a key may hold, the request
options the completion schemas validate, the native answer's fields, the answer headers
(documented and exposed to browsers), the metric dimensions of plugins' own records, and the
answer checks with their metrics.
Nothing here runs per request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.types import CORE_PERMISSIONS, Declaration


@dataclass
class Declarations:
    """Every plugin's :class:`Declaration`, merged (``gateway.declared``)."""

    permissions: tuple[str, ...] = CORE_PERMISSIONS
    request_options: dict[str, Any] = field(default_factory=dict)
    answer_fields: dict[str, Any] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    recorded_models: dict[str, frozenset[str]] = field(default_factory=dict)
    answer_checks: dict[str, str] = field(default_factory=dict)

    def add(self, plugin: str, declaration: Declaration) -> None:
        """Merge ``plugin``'s declaration; a name another plugin declared already stops start-up
        (permissions and recorded models may be shared)."""
        if not isinstance(declaration, Declaration):
            raise ConfigError(f"plugin {plugin!r}: gateway_declare must return a gateway.types.Declaration, "
                              f"not {type(declaration).__name__}")
        self.permissions += tuple(p for p in declaration.permissions if p not in self.permissions)
        for what, mine, theirs in (("request option", self.request_options, declaration.request_options),
                                   ("answer field", self.answer_fields, declaration.answer_fields),
                                   ("response header", self.response_headers, declaration.response_headers),
                                   ("answer check", self.answer_checks, declaration.answer_checks)):
            clash = sorted(set(mine) & set(theirs))
            if clash:
                raise ConfigError(f"plugin {plugin!r} declares the {what} {', '.join(clash)}, which another "
                                  "plugin declared already")
            mine.update(theirs)
        for provider, models in declaration.recorded_models.items():
            self.recorded_models[provider] = self.recorded_models.get(provider, frozenset()) | frozenset(models)


def collect(pm, gateway) -> Declarations:
    """Ask every ``gateway_declare`` implementation, in pluggy's order, and merge the answers."""
    declared = Declarations()
    for impl in reversed(pm.hook.gateway_declare.get_hookimpls()):
        declaration = impl.function(**dict.fromkeys(impl.argnames, gateway))
        if declaration is not None:
            declared.add(impl.plugin_name, declaration)
    return declared
