"""Catalog grounding, how claims are written: the patterns of prices, stock and ratings.

Prices in US dollars ("$1,299.00", "US$49", "1299 USD", "49 dollars", "$40-$60"), the phrases of
stock by the catalog value they claim, and the ways ratings are written ("4.5 stars", "rated 4.8/5",
"a 4.2 rating"). ``plugins.grounding_claims`` applies them around the words claims are written with.

Caller text reaches every pattern here, so each runs in linear time: every quantifier beside one that
could take the same characters is possessive (plugins/catalog_search.py explains the quadratic trap),
and a pattern that could start anywhere in a long run (of spaces, dots, stars) either starts with a
look-behind that lets it start only at the run's first character, or with ``\\A`` when it is only
ever matched at the start of a line or cell. tests/test_linear_parsing.py times every pattern.
"""
from __future__ import annotations

import re

NUMBER = r"\d{1,3}+(?:,\d{3})++(?:\.\d++)?+|\d++(?:\.\d++)?+"
_USD_BEFORE = r"(?:\bus\s?\$|\busd\s*+|(?<![a-z$])\$)"
_USD_AFTER = r"(?:usd|us\s++dollars?|dollars?|bucks)\b"
PRICE = re.compile(
    rf"(?:{_USD_BEFORE}\s*+(?P<a>{NUMBER})(?![\d,]?\d)(?:\s*+(?:usd|dollars?)\b)?+"
    rf"|(?<![\w.,$€£¥₹])(?P<b>{NUMBER})(?![\d,]?\d)\s*+{_USD_AFTER})"
    rf"(?:\s*+(?:-|–|—|to)\s*+(?:{_USD_BEFORE}\s*+)?(?P<hi>{NUMBER})(?![\d,]?\d)(?:\s*+{_USD_AFTER})?+)?+")


def _labelled(values: str) -> tuple[str, ...]:
    """Phrases of a labelled value: "Availability: Limited", "Stock: low", "Status: no" ..."""
    return tuple(rf"{label}\s*+[:=]\s*+[*_]*+\s*+(?:{values})" for label in (
        r"availability", r"stock(?:\s++status)?+", r"status", r"inventory"))


#: How stock is written, by the catalog value it claims. Each phrase starts with a letter, so the search
#: passes over a word that starts no phrase on its first letter; at one place, earlier phrases win.
AVAILABILITY_PHRASES = {
    "out-of-stock": (
        r"sold[\s-]++out", r"out[\s-]++of[\s-]++stock", r"unavailable",
        r"not\s++(?:currently\s++|yet\s++)?+(?:in[\s-]++stock|available|stocked)",
        r"no\s++longer\s++(?:available|in\s++stock|stocked|sold|carried)",
        r"isn[’']t\s++(?:currently\s++)?+(?:in\s++stock|available)",
        r"aren[’']t\s++(?:currently\s++)?+(?:in\s++stock|available)", r"back[\s-]*+order(?:ed|s)?+",
        r"on\s++back[\s-]*+order", r"will\s++be\s++back\s++in\s++stock", r"expected\s++back\s++in\s++stock",
        r"due\s++back\s++in\s++stock", r"should\s++be\s++back\s++in\s++stock",
        r"back\s++in\s++stock\s++(?:soon|next|later|in|on|by|after|within|around|from)",
        r"none\s++(?:left|in\s++stock)", r"no\s++stock", *_labelled("no")),
    "limited": (
        r"only\s++(?:a\s++(?:few|couple|handful)|few|\d{1,3}+|one|two|three|four|five)(?:\s++(?:are|is))?+"
        r"(?:\s++(?:of\s++(?:them|these)|more|units?|items?|pieces?|left|remaining|in\s++stock|available))++",
        r"just\s++(?:a\s++(?:few|couple|handful)|few|\d{1,3}+|one|two|three|four|five)(?:\s++(?:are|is))?+"
        r"(?:\s++(?:units?|items?|pieces?))?+\s++(?:left|remaining)",
        r"almost\s++(?:sold\s++out|gone|out\s++of\s++stock)", r"nearly\s++(?:sold\s++out|gone|out\s++of\s++stock)",
        r"limited\s++(?:stock|availability|quantit(?:y|ies)|supply|supplies|inventory|units)",
        r"low\s++(?:on\s++)?+(?:stock|inventory|supply)", r"short\s++(?:on\s++)?+(?:stock|inventory|supply)",
        r"stock\s++is\s++(?:limited|low|running\s++low)", r"stocks\s++are\s++(?:limited|low|running\s++low)",
        r"supplies\s++are\s++(?:limited|low|running\s++low)", r"inventory\s++is\s++(?:limited|low|running\s++low)",
        r"running\s++low", r"selling\s++(?:fast|quickly|out)", r"a\s++few\s++(?:left|remaining|units\s++left)",
        r"few\s++(?:left|remaining|units\s++left)", r"while\s++(?:stocks?|supplies)\s++last",
        *_labelled("limited|low")),
    "in-stock": (
        r"in[\s-]++stock", r"hasn[’']t\s++sold\s++out", r"haven[’']t\s++sold\s++out", r"has\s++not\s++sold\s++out",
        r"not\s++(?:yet\s++)?+sold\s++out", r"isn[’']t\s++sold\s++out", r"aren[’']t\s++sold\s++out",
        r"never\s++out\s++of\s++stock", r"on\s++hand",
        r"available\s++(?:now|today|immediately|to\s++(?:order|buy|ship)|for\s++(?:purchase|order|immediate))",
        r"currently\s++available", r"readily\s++available", r"widely\s++available", r"still\s++available",
        r"immediately\s++available", r"is\s++(?:also\s++)?+available", r"are\s++(?:also\s++)?+available",
        r"’s\s++(?:also\s++)?+available", r"'s\s++(?:also\s++)?+available", r"ready\s++to\s++ship",
        r"ships\s++(?:now|today|immediately|right\s++away|same[\s-]++day)", r"well[\s-]++stocked",
        r"plenty\s++(?:of\s++stock|in\s++stock|available)", r"lots\s++(?:of\s++stock|in\s++stock|available)",
        r"in\s++good\s++supply", r"available(?=\s*+(?:[.,;:!)|*]|$))", *_labelled("yes")),
}


def by_first_letter(alternatives: list[str]) -> str:
    """``alternatives`` (patterns that each start with one plain character) as one alternation grouped
    by that character, in their order: at each place the search tries only the phrases that start
    with the letter there, instead of every phrase's first letter in turn."""
    groups: dict[str, list[str]] = {}
    for alternative in alternatives:
        if alternative[0] in "\\[(.*+?{|^$":
            raise ValueError(f"{alternative!r} must start with a plain character")
        groups.setdefault(alternative[0], []).append(alternative[1:])
    return "(?:" + "|".join(re.escape(first) + "(?:" + "|".join(rests) + ")" for first, rests in groups.items()) + ")"


def _phrase_pattern(phrases: dict[str, tuple[str, ...]]) -> tuple[re.Pattern, tuple[str, ...]]:
    """One pattern of all ``phrases``, each closed by an empty group, and the value of each group.

    Flat (grouped by first letter), so that the search tries a phrase only at a word whose first
    letter it starts with (a named group around each value's phrases would make it enter every group
    at every word).
    """
    ordered = [(alternative, value) for value, alternatives in phrases.items() for alternative in alternatives]
    ordered.sort(key=lambda pair: pair[0][0])  # stable: phrases keep their order within a letter
    pattern = by_first_letter([f"{alternative}()" for alternative, _ in ordered])
    return re.compile(rf"\b{pattern}\b"), tuple(value for _, value in ordered)


AVAILABILITY, AVAILABILITY_VALUES = _phrase_pattern(AVAILABILITY_PHRASES)
_RATING_VALUE = r"[0-5](?:\.\d++)?+"
#: Ratings are read at their words: the number before "stars", "★", "/5", "out of 5" ...
RATING_BEFORE = re.compile(rf"(?<![\w.])(?P<v>{_RATING_VALUE})\s*+(?P<plus>\+)?+\s*+-?+\s*+$")
OUT_OF_FIVE = re.compile(r"(?:/|out\s++of)\s*+5(?:\.0++)?+(?![\d.]?\d|/)")
STAR_THEN = re.compile(rf"[★⭐]\ufe0f?+\s*+(?P<v>{_RATING_VALUE})(?![\d.]?\d|\s*+/\s*+(?!5)\d)")
#: The star signs a rating is written with.
STARS = ("★", "⭐")
#: ... the number after "rated", "rating of", "average rating:" ...
RATED = re.compile(
    rf"(?:rated(?:\s++at)?+|rating(?:\s++of)?+\s*+[:=]?+|average\s++rating(?:\s++of)?+\s*+[:=]?+|score\s*+[:=]?+)"
    rf"\s*+(?:an?\s++)?+(?:(?P<q>at\s++least|above|over|about|around|nearly|almost|roughly|close\s++to"
    rf"|an\s++average\s++of|a\s++(?:solid|perfect|strong))\s++)?+(?P<v>{_RATING_VALUE})"
    rf"(?![\d.]?\d|\s*+(?:%|percent|reviews?|ratings|out\s++of\s++(?!5)\d))")
#: ... and the number of "a 4.2 rating", "an impressive 4.8 average" (read backwards from the noun).
RATING_NOUN = re.compile(
    r"a(?<![\w.]a)n?+\s++(?:(?:solid|perfect|strong|respectable|impressive|average|high|excellent|great"
    r"|stellar)\s++)?+(?P<v>[0-5]\.\d++)(?:\s*+/\s*+5|\s*+-?+\s*+stars?)?+\s++"
    r"(?:average\s++|customer\s++|user\s++|star\s++)?+$")
RATING_QUALIFIERS = {"at least": ">", "above": ">", "over": ">", "about": "~", "around": "~", "nearly": "~",
                      "almost": "~", "roughly": "~", "close to": "~"}
