"""How a setting is declared, once: :func:`setting` makes a dataclass field that carries its
default, its marshmallow field (type and what it accepts), its help line, an old variable name
and whether it is a secret.

From that one declaration come the validation (:func:`build`), the typed object (the dataclass
itself: :class:`gateway.config.Settings` for the core, a plugin's own class for a plugin, see
``gateway_declare_settings``), the README's settings table (:func:`settings_table`) and what
``gateway settings`` shows (:func:`setting_values`). Plugins write
``from gateway.setting_fields import setting``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from marshmallow import Schema, ValidationError
from marshmallow import fields as f

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"

T = TypeVar("T")

#: The key under which a dataclass field's metadata holds the setting's :class:`SettingMetadata`.
DECLARATION = "gateway_setting"


@dataclass(frozen=True)
class SettingMetadata:
    """What :func:`setting` records about one setting, beside its default."""

    field: f.Field
    help: str
    alias: str = ""
    secret: bool = False
    shown: str | None = None


def setting(default: Any, field: f.Field, help: str = "", *, alias: str = "", secret: bool = False,
            shown: str | None = None) -> Any:
    """Declare one setting as a dataclass field.

    :param default: its value when nothing sets it; a callable (``list``, ``dict``, a function)
        is called for each new settings object.
    :param field: the marshmallow field that parses and validates it (``validate=`` says what it
        accepts; the environment's text is parsed by it, e.g. ``f.Boolean`` takes ``"false"``).
    :param help: what it does, for the README's settings table and ``gateway settings``.
    :param alias: an older environment variable read when nothing else sets the setting.
    :param secret: never shown: not in error messages, not by ``gateway settings``.
    :param shown: the default as the table shows it, where the value itself says too little.
    """
    metadata = {DECLARATION: SettingMetadata(field, help, alias, secret, shown)}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def declarations(cls: type) -> dict[str, SettingMetadata]:
    """The settings a declaration class (made with :func:`setting`) declares, by name."""
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{cls!r} is not a settings declaration: make it a dataclass whose fields use "
                          "gateway.setting_fields.setting")
    found = {}
    for item in dataclasses.fields(cls):
        if DECLARATION not in item.metadata:
            raise ConfigError(f"{cls.__qualname__}.{item.name} is not declared with gateway.setting_fields.setting")
        found[item.name] = item.metadata[DECLARATION]
    return found


@functools.cache
def _schema(cls: type) -> Schema:
    """The marshmallow schema of ``cls``'s settings (built once per class)."""
    return Schema.from_dict({name: d.field for name, d in declarations(cls).items()},
                            name=f"{cls.__name__}Schema")()


class CommaList(f.List):
    """A list that also accepts a comma-separated string (the environment's form)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return super()._deserialize(value, attr, data, **kwargs)


class JSONMapping(f.Dict):
    """A mapping that also accepts a JSON object string (the environment's form)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValidationError(f"not valid JSON: {exc}") from exc
        return super()._deserialize(value, attr, data, **kwargs)


def label(name: str) -> str:
    """A setting's name with its environment variable, as messages name it."""
    return f"{name} ({ENV_PREFIX}{name.upper()})"


def _describe(errors: dict, source: Mapping[str, Any], secret: Callable[[str], bool]) -> str:
    """One line naming each rejected setting, its value unless ``secret(name)``, and what it accepts."""
    parts = []
    for name, messages in sorted(errors.items()):
        text = "; ".join(m if isinstance(m, str) else json.dumps(m) for m in
                         (messages if isinstance(messages, list) else [messages]))
        shown = name in source and not secret(name)
        parts.append(f"{label(name)} = {source.get(name)!r}: {text}" if shown else f"{label(name)}: {text}")
    return "invalid settings: " + ", ".join(parts)


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of the declaration class ``cls`` from raw ``values`` (the environment's text, a
    config file's JSON...), each validated by its field; :class:`ConfigError` naming each bad one."""
    if not values:  # all defaults: no schema to build (~0.25 ms of cold start per declaration)
        return cls()
    declared = declarations(cls)
    try:
        loaded = _schema(cls).load(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.messages, values, lambda name: declared[name].secret)) from None
    return cls(**loaded)


def _shown_default(name: str, cls: type) -> str:
    """A setting's default as the settings table shows it."""
    declaration = declarations(cls)[name]
    if declaration.shown is not None:
        return declaration.shown
    item = next(item for item in dataclasses.fields(cls) if item.name == name)
    value = item.default if item.default_factory is dataclasses.MISSING else item.default_factory()
    if value in ("", [], {}):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"`{value}`" if isinstance(value, str) else str(value)


def settings_table(owned: Iterable[tuple[str, type]]) -> str:
    """The Markdown table of the settings each ``(owner, declaration class)`` declares (the README's)."""
    lines = ["| setting | default | owner | |", "|---|---|---|---|"]
    for owner, cls in owned:
        for name, declaration in declarations(cls).items():
            also = f" (also `{declaration.alias}`)" if declaration.alias else ""
            lines.append(f"| `{name}` | {_shown_default(name, cls)} | {owner} | {declaration.help}{also} |")
    return "\n".join(lines)


def setting_values(owned: Iterable[tuple[str, type]], loaded: Mapping[type, Any]) -> list[dict[str, Any]]:
    """Each declared setting's name, owner, value (``"***"`` for a secret) and help, for ``gateway settings``."""
    return [{"name": name, "owner": owner, "help": declaration.help,
             "value": "***" if declaration.secret else getattr(loaded[cls], name)}
            for owner, cls in owned for name, declaration in declarations(cls).items()]
