"""Catalog files: read, validate, import and export products as JSON or CSV.

Used by ``gateway catalog import FILE`` and the admin endpoints. A file is checked in
full before anything is stored: every bad row is reported, and one bad row stores nothing.
Rows are numbered from 1, the first product (a CSV header is not counted).

CSV export guards against CSV (formula) injection, as OWASP advises: a text cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which a spreadsheet would run as a
formula (``=HYPERLINK(...)``), is written with a single quote ``'`` in front. So that the
quote is never ambiguous, a text cell that already starts with ``'`` followed by one of those
characters or by another ``'`` gets one too; CSV import removes exactly that one added quote,
so an exported file imports back unchanged. Only the text columns are treated this way, every
one of them, even a ``productId`` of ``-5``; the number columns (``price``, ``rating``) are
written as numbers and never quoted (the schema keeps them non-negative anyway). JSON files
are written and read as they are.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from gateway.errors import InvalidRequest
from gateway.store.base import AVAILABILITY, Product, ProductStore

FIELDS = ("productId", "name", "category", "price", "brand", "availability", "description", "rating")
REQUIRED = ("productId", "name", "category", "price")
FORMATS = (".json", ".csv")
#: The text columns: neutralised on CSV export, restored on CSV import.
TEXT_FIELDS = ("productId", "name", "category", "brand", "availability", "description")
#: First characters a spreadsheet may take as the start of a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def _is_quoted(cell: str) -> bool:
    """Whether ``cell`` carries the quote export adds: ``'`` then a formula start or another ``'``."""
    return len(cell) > 1 and cell[0] == _QUOTE and (cell[1] == _QUOTE or cell[1] in FORMULA_STARTS)


def neutralise_cell(value: str) -> str:
    """``value`` as a CSV text cell a spreadsheet will not run: ``'`` in front of a formula start
    (and of a value that would otherwise read back as quoted); :func:`restore_cell` undoes it."""
    if value and (value[0] in FORMULA_STARTS or _is_quoted(value)):
        return _QUOTE + value
    return value


def restore_cell(cell: str) -> str:
    """The value :func:`neutralise_cell` wrote as ``cell``."""
    return cell[1:] if _is_quoted(cell) else cell


class CatalogError(InvalidRequest):
    """A catalog file cannot be used; ``errors`` lists each bad value as (row, field, message)."""

    code = "invalid_catalog"

    def __init__(self, message: str, errors: list[tuple[int, str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class _ExtraCells:
    """A CSV row with more cells than the header has columns."""

    def __init__(self, count: int):
        self.count = count


class ProductSchema(Schema):
    """One product as it appears in a catalog file (camelCase), loaded into a ``Product``."""

    class Meta:
        unknown = RAISE
        ordered = True

    product_id = fields.String(data_key="productId", required=True, validate=validate.Length(min=1))
    name = fields.String(required=True, validate=validate.Length(min=1))
    category = fields.String(required=True, validate=validate.Length(min=1))
    price = fields.Float(required=True, validate=validate.Range(min=0))
    brand = fields.String()
    availability = fields.String(validate=validate.OneOf(AVAILABILITY))
    description = fields.String()
    rating = fields.Float(validate=validate.Range(min=0, max=5))

    @post_load
    def make_product(self, data: dict, **_kwargs) -> Product:
        """Build the ``Product`` the store keeps."""
        return Product(**data)


_SCHEMA = ProductSchema()


def _flatten(row: int, messages: dict | list) -> list[tuple[int, str, str]]:
    if isinstance(messages, list):
        return [(row, "", str(m)) for m in messages]
    found = []
    for field_name, field_messages in messages.items():
        name = "" if field_name == "_schema" else field_name
        for message in (field_messages if isinstance(field_messages, list) else [field_messages]):
            found.append((row, name, str(message)))
    return found


def _load_json(path: Path, text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg}); fix the syntax and try again") from None
    if isinstance(data, dict) and set(data) == {"products"}:
        data = data["products"]
    if not isinstance(data, list):
        raise CatalogError(f"{path} must hold a JSON list of products or {{\"products\": [...]}}")
    return data


def _load_csv(path: Path, text: str) -> list:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames
        if not header:
            raise CatalogError(f"{path} is empty; the first line must be a header row: {','.join(FIELDS)}")
        unknown = [c for c in header if c not in FIELDS]
        missing = [c for c in REQUIRED if c not in header]
        if unknown or missing:
            problem = (f"unknown columns {', '.join(unknown)}" if unknown
                       else f"missing columns {', '.join(missing)}")
            raise CatalogError(f"{path} has {problem}; the header row may use: {','.join(FIELDS)}")
        rows = []
        for row in reader:
            if None in row:
                rows.append(_ExtraCells(len(row[None])))  # reported as an error below
                continue
            # An empty cell means "not given": required fields then say so, others take defaults.
            # Text cells lose the quote a CSV export put in front of a formula start.
            rows.append({k: restore_cell(v) if k in TEXT_FIELDS else v
                         for k, v in row.items() if v not in (None, "")})
        return rows
    except csv.Error as exc:
        raise CatalogError(f"{path} is not valid CSV (line {reader.line_num}: {exc}); "
                           "check the quoting and try again") from None


def read_products(path: str | Path) -> list[Product]:
    """Read and validate every product in a ``.json`` or ``.csv`` file; raise ``CatalogError`` listing every bad row."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CatalogError(f"{path}: unknown catalog format {suffix or '(no extension)'!r}; "
                           "use a .json or .csv file")
    try:
        # newline="": a carriage return inside a quoted CSV cell is data, not a line end to translate.
        with path.open(encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise CatalogError(f"{path} is not UTF-8 text; save it as UTF-8 and try again") from None
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}; check the path and permissions") from None
    rows = _load_json(path, text) if suffix == ".json" else _load_csv(path, text)
    return validate_rows(rows, str(path))


def validate_rows(rows: list, source: str) -> list[Product]:
    """Validate catalog rows (camelCase objects); raise ``CatalogError`` listing every bad row of ``source``."""
    products: list[Product] = []
    errors: list[tuple[int, str, str]] = []
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if isinstance(row, _ExtraCells):
            errors.append((number, "", f"{row.count} more cell(s) than the header has columns"))
            continue
        try:
            product = _SCHEMA.load(row)
        except ValidationError as exc:
            errors.extend(_flatten(number, exc.messages))
            continue
        if product.product_id in first_row:
            errors.append((number, "productId",
                           f"duplicate {product.product_id!r}, already in row {first_row[product.product_id]}"))
            continue
        first_row[product.product_id] = number
        products.append(product)
    if errors:
        listing = "; ".join(f"row {row}: {field}: {message}" if field else f"row {row}: {message}"
                            for row, field, message in errors)
        raise CatalogError(f"{source} has {len(errors)} invalid value(s), nothing was imported: {listing}",
                           errors)
    return products


def import_products(store: ProductStore, path: str | Path | list[Product],
                    progress: Callable[[int], object] | None = None) -> int:
    """Validate ``path`` and store all of its products in one ``put_products`` call; return the count.

    ``path`` may also be the list ``read_products`` already returned (the CLI reads first to size its
    progress bar). ``progress(n)`` is called as the store takes the products, every
    ``PROGRESS_STEP`` products and once for the rest, so a large import shows real progress.
    """
    products = path if isinstance(path, list) else read_products(path)
    return store.put_products(products if progress is None else _reporting(products, progress))


PROGRESS_STEP = 100


def _reporting(products: list[Product], progress: Callable[[int], object]) -> Iterator[Product]:
    """Yield ``products``, calling ``progress`` with how many were taken since the last call."""
    for index, product in enumerate(products, start=1):
        yield product
        if index % PROGRESS_STEP == 0:
            progress(PROGRESS_STEP)
    if len(products) % PROGRESS_STEP:
        progress(len(products) % PROGRESS_STEP)


def export_products(store: ProductStore, path: str | Path) -> int:
    """Write every stored product to a ``.json`` or ``.csv`` file (``read_products`` reads it back); the count."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CatalogError(f"{path}: unknown catalog format {suffix or '(no extension)'!r}; "
                           "use a .json or .csv file")
    rows = _SCHEMA.dump(sorted(store.list_products(), key=lambda p: p.product_id), many=True)
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            if suffix == ".json":
                json.dump(rows, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
            else:
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows({k: neutralise_cell(v) if isinstance(v, str) else v for k, v in row.items()}
                                 for row in rows)
    except OSError as exc:
        raise CatalogError(f"cannot write {path}: {exc.strerror or exc}; check the path and permissions") from None
    return len(rows)
