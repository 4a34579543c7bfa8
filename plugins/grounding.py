"""Catalog grounding: does an answer say about products what the catalog says?

``check_answer(text, index)`` finds the products an answer names (``plugins.grounding_names``) and
what it claims (``plugins.grounding_claims``), gives each claim to the product it is written about,
and compares it with the catalog. No model is called and nothing is read from the store: a
:class:`GroundingIndex` (``plugins.grounding_index``) is built once per catalog read, and a check
costs about a millisecond of CPU for a dense 500-token answer on the project's 2-core box, whatever
the catalog's size (``bench/grounding.py``; ``bench/RESULTS.md`` has the figures).

Giving claims to products:

- In a sentence, list item or table row that names products, a claim belongs to the nearest product
  named before it ("X ($49)", "X costs $49"), or else the first named after it ("At $49, X ...").
  What a product is compared with is passed over unless the claim is plainly its own: in "X costs
  more than Y, at $152" the price is X's, in "cheaper than Y ($152)" it is Y's. A name that cannot
  be told (ambiguous, or not in the catalog) takes its claims with it: they are checked against nothing.
- "both", "each", "all three": the claims after it, up to the end of its clause, belong to every
  product of the sentence (or of the last sentence that named several), unless a claim is plainly
  one product's ("Both are in stock: X ($160.99) and Y ($293.49)"). "the first", "the second", "the
  former", "the latter" point into that list; "... cost $49 and $152 respectively" pairs them in order.
- A sentence that names no product continues the last one that named exactly one, when it is in the
  same paragraph, is a list item or "Label: value" line, or starts with "It", "Its", "The price" and
  the like, and is not a general remark ("if", "options", "alternatives", "budget").
- A brand said of a product ("made by Orbix", "X from Nexio", "X (Hardcover, Quillstone)", a Brand
  column, or a product named under another brand: "Copperpot's Deep Cast Iron Skillet") is a brand
  claim; a lone brand otherwise stands for the one product of that brand named before ("the Nexio one").
- Bundle totals ("together $201", "$230 total", "$150 for both") are not checked, neither against one
  product nor against the sum (``plugins.grounding_claims``).

What matches (``claimed`` and ``catalog`` in :class:`Verdict` entries):

- price, USD: an exact amount within ``price_tolerance`` (a fraction, default 1%) or a whole-dollar
  rounding ("$49" for 49.49); "about $50" within 10%; bounds and ranges with the tolerance.
  ``claimed`` is a float for an exact amount and a string otherwise: ``"<100.00"`` (under),
  ``">100.00"`` (over), ``"~50.00"`` (about), ``"40.00-60.00"`` (a range).
- availability: "in-stock", "limited" or "out-of-stock". In stock and limited agree with each other
  (a few left is still in stock; "only a few left" of a well-stocked product is sales talk, not a
  falsehood); only "out-of-stock" disagrees with both.
- rating: within 0.05 ("5 stars" for 4.8 is wrong); "about 4.5" within 0.3; bounds as prices
  (``">4.5"``, ``"~4.5"``).
- brand: the brand's name as the catalog writes it.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

from gateway.store.base import Product
from plugins.grounding_claims import CONTEXT, Claim, find_claims
from plugins.grounding_index import GroundingIndex
from plugins.grounding_names import Mention, find_mentions
from plugins.grounding_phrases import by_first_letter
from plugins.grounding_segments import Segment, lowered, read_segments

__all__ = ["GroundingIndex", "Verdict", "check_answer", "DEFAULT_PRICE_TOLERANCE"]

DEFAULT_PRICE_TOLERANCE = 0.01
#: How far "about $50" may be from the catalog price, as a fraction of it.
APPROXIMATE_TOLERANCE = 0.10
RATING_TOLERANCE = 0.05
#: How far "about 4.5" may be from the catalog rating.
APPROXIMATE_RATING_TOLERANCE = 0.3

#: Words (of a lower-cased sentence) that decide how its claims are placed.
_EVERY = frozenset({"both", "each"})
_COUNTS = frozenset({"three", "four", "five", "them", "these"})
_ORDINAL_WORDS = frozenset({"first", "second", "third", "fourth", "former", "latter"})
_ORDINAL = re.compile(r"the\s++(?P<o>first|second|third|fourth|former|latter)\b(?:\s++(?:one|option|pick))?+")
_ORDINAL_INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "former": 0, "latter": -1}
_EVERY_AT = re.compile(r"\b(?:both|each|all\s++(?:three|four|five|of\s++them|these))\b")
#: What ends the reach of "both" or "all three" over the claims after it ("All three are under $200:
#: ..., though the Santoku is out of stock"); dashes do when they are not a pair around an aside.
_CLAUSE_BREAK = re.compile(r"[;:]|\b(?:but|though|although|while|whereas|however)\b")
#: What may stand between a name and a claim that is plainly its own ("X ($49)", "X: $49", "X — $49").
_NEXT_TO = re.compile(r"(?<!\s)\s*+(?:[(:—–|-]\s*+(?:(?:at|for|only|just|now)\s++)?+)?+")
_GENERAL = frozenset({"if", "whether", "unless", "option", "options", "alternative", "alternatives", "other",
                      "others", "consider", "budget", "similar", "anything", "something", "most", "many",
                      "typically", "usually", "generally", "category", "range"})
_CARRY = re.compile(r"(?<![\s*_>#-])[\s*_>#-]*+(?:it|its|it['’]s|this|that|they|priced|at|rated|available"
                    r"|currently|plus|and|but|also|unfortunately|sadly|however|right\s++now|still|only|just|with|price|cost|rating|stock"
                    r"|availability|status|brand|the\s++(?:price|cost|rating|stock|availability|brand))\b")
_WORDS = re.compile(r"[a-z]++")
#: The words of ``_ORDINAL_WORDS``, ``_EVERY``, ``_COUNTS`` and ``_GENERAL``, found in one search.
_SIGNAL_WORDS = _ORDINAL_WORDS | _EVERY | _COUNTS | _GENERAL | {"all", "respectively"}
_SIGNALS = re.compile(r"\b" + by_first_letter(sorted(_SIGNAL_WORDS, key=lambda w: (w[0], -len(w)))) + r"\b")
#: What may stand between a product's name and a claim written about it ("Y ($152)", "Y at $152").
_ATTACHED = re.compile(r"(?<!\s)\s*+(?:[(:—–-]|(?:is|are|at|for|costs?|priced\s++at"
                       r"|,?+\s*+(?:which|that)\s++(?:is|costs?))(?:\s++(?:only|just|about|around|under|over|roughly))?+)?+\s*+")
_STRONG_BRAND = re.compile(r"(?:\b(?:made|manufactured|produced|built|designed|engineered|sold|developed|created"
                           r"|published|distributed|marketed)\s++by|\bbrand(?:\s++name)?+\s*+(?:is\s++)?+[:=]?+"
                           r"|\b(?:is|it['’]s)\s++an?)\s*+$", re.I)
_BRAND_NOUN = re.compile(r"(?<!\s)['’]?s?\s++(?:product|brand|model|device|item|offering|title|book|release)\b", re.I)
_WEAK_BRAND_GAP = re.compile(r"(?<![\s,(*_])(?:[\s,(]*+(?:(?:which|that)\s++)?+(?:(?:is|are|comes|come)\s++)?+"
                             r"(?:also\s++)?+(?:from|by)\s++|[*_]*+\s*+\(\s*+(?:[a-z]++\s*+,\s*+)?+)", re.I)
#: A brand right after "from" or "by" is said of something: it never stands for a product named before.
_BRAND_CUE = re.compile(r"\b(?:from|by)\s*+$", re.I)


@dataclass
class Verdict:
    """What the answer says about catalog products, compared with the catalog."""

    status: str            # "verified", "mismatch" or "unverified"
    checked: list[str]     # product ids the answer mentions, in order of first mention
    verified: list[dict] = field(default_factory=list)    # {"product_id", "field", "claimed", "catalog"}
    mismatches: list[dict] = field(default_factory=list)  # the same, with "name"
    unknown_products: list[str] = field(default_factory=list)  # names, as written, not in the catalog

    def to_dict(self) -> dict:
        """The verdict as JSON-ready data (the native API's ``grounding`` field)."""
        return {"status": self.status, "checked": list(self.checked), "verified": list(self.verified),
                "mismatches": list(self.mismatches), "unknown_products": list(self.unknown_products)}

    def header(self) -> str:
        """The ``X-Gateway-Grounding`` value: an RFC 8941 Item, the status with counts as parameters."""
        return (f"{self.status};products={len(self.checked)};mismatches={len(self.mismatches)}"
                f";unknown={len(self.unknown_products)}")

    def summary(self) -> str:
        """One sentence for people: what is wrong, or that nothing is."""
        parts = [f"{m['field']} of {m['name']}: the answer says {_shown(m['field'], m['claimed'])}, "
                 f"the catalog {_shown(m['field'], m['catalog'])}" for m in self.mismatches]
        parts += [f"{name!r} is not in the catalog" for name in self.unknown_products]
        if parts:
            return "; ".join(parts)
        if self.status == "verified":
            return f"every claim about {len(self.checked)} catalog product(s) matches the catalog"
        return "no claim about a catalog product to check"


def _shown(field_name: str, value: float | str) -> str:
    """A claimed or catalog value as a person reads it ("$29.00", "under $100.00", "4.5", "out of stock")."""
    if field_name == "price":
        if isinstance(value, float | int):
            return f"${value:,.2f}"
        words = {"<": "under $", ">": "over $", "~": "about $"}
        if value[0] in words:
            return words[value[0]] + value[1:]
        low, high = value.split("-")
        return f"${low}-${high}"
    if field_name == "availability":
        return str(value).replace("-", " ")
    return str(value)


def check_answer(text: str, index: GroundingIndex, price_tolerance: float = DEFAULT_PRICE_TOLERANCE) -> Verdict:
    """Check what ``text`` says about the catalog's products against ``index``'s catalog."""
    words, mentions = find_mentions(text, index)
    segments = read_segments(text, index.abbreviations)
    lower = lowered(text)
    claims = find_claims(lower, segments, words.anchors)
    naming, brand_claims, pinned = _brands(text, mentions, segments, index)
    claims = sorted(claims + brand_claims, key=lambda c: c.start)
    checked = list(dict.fromkeys(m.product_id for m in mentions if m.product_id and not m.unknown))
    unknown = list(dict.fromkeys(text[m.start:m.end] for m in mentions if m.unknown))
    verified: dict[tuple, dict] = {}
    mismatches: dict[tuple, dict] = {}
    for claim, pid in pinned + _attribute(lower, segments, naming, claims):
        product = index.names[pid].product
        claimed, catalog, right = _compare(claim, product, price_tolerance)
        key = (pid, claim.field, claimed)
        if right:
            if key not in verified:
                verified[key] = {"product_id": pid, "field": claim.field, "claimed": claimed, "catalog": catalog}
        elif key not in mismatches:
            mismatches[key] = {"product_id": pid, "name": product.name, "field": claim.field, "claimed": claimed,
                               "catalog": catalog}
    status = ("mismatch" if mismatches or unknown else "verified" if checked and verified else "unverified")
    return Verdict(status, checked, list(verified.values()), list(mismatches.values()), unknown)


def _brands(text: str, mentions: list[Mention], segments: list[Segment], index: GroundingIndex
            ) -> tuple[list[Mention], list[Claim], list[tuple[Claim, str]]]:
    """What each lone brand is: a claim of who makes a product ("made by Orbix", "a Nexio product", a Brand
    column: attributed as any claim; "the ... from Nexio" right after a name: pinned to that product),
    or else a short name of the one product of that brand named before ("the Nexio one").

    :return: the mentions that name products (lone brands resolved, claims left out), the brand claims,
        and the pinned (claim, product id) pairs.
    """
    naming: list[Mention] = []
    claims: list[Claim] = []
    pinned: list[tuple[Claim, str]] = []
    brand_cells = {a: b for s in segments for a, b, role in s.cells if role == "brand"}
    cell_starts = sorted(brand_cells)
    named: dict[str, list[str]] = {}
    for mention in mentions:
        if mention.brand_written:  # "Copperpot's Deep Cast Iron Skillet": Ferro & Salt's, under another brand
            pinned.append((Claim(mention.start, mention.end, "brand", "=", index.brand_names[mention.brand_written]),
                           mention.product_id))
        if not mention.brand_only:
            naming.append(mention)
            if mention.product_id and not mention.unknown:
                products = named.setdefault(index.names[mention.product_id].brand, [])
                if mention.product_id not in products:
                    products.append(mention.product_id)
            continue
        claim = Claim(mention.start, mention.end, "brand", "=", index.brand_names[mention.brand_only])
        before = text[max(0, mention.start - CONTEXT):mention.start]
        previous = naming[-1] if naming else None
        if (_STRONG_BRAND.search(before) and (not before.rstrip().endswith((" a", " an"))
                                               or _BRAND_NOUN.match(text, mention.end))
                or _inside(mention.start, cell_starts, brand_cells)):
            claims.append(claim)
        elif (previous is not None and previous.product_id and not previous.unknown
              and _WEAK_BRAND_GAP.fullmatch(text, previous.end, mention.start)):
            pinned.append((claim, previous.product_id))
        elif len(named.get(mention.brand_only, ())) == 1 and not _BRAND_CUE.search(before):
            naming.append(Mention(mention.start, mention.end, named[mention.brand_only][0]))
    return naming, claims, pinned


def _inside(at: int, starts: list[int], ends: dict[int, int]) -> bool:
    """Whether ``at`` falls in one of the spans (sorted ``starts``, ``ends`` by start)."""
    found = bisect_right(starts, at)
    return bool(found) and at < ends[starts[found - 1]]


def _attribute(lower: str, segments: list[Segment], naming: list[Mention],
               claims: list[Claim]) -> list[tuple[Claim, str]]:
    """Each claim with the product it is written about (claims that cannot be placed are left out)."""
    starts = [segment.start for segment in segments]
    named: dict[int, list[Mention]] = {}
    said: dict[int, list[Claim]] = {}
    for items, by_segment in ((naming, named), (claims, said)):
        for item in items:  # in order, so each segment's list is in order too
            at = bisect_right(starts, item.start) - 1
            if at >= 0 and item.start < segments[at].end:
                by_segment.setdefault(at, []).append(item)
    out: list[tuple[Claim, str]] = []
    context: list[str | None] = []
    context_paragraph = -1
    for at in sorted(named.keys() | said.keys()):
        segment, here = segments[at], named.get(at, [])
        if at in said:
            out += _place(lower, segment, here, said[at], context, segment.paragraph == context_paragraph)
        if here:
            context = list(dict.fromkeys(m.product_id for m in here))
            context_paragraph = segment.paragraph
    return out


def _place(lower: str, segment: Segment, here: list[Mention], said: list[Claim], context: list[str | None],
           same_paragraph: bool) -> list[tuple[Claim, str]]:
    """The claims of one sentence, list item or row, each with its product."""
    words = set(_SIGNALS.findall(lower, segment.start, segment.end))
    if words & _ORDINAL_WORDS:
        here = sorted(here + _ordinals(lower, segment, here, context), key=lambda m: m.start)
    if here:
        return _within(lower, segment, words, here, said, context)
    if (len(context) == 1 and context[0] is not None and not segment.row and not words & _GENERAL
            and (same_paragraph or segment.listed or _CARRY.match(lower, segment.start, segment.end))):
        return [(claim, context[0]) for claim in said]
    if len(context) > 1 and _every(words):
        return [(claim, pid) for claim in said for pid in context if pid]
    return []


def _every(words: set[str]) -> bool:
    """Whether a sentence speaks of every product named ("both", "each", "all three")."""
    return bool(words & _EVERY) or "all" in words and bool(words & _COUNTS)


def _ordinals(lower: str, segment: Segment, here: list[Mention], context: list[str | None]) -> list[Mention]:
    """ "the first", "the latter" ...: mentions of the products they point to."""
    out = []
    earlier: dict[str | None, None] = {}  # the products named before the ordinal, in order
    position = 0
    for match in _ORDINAL.finditer(lower, segment.start, segment.end):
        while position < len(here) and here[position].end <= match.start():
            earlier[here[position].product_id] = None
            position += 1
        pool = list(earlier) if len(earlier) > 1 else context if len(context) > 1 else []
        index = _ORDINAL_INDEX[match.group("o")]
        if pool and index < len(pool) and not lower[match.start() - 1:match.start()].isalpha():
            out.append(Mention(match.start(), match.end(), pool[index]))
    return out


def _within(lower: str, segment: Segment, words: set[str], here: list[Mention], said: list[Claim],
            context: list[str | None]) -> list[tuple[Claim, str]]:
    """Claims of a sentence that names products: "both", "respectively", else the nearest name."""
    out: list[tuple[Claim, str]] = []
    every = _EVERY_AT.search(lower, segment.start, segment.end) if _every(words) else None
    if "respectively" in words:
        products = list(dict.fromkeys(m.product_id for m in here))
        for field_name in {c.field for c in said}:
            of_field = [c for c in said if c.field == field_name and c.start > here[-1].end]
            if len(of_field) == len(products) and all(products):
                out += list(zip(of_field, products, strict=True))
                taken = set(map(id, of_field))
                said = [c for c in said if id(c) not in taken]
    earlier: dict[str | None, None] = {}  # the products named before the claim, in order
    position = 0  # here[:position] end before the claim
    for claim in said:
        while position < len(here) and here[position].end <= claim.start:
            earlier[here[position].product_id] = None
            position += 1
        mention = here[position - 1] if position else None
        if (every and claim.start > every.end() and not _clause_break(lower, every.end(), claim.start)
                and not (mention and _NEXT_TO.fullmatch(lower, mention.end, claim.start))):
            named = earlier if len(earlier) > 1 else dict.fromkeys(m.product_id for m in here)
            pool = [p for p in (named if len(named) > 1 else context if len(context) > 1 else ()) if p]
            if pool:
                out += [(claim, pid) for pid in pool]
                continue
        if (position > 1 and _compared(lower, mention)
                and not _ATTACHED.fullmatch(lower, mention.end, claim.start)):
            mention = here[position - 2]  # "X costs more than Y, at $152": the claim is X's
        if mention is None:
            mention = next((m for m in here[position:position + 2] if m.start >= claim.end), None)
        if mention is not None and mention.product_id and not mention.unknown:
            out.append((claim, mention.product_id))
    return out


def _clause_break(lower: str, start: int, end: int) -> bool:
    """Whether a new clause starts between ``start`` and ``end``."""
    dashes = lower.count("—", start, end) + lower.count("–", start, end)
    return dashes % 2 == 1 or bool(_CLAUSE_BREAK.search(lower, start, end))


def _compared(lower: str, mention: Mention) -> bool:
    """Whether ``mention`` is what something is compared with ("cheaper than the Y", "unlike Y")."""
    words = _WORDS.findall(lower, max(0, mention.start - 24), mention.start)
    while words and words[-1] in ("the", "a", "an", "its", "their"):
        words.pop()
    return bool(words) and (words[-1] in ("than", "vs", "versus", "unlike")
                            or " ".join(words[-2:]) in ("compared to", "compared with", "next to"))


def _compare(claim: Claim, product: Product, tolerance: float) -> tuple[float | str, float | str, bool]:
    """(claimed, catalog, whether they agree) for one claim about ``product``."""
    field_name, kind, value = claim.field, claim.kind, claim.value
    if field_name == "availability":
        actual = product.availability
        return value, actual, value == actual or "out-of-stock" not in (value, actual)
    if field_name == "brand":
        return value, product.brand, value.casefold() == product.brand.casefold()
    if field_name == "price":
        actual = product.price
        if kind == "=":  # "$49" for 49.49 is a rounding
            return value, actual, abs(actual - value) <= max(tolerance * actual, 0.01) or (
                value.is_integer() and abs(value - actual) < 1)
        exact, approximate, digits = max(tolerance * actual, 0.01), max(APPROXIMATE_TOLERANCE * actual, 1.0), 2
    else:
        actual = product.rating
        if kind == "=":
            return value, actual, abs(actual - value) <= RATING_TOLERANCE
        exact, approximate, digits = RATING_TOLERANCE, APPROXIMATE_RATING_TOLERANCE, 1
    shown = f"{value:.{digits}f}"
    if kind == "range":
        return f"{shown}-{claim.high:.{digits}f}", actual, value - exact <= actual <= claim.high + exact
    if kind == "<":
        return f"<{shown}", actual, actual <= value + exact
    if kind == ">":
        return f">{shown}", actual, actual >= value - exact
    return f"~{shown}", actual, abs(actual - value) <= approximate
