"""Product search: understand a shopping request, then rank the catalog by BM25 and rating.

``parse_query`` turns "noise cancelling headphones under $300, in stock" into
structured constraints (category, brand, price bounds, availability, rating) and
the words left to match. ``CatalogSearch`` asks the store for the products those
constraints allow (on DynamoDB a known category or brand is a Query on its index,
never a Scan) and ranks them.

BM25 is written here rather than taken from a package: the maintained ones
(rank-bm25, bm25s) pull in numpy/scipy for a corpus of a few hundred products,
which would cost more cold-start time than the 40 lines below.
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.store.base import Product, ProductStore


def stem(word: str) -> str:
    """A light plural stemmer: "headphones" → "headphone", "batteries" → "battery"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word

#: Words that name a category, by the category they name.
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "headphone", "earbud", "speaker", "soundbar",
              "turntable", "microphone", "dac", "amplifier", "hifi"),
    "electronics": ("electronic", "gadget", "mouse", "keyboard", "webcam", "monitor", "ssd",
                    "hub", "charger", "plug", "e-reader", "tech"),
    "wearables": ("wearable", "smartwatch", "watch", "ring", "tracker", "glasses", "strap"),
    "home": ("home", "lamp", "rug", "blanket", "duvet", "pillow", "bulb", "humidifier", "purifier",
             "vacuum", "bedding", "decor"),
    "kitchen": ("kitchen", "cookware", "skillet", "pan", "knife", "kettle", "blender", "espresso",
                "fryer", "oven", "board"),
    "sports": ("sport", "fitness", "gym", "yoga", "dumbbell", "racket", "helmet", "shoe",
               "roller", "rope", "bottle", "workout", "exercise", "cycling"),
    "beauty": ("beauty", "skincare", "serum", "moisturizer", "sunscreen", "spf",
               "shampoo", "deodorant", "cream", "cosmetic", "dryer", "mask"),
    "toys": ("toy", "child", "children", "game", "lego", "plush", "teddy", "puzzle"),
    "books": ("book", "novel", "paperback", "hardcover", "read", "reading", "fiction", "cookbook"),
    "food": ("food", "snack", "coffee", "tea", "matcha", "pasta", "honey", "chocolate", "granola",
             "protein", "nut", "grocery", "pantry", "oil"),
    "outdoors": ("outdoor", "camping", "camp", "hiking", "hike", "tent", "backpack", "trekking",
                 "headlamp", "stove", "filter"),
    "office": ("office", "desk", "chair", "notebook", "pen", "stationery", "organizer", "arm",
               "journal"),
}
#: A stemmed word -> the category it names.
WORD_CATEGORY = {stem_: category for category, words in CATEGORY_WORDS.items()
                 for stem_ in {stem(w) for w in (category, *words)}}
#: Query words that are spelled differently in the catalog.
SYNONYMS = {"earphone": "earbud", "sneaker": "shoe", "moisturiser": "moisturizer",
            "ereader": "e-reader", "cellphone": "phone", "laptop": "notebook", "knive": "knife",
            "headset": "headphone", "mic": "microphone", "amp": "amplifier", "organiser": "organizer",
            "colour": "color", "aluminum": "aluminium", "kid": "junior"}
STOPWORDS = frozenset(
    "a an and any are as at be best buy can cheap could do does find for from get give good got have "
    "help i im in is it looking me mine my need of on one or please recommend show some something "
    "that the their them there these this to want what which with would you your new nice great gift "
    "item items product products thing things".split())
IN_STOCK = ("in-stock", "limited")

# Caller text reaches these patterns (up to ``max_message_chars`` of it), so each must run in linear
# time. Where two quantified parts could match the same characters (``\s*`` beside ``\s+``, or
# beside an optional ``\$?``/``\+?`` that cannot take a space), a failed match would try every split
# of a long run of spaces between them: quadratic in the run ("between 1" + 30000 spaces + "x" took
# 17 s). So every whitespace gap is possessive (``\s*+``, ``\s++``: once it has eaten a run it never
# gives part of it back), which matches exactly what the greedy version matched, since nothing next to
# a gap can match a space. tests/test_linear_parsing.py times each pattern on adversarial text.
_NUMBER = r"\$?\s*+(\d+(?:\.\d+)?)\s*+(?:\$|dollars?|usd|bucks)?"
_NOT_A_UNIT = r"(?!\s*+(?:mah|mm|ml|l\b|inch|in\b|k\b|tb|gb|quart|piece|person|season|stars?|\+|%|-|\d))"
_RANGE = re.compile(r"\b(?:between|from)\s++" + _NUMBER + r"\s*+(?:and|to|-)\s*+" + _NUMBER, re.I)
_DASH_RANGE = re.compile(r"\$\s*+(\d+(?:\.\d+)?)\s*+(?:-|to)\s*+\$?\s*+(\d+(?:\.\d+)?)", re.I)
_MAX = re.compile(r"\b(?:under|below|less\s++than|cheaper\s++than|up\s++to|at\s++most|max(?:imum)?|"
                  r"no\s++more\s++than|within)\s++" + _NUMBER + _NOT_A_UNIT, re.I)
_MIN = re.compile(r"\b(?:over|above|more\s++than|at\s++least|min(?:imum)?|starting\s++at)\s++"
                  + _NUMBER + _NOT_A_UNIT, re.I)
_RATED = re.compile(r"\b(?:rated|rating(?:\s++of)?)\s*+(?:at\s++least\s++|above\s++|over\s++|of\s++)?"
                    r"(\d(?:\.\d)?)\s*+\+?\s*+(?:stars?)?(?:\s*+(?:or\s++(?:more|higher|better|above)|and\s++up))?",
                    re.I)
_STARS = re.compile(r"(?:\b(?:at\s++least|min(?:imum)?)\s++)?\b(\d(?:\.\d)?)\s*+\+?\s*+stars?\b"
                    r"(?:\s*+(?:or\s++(?:more|higher|better|above)|and\s++up|\+))?", re.I)
_TOP_RATED = re.compile(r"\b(?:highly|top|best|well)[\s-]++(?:rated|reviewed)\b", re.I)
_IN_STOCK = re.compile(r"\b(?:in[\s-]stock|available(?:\s++now)?|ready\s++to\s++ship|ships\s++now)\b", re.I)
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

TOP_RATED = 4.5


def tokens(text: str) -> list[str]:
    """Lower-cased, stemmed words of ``text``; hyphenated words also yield their parts."""
    out: list[str] = []
    for raw in _TOKEN.findall(text.lower().replace("&", " and ")):
        parts = raw.split("-")
        if len(parts) > 1:
            out.append(stem(raw))
        out.extend(stem(part) for part in parts if part)
    return [SYNONYMS.get(word, word) for word in out]


@dataclass
class Query:
    """A shopping request, understood: constraints plus the words left to rank by."""

    terms: list[str] = field(default_factory=list)
    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool = False
    availability: str | None = None
    min_rating: float | None = None

    def allows(self, product: Product) -> bool:
        """True when ``product`` meets every constraint (the store applies some of them already)."""
        return ((self.category is None or product.category == self.category)
                and (self.brand is None or product.brand == self.brand)
                and (self.min_price is None or product.price >= self.min_price)
                and (self.max_price is None or product.price <= self.max_price)
                and (not self.in_stock or product.availability in IN_STOCK)
                and (self.availability is None or product.availability == self.availability)
                and (self.min_rating is None or product.rating >= self.min_rating))


def _cut(pattern: re.Pattern, text: str, found: Callable[[re.Match], None]) -> str:
    """Call ``found`` for each match of ``pattern`` and return ``text`` without the matches."""
    def replace(match: re.Match) -> str:
        found(match)
        return " "
    return pattern.sub(replace, text)


def parse_query(text: str, brands: Iterable[str] = (), categories: Iterable[str] = ()) -> Query:
    """Understand a shopping request.

    :param text: the request, e.g. "Sonique speakers between 100 and 300 dollars rated 4+".
    :param brands: the brands the catalog holds (only these are recognised).
    :param categories: the catalog's categories: each is recognised by its name, and by the words of
        ``CATEGORY_WORDS`` when it has some (words of categories the catalog lacks are ignored).
    """
    query = Query()

    def price_range(m: re.Match) -> None:
        low, high = sorted((float(m.group(1)), float(m.group(2))))
        query.min_price, query.max_price = low, high

    def max_price(m: re.Match) -> None:
        query.max_price = float(m.group(1))

    def min_price(m: re.Match) -> None:
        query.min_price = float(m.group(1))

    def rating(m: re.Match) -> None:
        value = float(m.group(1))
        if value <= 5:
            query.min_rating = value

    def top_rated(_m: re.Match) -> None:
        query.min_rating = query.min_rating or TOP_RATED

    def in_stock(_m: re.Match) -> None:
        query.in_stock = True

    rest = text
    for pattern, found in ((_RANGE, price_range), (_DASH_RANGE, price_range), (_RATED, rating),
                           (_STARS, rating), (_MAX, max_price), (_MIN, min_price),
                           (_TOP_RATED, top_rated), (_IN_STOCK, in_stock)):
        rest = _cut(pattern, rest, found)

    words = tokens(rest)
    joined = f" {' '.join(words)} "
    for brand in sorted(brands, key=len, reverse=True):  # longest first: "Sonique" vs "Sonique Pro"
        brand_words = " ".join(tokens(brand))
        if brand_words and f" {brand_words} " in joined:
            query.brand = brand
            break
    known = set(categories) if categories else set(CATEGORY_WORDS)
    naming = {**{word: c for word, c in WORD_CATEGORY.items() if c in known}, **{stem(c): c for c in known}}
    named = {naming[word] for word in words if word in naming}
    if len(named) == 1:
        query.category = named.pop()
    query.terms = [word for word in words if word not in STOPWORDS and not word.replace(".", "").isdigit()]
    return query


# Ranking

FIELD_WEIGHTS = {"name": 3, "brand": 2, "category": 2, "description": 1}
K1, B = 1.2, 0.75
#: How much a perfect rating adds to the best text match (which scores 1).
RATING_WEIGHT = 0.25
#: Products matching less than this share of the best match's text score are left out.
MIN_RELATIVE_SCORE = 0.5


def document(product: Product) -> Counter:
    """The weighted bag of words of a product (name counts three times, description once)."""
    bag: Counter = Counter()
    for name, weight in FIELD_WEIGHTS.items():
        for word in tokens(getattr(product, name)):
            bag[word] += weight
    return bag


class BM25:
    """Okapi BM25 over a fixed list of products."""

    def __init__(self, products: list[Product]):
        self.products = products
        self.docs = [document(p) for p in products]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.average = (sum(self.lengths) / len(self.docs)) if self.docs else 0.0
        frequency: Counter = Counter()
        for doc in self.docs:
            frequency.update(doc.keys())
        n = len(self.docs)
        self.idf = {word: math.log(1 + (n - df + 0.5) / (df + 0.5)) for word, df in frequency.items()}

    def scores(self, terms: list[str]) -> list[float]:
        """The BM25 score of every product for ``terms`` (repeated terms count once)."""
        unique = [t for t in dict.fromkeys(terms) if t in self.idf]
        result = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            norm = K1 * (1 - B + B * length / self.average)
            result.append(sum(self.idf[t] * doc[t] * (K1 + 1) / (doc[t] + norm)
                              for t in unique if t in doc))
        return result


def rank(index: BM25, query: Query, limit: int) -> list[Product]:
    """The best ``limit`` products allowed by ``query``: text relevance, then rating.

    With words to match, only products matching at least one are returned and the
    rating breaks near-ties; with none (e.g. "toys under $20"), the best rated come first.
    """
    allowed = [(p, s) for p, s in zip(index.products, index.scores(query.terms), strict=True) if query.allows(p)]
    best = max((s for _, s in allowed), default=0.0) or 1.0
    if query.terms:
        allowed = [(p, s) for p, s in allowed if s > 0 and s >= MIN_RELATIVE_SCORE * best]
    ranked = sorted(allowed, key=lambda ps: (-(ps[1] / best + RATING_WEIGHT * ps[0].rating / 5),
                                             ps[0].price, ps[0].product_id))
    return [p for p, _ in ranked[:limit]]


# The catalog, cached per process

@dataclass
class _Entry:
    expires: float
    value: object


class CatalogSearch:
    """Searches one product store, caching what it reads for ``ttl`` seconds.

    The vocabulary (brands, categories) comes from the whole catalog; the products
    of one search come from ``list_products`` with the understood category or brand,
    so that DynamoDB Queries its index. ``invalidate`` drops everything (after an upsert).
    """

    def __init__(self, store: ProductStore, ttl: float = 60.0):
        self.store = store
        self.ttl = ttl
        self._cache: dict[tuple, _Entry] = {}
        self._lock = threading.Lock()

    def cached(self, key: tuple, load: Callable[[], object]):
        """``load()``, kept for ``ttl`` seconds under ``key`` (dropped by :meth:`invalidate`): any read
        of the catalog (the search index, the grounding check's index) shares the catalog's cache."""
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            return entry.value
        value = load()
        with self._lock:
            self._cache[key] = _Entry(now + self.ttl, value)
        return value

    def invalidate(self) -> None:
        """Forget every cached read (the catalog changed)."""
        with self._lock:
            self._cache.clear()

    def vocabulary(self) -> tuple[dict[str, int], list[str]]:
        """Product counts by category, and the catalog's brands."""
        def load():
            products = self.store.list_products()
            return dict(sorted(Counter(p.category for p in products).items())), \
                sorted({p.brand for p in products if p.brand})
        return self.cached(("vocabulary",), load)

    def _index(self, category: str | None, brand: str | None) -> BM25:
        return self.cached(("index", category, brand), lambda: BM25(
            self.store.list_products(category=category, brand=brand)))

    def understand(self, text: str) -> Query:
        """``parse_query`` with this catalog's brands and categories."""
        categories, brands = self.vocabulary()
        return parse_query(text, brands, categories)

    def search(self, query: Query, limit: int = 10) -> list[Product]:
        """The best ``limit`` products for ``query`` (raises what the store raises)."""
        return rank(self._index(query.category, query.brand), query, limit)


def catalog_search(gateway) -> CatalogSearch:
    """The app's :class:`CatalogSearch`: built once, shared by the MCP tools, context injection and admin."""
    search = gateway.state.get("catalog.search")
    if search is None:
        from plugins.catalog import CatalogSettings

        search = gateway.state.setdefault("catalog.search", CatalogSearch(
            gateway.store, ttl=gateway.plugin_settings[CatalogSettings].catalog_cache_ttl))
    return search


#: The product fields callers and models may see, in the catalog's own (camelCase) names.
PUBLIC_FIELDS = {"productId": "product_id", "name": "name", "brand": "brand", "category": "category",
                 "price": "price", "availability": "availability", "rating": "rating",
                 "description": "description"}


def public_product(product: Product) -> dict:
    """A product as callers see it: only the allowed fields, never internal ones."""
    return {public: getattr(product, attribute) for public, attribute in PUBLIC_FIELDS.items()}
