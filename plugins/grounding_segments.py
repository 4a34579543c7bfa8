"""Catalog grounding, the answer's text: its lines cut into sentences, list items and table rows.

:func:`read_segments` gives each its paragraph, whether it is a list item or "Label: value" line (a
claim there may belong to the product named just above), whether it is a question (questions claim
nothing), and, for a table row, its cells with the role their column's header gives them (price,
availability, rating, brand: "| Price | In stock? |").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Caller text reaches every pattern here, so each runs in linear time (plugins/grounding_phrases.py says how).
_TABLE_SEPARATOR = re.compile(r"\A\s*+\|?+(?:\s*+:?+-++:?+\s*+\|?+)++\s*+")
#: Amounts in other currencies than US dollars, which are not compared with the catalog.
OTHER_CURRENCY = re.compile(r"[€£¥₹]|\b(?:eur|euros?|gbp|pounds?|yen|cad|aud|chf|inr|jpy|[a-z]{1,2}\$)")
_ROLES = (("price", re.compile(r"price|cost|usd|\$", re.I)),
          ("availability", re.compile(r"stock|availab|status|inventory", re.I)),
          ("rating", re.compile(r"rating|stars?\b|score|reviews?", re.I)),
          ("brand", re.compile(r"brand|maker|manufacturer|publisher", re.I)))
_LINE_MARKER = re.compile(r"\A(?:\s*+(?:[-*+•]|\d{1,3}+[.)]|#{1,6}+)\s++|\s*+[*_]*+[A-Z][\w ]{0,30}+[*_]*+:)")
_SENTENCE_END = re.compile(r"[.!?](?<![.!?][.!?])[.!?]*+(?=[\s*_)\"”]|$)")  # a class first: the search skips
_ABBREVIATIONS = frozenset("vs approx eg ie inc ltd no st mr dr".split())


@dataclass(slots=True)
class Segment:
    """A sentence, list item or table row."""

    start: int
    end: int
    paragraph: int          # segments in one paragraph (no blank line between) share the number
    listed: bool = False    # a list item, heading or "Label: value" line
    question: bool = False
    row: bool = False       # a table row
    cells: tuple[tuple[int, int, str], ...] = ()  # (start, end, role) of a row


def read_segments(text: str, abbreviations: frozenset[str] | set[str] = frozenset()) -> list[Segment]:
    """Cut ``text`` into sentences, list items and table rows, in order."""
    segments: list[Segment] = []
    paragraph, offset, roles = 0, 0, None
    lines = text.split("\n")
    for number, line in enumerate(lines):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            paragraph += 1
            roles = None
            continue
        if "|" in line and (line.count("|") >= 2 and line.lstrip().startswith("|") or line.count("|") >= 3):
            if _TABLE_SEPARATOR.fullmatch(line):
                continue
            cells = _cells(line, start)
            if roles is None:
                header = number + 1 < len(lines) and _TABLE_SEPARATOR.fullmatch(lines[number + 1])
                roles = [_role(text[a:b]) for a, b in cells] if header else []
                if header:
                    continue
            segments.append(Segment(start, start + len(line), paragraph, row=True, cells=tuple(
                (a, b, roles[i] if i < len(roles) else "") for i, (a, b) in enumerate(cells))))
            continue
        roles = None
        listed = bool(_LINE_MARKER.match(line))
        for a, b in _sentences(line, abbreviations):
            question = "?" in line and line[a:b].rstrip(" *_)\"”").endswith("?")
            segments.append(Segment(start + a, start + b, paragraph, listed, question))
    return segments


def _cells(line: str, start: int) -> list[tuple[int, int]]:
    cells, position = [], 0
    for part in line.split("|"):
        if part.strip() or cells:
            cells.append((start + position, start + position + len(part)))
        position += len(part) + 1
    while cells and cells[-1][0] == cells[-1][1]:
        cells.pop()
    return cells


def _role(header: str) -> str:
    if OTHER_CURRENCY.search(header.lower()):
        return ""
    return next((role for role, pattern in _ROLES if pattern.search(header)), "")


def _sentences(line: str, abbreviations: frozenset[str] | set[str]) -> list[tuple[int, int]]:
    """Sentence spans of one line: ends at ``.``, ``!`` or ``?`` before a space, not after an abbreviation."""
    if "." not in line and "!" not in line and "?" not in line:
        return [(0, len(line))]
    spans, start = [], 0
    for mark in _SENTENCE_END.finditer(line):
        end = mark.start()
        if mark.group() == ".":
            before = line[max(start, end - 8):end].split()
            word = before[-1].lstrip("(\"'*_").lower() if before else ""
            if word in abbreviations or word in _ABBREVIATIONS or word.isdigit() and len(before) == 1 == len(
                    line[start:end].split()):
                continue  # "Campfire Co. Tent", "vs. the", "1. First item"
        spans.append((start, mark.end()))
        start = mark.end()
    if line[start:].strip():
        spans.append((start, len(line)))
    return spans


def lowered(text: str) -> str:
    """``text`` in lower case, character for character (a letter whose lower case is longer stays)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
