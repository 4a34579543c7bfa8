"""Finding personal data in text: e-mail addresses, phone numbers, card numbers.

Plain regular expressions plus the Luhn checksum. A PII library such as Presidio
needs spaCy and a language model: too heavy for a proxy's hot path and its cold
start, so this module stays on the standard library.
"""
from __future__ import annotations

import re
from collections import Counter

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
#: 13 to 19 digits, optionally grouped by single spaces or hyphens.
CARD_CANDIDATE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
#: Optional country code, optional (area), then two groups of 3-4 digits: 555-123-4567,
#: (555) 123 4567, +44 20 7946 0958, +1.555.123.4567. Dates (2024-01-15) do not match.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)")

KINDS = ("email", "card", "phone")


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (as every payment card number does)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_or_itself(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[redacted card]" if luhn_valid(digits) else match.group()


def redact(text: str, kinds: tuple[str, ...] = KINDS) -> tuple[str, Counter]:
    """``text`` with each found item of ``kinds`` replaced by ``[redacted <kind>]``; also the counts.

    E-mail addresses go first (they may hold digits), then card numbers (a card
    number that fails the Luhn check is kept), then phone numbers.
    """
    found: Counter = Counter()
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "card":
            replaced = CARD_CANDIDATE.sub(_card_or_itself, text)
            found[kind] += replaced.count("[redacted card]") - text.count("[redacted card]")
            text = replaced
        else:
            pattern = EMAIL if kind == "email" else PHONE
            text, count = pattern.subn(f"[redacted {kind}]", text)
            found[kind] += count
    return text, +found
