"""Catalog grounding, part two: what an answer claims (prices, stock, ratings) and where.

:func:`find_claims` finds each claim with its position, so the caller can give it to the product it
is written about (the sentences, list items and table rows are ``plugins.grounding_segments``').

Claims, and how each is written in the :class:`Claim` (``kind`` says how to compare):

- price, in US dollars only: "$1,299", "$1,299.00", "US$49", "1299 USD", "1,299 dollars" (``=``);
  "under 100 dollars", "less than $50", "$50 or less" (``<``); "over $100", "$50+" (``>``);
  "about $50", "~$50" (``~``); "$40-$60", "between $40 and $60" (``range``). Amounts in other
  currencies ("€45", "45 EUR", "CA$60") are not read at all. Amounts that are not a product's price
  are left out: savings ("save $20", "$20 cheaper", "$20 off"), budgets, shipping and thresholds
  ("free over $50"), fees, monthly amounts, former prices ("originally $59", "(was $59)", "compare at
  $79"), and bundle totals ("together $201", "$230 total", "$150 for both"). Amounts written in words
  ("forty-nine dollars") are not read.
- availability: "in stock", "available now", "ready to ship", "hasn't sold out", "plenty on hand"
  (in-stock); "only a few left", "limited stock", "low stock", "only 3 left", "selling fast"
  (limited); "sold out", "out of stock", "currently unavailable", "not available", "back-ordered",
  "back in stock next week" (out-of-stock). Conditions ("if it is out of stock") are left out.
- rating: "4.5 stars", "4.5-star", "rated 4.8/5", "4.8 out of 5", "a 4.2 rating", "rating: 4.2",
  "★ 4.2", "⭐4.2" (``=``); "4.5+ stars", "at least 4.5", "4.5 stars or higher" (``>``); "about 4.5" (``~``).
- in a table column whose header names the field, a bare number is a price or rating, and "yes",
  "no", "limited", "low" an availability.

Questions ("Want options under $30?") claim nothing.

Speed: the patterns read the answer lower-cased (so they need no case-insensitive matching, whose
alternatives cannot be skipped on their first letter) and only around the words that claims are
written with (``ANCHOR_WORDS``, found as the names module reads the words) and each ``$``.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from plugins.grounding_phrases import (
    AVAILABILITY,
    AVAILABILITY_VALUES,
    NUMBER,
    OUT_OF_FIVE,
    PRICE,
    RATED,
    RATING_BEFORE,
    RATING_NOUN,
    RATING_QUALIFIERS,
    STAR_THEN,
    STARS,
)
from plugins.grounding_segments import OTHER_CURRENCY, Segment

# Caller text reaches every pattern here, so each runs in linear time (plugins/grounding_phrases.py says how).
_AFTER_BOUND = re.compile(r"(?<!\s)\s*+(?:(?P<lt>or\s++(?:less|under|below|lower|cheaper))"
                          r"|(?P<gt>\+|or\s++(?:more|above|higher|better|up)|and\s++up))")
#: What follows an amount that is not a product's price ("$20 cheaper", "$5 shipping", "$10/month").
_NOT_PRICE_AFTER = re.compile(
    r"(?<!\s)\s*+(?:cheaper|less|more|off|extra|savings?|discount|difference|gap|shipping|delivery|fee|deposit"
    r"|budget|gift\s++card|credit|(?:per|a|/)\s*+(?:mo|month|year|yr|week|day)\b|monthly|yearly|annually"
    r"|in\s++savings|over\s++(?:the|its)\s++(?:price|cost)|higher|lower|above|below\s++(?:the|its))")
#: How many characters before a claim its conditions and context are looked for in.
CONTEXT = 40
_CLAUSE_ENDS = ".;?!"
#: What may open a word and still leave it in the phrase that follows ("(about $50)", "*under* $50").
_OPENERS = "(*_\"'“‘["
#: The words just before an amount that bound or soften it.
_LESS = frozenset({"under", "below", "within", "less than", "cheaper than", "lower than", "at most", "up to",
                   "not over", "no more than"})
_MORE = frozenset({"over", "above", "more than", "at least", "upwards of", "north of", "higher than"})
_ABOUT = frozenset({"about", "around", "roughly", "approximately", "approx", "nearly", "almost", "circa", "ca",
                    "~", "≈", "close to", "some"})
#: The last words of those phrases: a claim after any other word has no qualifier.
_QUALIFIER_ENDS = frozenset(phrase.rsplit(None, 1)[-1] for phrase in _LESS | _MORE | _ABOUT)
#: Words before an amount that make it something else than a price ("save $20", "your budget of $100") ...
_NOT_PRICE_WORDS = frozenset(
    "save saves saving saved savings extra additional another difference gap originally regularly normally "
    "usually msrp retail spend spending order orders budget deposit fee fees tax shipping delivery credit "
    "coupon rebate discount off compare free".split())
#: Words that make an amount something else only right before it ("plus $5"; not "Smartwatch Plus is $300").
_NOT_PRICE_JUST_BEFORE = frozenset({"plus"})
_NOT_PRICE_PAIRS = frozenset({("list", "price"), ("down", "from"), ("reduced", "from")})
#: ... looked for past these.
_FILLERS = frozenset("of is are at around about roughly nearly approximately over under below above up to only just "
                     "costs cost a an the your by be will would than more less".split())
#: What the words of _NOT_PRICE_WORDS and _NOT_PRICE_PAIRS start with: without one of them before an
#: amount, the words before it cannot make it something else than a price.
_NOT_PRICE_HINT = re.compile(r"sav|extra|addition|another|differen|gap|origin|regular|normal|usual|msrp|retail|spend"
                             r"|order|budget|deposit|fee|tax|shipping|delivery|credit|coupon|rebate|discount|off"
                             r"|compare|free|list|down|reduc")
#: The words before an amount after which more words must be read to tell what the amount is.
_LOOK_FURTHER = _FILLERS | _NOT_PRICE_WORDS | _NOT_PRICE_JUST_BEFORE | _QUALIFIER_ENDS | {"between", "was"}
#: Words of a sentence part before an amount that make it a total, and what may follow one.
_TOGETHER = re.compile(r"together|combined|in\s++total|total\s++of|altogether|bundle|for\s++both|for\s++all")
_TOGETHER_AFTER = re.compile(r"(?<!\s)\s*+(?:total|in\s++total|together|combined|altogether|for\s++(?:both|all|the\s++"
                             r"(?:pair|set|two|three|lot)))\b")
_CONDITION = re.compile(r"\b(?:if|whether|unless|once|when|in\s++case)\b")
_CONDITION_HINTS = ("if", "whether", "unless", "once", "when", "case")
_CELL_NUMBER = re.compile(rf"\A\s*+[*_]*+\s*+~?+\s*+\$?+\s*+(?P<n>{NUMBER})(?:\s*+(?:/\s*+5|[★⭐]|stars?|usd))?+"
                          r"\s*+[*_]*+\s*+")
_CELL_AVAILABILITY = {"yes": "in-stock", "✓": "in-stock", "✅": "in-stock", "✔": "in-stock",
                      "available": "in-stock", "no": "out-of-stock", "✗": "out-of-stock", "❌": "out-of-stock",
                      "✘": "out-of-stock", "limited": "limited", "low": "limited"}
#: Lower-case words near which availability and rating claims and currency words are written:
#: ``plugins.grounding_index.read_words`` reports where they are, and only the text around them is read.
AVAILABILITY_WORDS = frozenset(
    "stock stocks stocked sold available unavailable availability left remaining backorder backordered backorders "
    "order ordered ship ships supply supplies selling gone limited running inventory status none short".split())
RATING_WORDS = frozenset("star stars rated rating ratings average score out".split())
CURRENCY_WORDS = frozenset("usd us dollar dollars buck bucks".split())
ANCHOR_WORDS = AVAILABILITY_WORDS | RATING_WORDS | CURRENCY_WORDS
#: How far before and after an anchor its claim may reach, in characters.
_AVAILABILITY_REACH = (24, 22)
_CURRENCY_REACH = (24, 8)


@dataclass(slots=True)
class Claim:
    """One claim: its place in the answer, the field, how to compare (``kind``) and the value."""

    start: int
    end: int
    field: str   # "price", "availability", "rating" or "brand"
    kind: str    # "=", "~", "<", ">" or "range" (prices and ratings); "=" otherwise
    value: float | str
    high: float | None = None  # a range's upper end


def find_claims(lower: str, segments: list[Segment], anchors: list[tuple[int, str]]) -> list[Claim]:
    """Every price, availability and rating claim of an answer, in order (questions left out).

    ``lower`` is the answer as ``plugins.grounding_segments.lowered`` returns it; ``anchors`` are
    (start, lower-case word) of the words of ``ANCHOR_WORDS`` in it; prices are also looked for at
    each ``$``.
    """
    claims = [*_prices(lower, [at for at, word in anchors if word in CURRENCY_WORDS]),
              *_availabilities(lower, [at for at, word in anchors if word in AVAILABILITY_WORDS]),
              *_ratings(lower, anchors)]
    cells = _cell_claims(lower, segments)
    if cells:  # a cell's bare value counts when nothing in the cell said it already ("| $49 |")
        said: dict[str, list[int]] = {}
        for claim in claims:
            said.setdefault(claim.field, []).append(claim.start)
        for starts in said.values():
            starts.sort()
        for cell in cells:
            starts = said.get(cell.field, [])
            at = bisect_left(starts, cell.start)
            if at == len(starts) or starts[at] >= cell.end:
                claims.append(cell)
    claims.sort(key=lambda c: c.start)
    questions = [(s.start, s.end) for s in segments if s.question]
    if questions:
        starts = [a for a, _ in questions]
        claims = [c for c in claims if not (at := bisect_right(starts, c.start)) or c.start >= questions[at - 1][1]]
    return claims


def _windows(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """``spans`` clipped to the text, sorted and merged where they overlap."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        start, end = max(0, start), min(size, end)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _amount(text: str) -> float:
    return float(text.replace(",", ""))


def _context(lower: str, start: int) -> tuple[list[str], int]:
    """The words before ``start`` in its clause (at most 8, nearest last), and how many of the last of
    them are in the same phrase (no comma, colon, bar or bracket between them and ``start``)."""
    window = lower[max(0, start - CONTEXT):start]
    newline = window.rfind("\n")
    if newline != -1:
        window = window[newline + 1:]
    words: list[str] = []
    phrase, open_phrase = 0, True
    for chunk in reversed(window.rsplit(None, 8)[-8:]):
        if chunk[-1] in _CLAUSE_ENDS:
            break
        word = chunk.lstrip(_OPENERS)
        if not (word.isalpha() or word in ("~", "≈")):
            open_phrase = False
            continue
        words.append(word)
        if open_phrase:
            phrase += 1
            open_phrase = word is chunk or len(word) == len(chunk)
    words.reverse()
    return words, phrase


def _ends_with(words: list[str], vocabulary: frozenset[str]) -> bool:
    """Whether ``words`` end with one of ``vocabulary``'s one-, two- or three-word phrases."""
    return bool(words) and (words[-1] in vocabulary or " ".join(words[-2:]) in vocabulary
                            or " ".join(words[-3:]) in vocabulary)


def _last_word(lower: str, start: int) -> str:
    """The last whitespace-separated chunk before ``start`` (cheap: most claims stop here)."""
    chunks = lower[max(0, start - 16):start].rsplit(None, 1)
    return chunks[-1].lstrip(_OPENERS) if chunks else ""


def _qualifier(lower: str, start: int, end: int, last: str | None = None,
               context: tuple[list[str], int] | None = None) -> str:
    """``<``, ``>``, ``~`` or ``=``, from the words just before a number and just after it (``last``
    and ``context``, when the caller has them already)."""
    after = _AFTER_BOUND.match(lower, end)
    if after:
        return "<" if after.group("lt") else ">"
    if lower[start - 1:start] in ("~", "≈"):
        return "~"
    if (_last_word(lower, start) if last is None else last) not in _QUALIFIER_ENDS:
        return "="
    words, phrase = context or _context(lower, start)
    before = words[len(words) - phrase:] if phrase else []
    if _ends_with(before, _LESS):
        return "<"
    if _ends_with(before, _MORE):
        return ">"
    return "~" if _ends_with(before, _ABOUT) else "="


def _not_a_price(before: list[str]) -> bool:
    """Whether the words before an amount make it a saving, budget, fee or former price."""
    if before and before[-1] in _NOT_PRICE_JUST_BEFORE:
        return True
    for position in range(len(before) - 1, max(-1, len(before) - 5), -1):
        word = before[position]
        if word in _NOT_PRICE_WORDS:
            return True
        if word not in _FILLERS:
            return (before[position - 1] if position else "", word) in _NOT_PRICE_PAIRS
    return False


def _bundle(lower: str, start: int, end: int) -> bool:
    """Whether an amount is the total of several products ("together $201", "$230 total", "$150 for both"):
    bundles are not checked, neither against one product nor against the sum."""
    clause = lower[max(0, start - 2 * CONTEXT):start]
    together = _TOGETHER.search(clause, max(clause.rfind(". "), clause.rfind("\n"), clause.rfind("; ")) + 1)
    return bool(together or _TOGETHER_AFTER.match(lower, end))


def _former(lower: str, start: int, end: int, last: str) -> bool:
    """Whether an amount is a former price: "(was $59)", "was $59, now $49"."""
    if last != "was":
        return False
    was = lower.rfind("was", 0, start)
    return lower[was - 1:was] == "(" or "now" in lower[end:end + 24]


def _conditional(lower: str, start: int) -> bool:
    """Whether a condition ("if", "unless", "in case") comes before a claim in its sentence."""
    window = lower[max(0, start - 2 * CONTEXT):start]
    if not any(word in window for word in _CONDITION_HINTS):
        return False
    cut = max(window.rfind(". "), window.rfind("\n"), window.rfind("; "), window.rfind("? "), window.rfind("! "))
    return bool(_CONDITION.search(window, cut + 1))


def _prices(lower: str, anchors: list[int]) -> list[Claim]:
    found: dict[int, Claim] = {}
    covered = 0
    for match in sorted(_price_matches(lower, anchors), key=lambda m: m.start()):
        start, end = match.span()
        if start in found or start < covered:
            continue  # the second amount of a range already read ("$45-$55")
        last = _last_word(lower, start)
        further = last in _LOOK_FURTHER and (last not in _FILLERS or last in _QUALIFIER_ENDS
                                             or _NOT_PRICE_HINT.search(lower, max(0, start - CONTEXT), start))
        context = _context(lower, start) if further else ([], 0)
        before = context[0]
        if (_not_a_price(before) or _NOT_PRICE_AFTER.match(lower, end) or _former(lower, start, end, last)
                or _bundle(lower, start, end)):
            continue
        low = _amount(match.group("a") or match.group("b"))
        high = _amount(match.group("hi")) if match.group("hi") else None
        if high is not None and high > low:
            found[start] = Claim(start, end, "price", "range", low, high)
            covered = end
            continue
        if high is not None:
            end = match.end("a") if match.group("a") else match.end("b")  # "$49 - 4.2 stars"
        kind = "between" if before[-1:] == ["between"] else _qualifier(lower, start, end, last, context)
        found[start] = Claim(start, end, "price", kind, low)
    return _join_between(lower, sorted(found.values(), key=lambda c: c.start))


def _price_matches(lower: str, anchors: list[int]) -> Iterator[re.Match]:
    """Price matches at each ``$`` ("$49", "US$49") and near each currency word ("49 USD", "USD 49")."""
    at = lower.find("$")
    while at != -1:
        match = PRICE.match(lower, at)
        if match is None and at >= 2 and lower[at - 1].isalpha():
            match = PRICE.match(lower, at - 2) or PRICE.match(lower, max(0, at - 3))  # "US$49", "US $49"
        if match:
            yield match
        at = lower.find("$", at + 1)
    before, after = _CURRENCY_REACH
    for start, end in _windows([(at - before, at + after) for at in anchors], len(lower)):
        yield from PRICE.finditer(lower, start, end)


def _join_between(lower: str, found: list[Claim]) -> list[Claim]:
    """Join "between $40 and $60" (two matches) into one range claim; a lone "between $40" is exact."""
    out: list[Claim] = []
    for claim in found:
        if out and out[-1].kind == "between" and lower[out[-1].end:claim.start].strip() == "and":
            low = out.pop()
            out.append(Claim(low.start, claim.end, "price", "range", min(low.value, claim.value),
                             max(low.value, claim.value)))
            continue
        out.append(claim)
    for claim in out:
        if claim.kind == "between":
            claim.kind = "="
    return out


def _availabilities(lower: str, anchors: list[int]) -> list[Claim]:
    found = []
    before, after = _AVAILABILITY_REACH
    for start, end in _windows([(at - before, at + after) for at in anchors], len(lower)):
        for match in AVAILABILITY.finditer(lower, start, end):
            if _conditional(lower, match.start()):
                continue
            value = AVAILABILITY_VALUES[match.lastindex - 1]
            found.append(Claim(match.start(), match.end(), "availability", "=", value))
    return found


def _ratings(lower: str, anchors: list[tuple[int, str]]) -> list[Claim]:
    """Ratings, read at each rating word and each ``/``, ``★`` and ``⭐``."""
    found: dict[int, Claim] = {}

    def add(value: re.Match, end: int, kind: str = "") -> None:
        start = value.start("v")
        number = float(value.group("v"))
        if start not in found and number <= 5:
            found[start] = Claim(start, end, "rating", kind or _qualifier(lower, start, end), number)

    marks = [(at, mark) for mark in ("/", *STARS) for at in _positions(lower, mark)]
    for at, word in anchors + marks:
        if word in ("star", "stars", "out", "/", *STARS):
            number = RATING_BEFORE.search(lower, max(0, at - 12), at)
            if number and (word not in ("out", "/") or OUT_OF_FIVE.match(lower, at)):
                add(number, at + len(word), ">" if number.group("plus") else "")
            if word in STARS and (after := STAR_THEN.match(lower, at)):
                add(after, after.end())
        elif word in ("rated", "rating", "average", "score"):
            rated = RATED.match(lower, at)
            if rated:
                add(rated, rated.end(), RATING_QUALIFIERS.get(rated.group("q") or "", ""))
            elif word != "rated" and (noun := RATING_NOUN.search(lower, max(0, at - CONTEXT), at)):
                add(noun, at + len(word))
    return list(found.values())


def _positions(text: str, mark: str) -> list[int]:
    """Where ``mark`` occurs in ``text``."""
    out = []
    at = text.find(mark)
    while at != -1:
        out.append(at)
        at = text.find(mark, at + 1)
    return out


def _cell_claims(lower: str, segments: list[Segment]) -> list[Claim]:
    """Bare values in table columns whose header names the field ("| 49.00 |" under "Price")."""
    found = []
    for segment in segments:
        for start, end, role in segment.cells:
            cell = lower[start:end]
            if role in ("price", "rating"):
                match = _CELL_NUMBER.fullmatch(cell)
                if match and not OTHER_CURRENCY.search(cell):
                    value = _amount(match.group("n"))
                    if role == "price":
                        found.append(Claim(start, end, "price", "~" if "~" in cell else "=", value))
                    elif value <= 5:
                        found.append(Claim(start, end, "rating", "=", value))
            elif role == "availability":
                word = cell.strip(" *_")
                if word in _CELL_AVAILABILITY:
                    found.append(Claim(start, end, "availability", "=", _CELL_AVAILABILITY[word]))
    return found
