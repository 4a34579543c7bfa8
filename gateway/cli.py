"""The ``gateway`` command, on Flask's click CLI.

Plugins add commands through ``gateway_register_commands`` (``gateway keys`` is the
apikey plugin's). A bad setting, argument or file ends the command with one line
saying what to fix, and a non-zero exit.
"""
from __future__ import annotations

import os
import shutil
import sys
import textwrap

import click
from flask.cli import FlaskGroup, with_appcontext

from gateway.cli_output import answer, json_option
from gateway.config import load_settings
from gateway.errors import ConfigError, GatewayError
from gateway.plugins import build_plugin_manager


def _create_app():
    """The app a command works on. Its start-up lines (``gateway ready``) would precede every data
    command's answer, so those log warnings and errors only unless ``GATEWAY_LOG_LEVEL`` says; ``serve``
    keeps the configured level (``--reload``'s access lines)."""
    from gateway.app import create_app

    context = click.get_current_context(silent=True)
    serving = context is not None and context.info_name == "serve"
    quiet = {} if serving or os.environ.get("GATEWAY_LOG_LEVEL") else {"log_level": "WARNING"}
    try:
        return create_app(quiet)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _current_gateway():
    from gateway.app import current_gateway

    return current_gateway()


def build_cli(pm) -> click.Group:
    """The ``gateway`` group with the core commands and every plugin's."""
    cli = FlaskGroup(create_app=_create_app, add_default_commands=False, load_dotenv=False,
                     help="AI Model Gateway: serve, manage keys and the catalog, inspect plugins.")

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
                  help="Worker processes (one per core).")
    @click.option("--threads", default=256, show_default=True, type=click.IntRange(1, 4096),
                  help="Calls in flight per worker.")
    @click.option("--reload", is_flag=True, help="Development server that restarts on code changes.")
    @with_appcontext
    def serve(host, port, workers, threads, reload):
        """Serve the gateway (granian, see gateway/serving.py; --reload for development)."""
        from flask import current_app

        from gateway.serving import serve as serve_with_granian

        if reload:  # werkzeug's own server: Flask's app.run() does nothing under its CLI
            from werkzeug.serving import run_simple

            run_simple(host, port, current_app._get_current_object(), use_reloader=True, threaded=True)
            return
        serve_with_granian(host, port, workers, threads)

    @cli.command()
    @json_option
    @with_appcontext
    def init(as_json):
        """Create the store's tables (SQLite schema or DynamoDB tables); safe to repeat."""
        gateway = _current_gateway()
        try:
            gateway.store.init()
            gateway.limiter.init()
        except Exception as exc:
            raise click.ClickException(f"cannot initialise the {gateway.settings.store} store: "
                                       f"{type(exc).__name__}: {exc}") from None
        answer(as_json, {"store": gateway.settings.store, "ready": True}, f"{gateway.settings.store} store ready")

    @cli.group()
    def catalog():
        """Import and export the product catalog."""

    @catalog.command("import")
    @click.argument("file", type=click.Path(dir_okay=False))
    @json_option
    @with_appcontext
    def import_(file, as_json):
        """Import products from a JSON or CSV FILE: all rows or none."""
        from gateway.catalog import import_products, read_products

        gateway = _current_gateway()
        try:
            products = read_products(file)
            # A progress bar only where someone watches it: a terminal, and not under --json.
            with click.progressbar(length=len(products), label="importing", file=sys.stderr,
                                   hidden=as_json or not sys.stderr.isatty()) as bar:
                count = import_products(gateway.store, products, progress=bar.update)
        except GatewayError as exc:
            raise click.ClickException(exc.message) from None
        answer(as_json, {"imported": count}, f"imported {count} products")

    @catalog.command("export")
    @click.argument("file", type=click.Path(dir_okay=False))
    @json_option
    @with_appcontext
    def export(file, as_json):
        """Write the catalog to a JSON or CSV FILE."""
        from gateway.catalog import export_products

        try:
            count = export_products(_current_gateway().store, file)
        except GatewayError as exc:
            raise click.ClickException(exc.message) from None
        answer(as_json, {"exported": count, "file": file}, f"exported {count} products")

    @cli.command("plugins")
    @json_option
    def plugins_(as_json):
        """List loaded plugins: name, version, source and hooks."""
        rows = [{"name": name, "version": pm.plugin_version(name), "source": pm.sources.get(name, "?"),
                 "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])}
                for name, plugin in pm.list_name_plugin() if plugin is not None]  # None: a disabled name
        answer(as_json, rows, plugin_table(rows, shutil.get_terminal_size().columns))

    @cli.command("settings")
    @click.option("--markdown", is_flag=True, help="Print the defaults as the README's settings table.")
    @json_option
    def settings_(markdown, as_json):
        """List every setting, the core's and each loaded plugin's: value (secrets as ***), owner, meaning."""
        from gateway.config import Settings, declared_settings, load_plugin_settings, read_sources
        from gateway.setting_fields import setting_values, settings_table

        try:
            owned = declared_settings(pm)
            if markdown:
                click.echo(settings_table(owned))
                return
            sources = read_sources()
            loaded = {Settings: sources.load(Settings), **load_plugin_settings(sources, pm)}
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        rows = setting_values(owned, loaded)
        width = max(len(row["name"]) for row in rows)
        answer(as_json, rows, "\n".join(f"{row['name']:<{width}}  {row['value']!s:<20}  {row['owner']}"
                                         for row in rows))

    pm.hook.gateway_register_commands(cli=cli)
    return cli


def plugin_table(rows: list[dict], columns: int) -> str:
    """``gateway plugins`` for people: each column as wide as its longest cell, the hooks wrapped
    to ``columns`` characters under their own column."""
    table = [("NAME", "VERSION", "SOURCE")] + [(r["name"], str(r["version"] or "-"), r["source"]) for r in rows]
    widths = [max(len(cells[i]) for cells in table) for i in range(3)]
    indent = sum(widths) + 2 * len(widths)
    hooks = [["HOOKS"]] + [textwrap.wrap(", ".join(r["hooks"]), max(columns - indent, 30),
                                         break_long_words=False) or ["-"] for r in rows]
    lines = []
    for cells, wrapped in zip(table, hooks, strict=True):
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        lines.append("  ".join([*padded, wrapped[0]]))
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)


def main() -> None:
    """Entry point of the ``gateway`` console script."""
    try:
        pm = build_plugin_manager(load_settings())
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    build_cli(pm).main(prog_name="gateway")


if __name__ == "__main__":
    main()
