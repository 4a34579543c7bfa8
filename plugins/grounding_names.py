"""Catalog grounding, part one: which products an answer names.

:func:`find_mentions` reads an answer's words (``plugins.grounding_index.read_words``; the cost grows
with the answer, not the catalog):

1. Exact full names, longest first ("Voltara 20000mAh Power Bank", "The Quiet Harbor").
2. Phrases: runs of name-like words (capitalised mid-sentence, numbers, catalog name words) with
   nothing but spaces, hyphens, apostrophes or ``&`` between them.

   - A phrase with a brand names the brand's product whose model words it covers best, when only
     one does ("the Voltara power bank", "Orbix's low-profile keyboard", "the Pulsewise Pro HR chest
     strap"). A capitalised word or a number the product's name lacks makes it another product: an
     unknown one ("Voltara HyperCharge 9000 Pro", "Voltara 30000mAh Power Bank", "... Keyboard Pro"
     where the catalog has "... Keyboard Lite"), or, when another brand's product has every model
     word, that product under the wrong brand ("Copperpot's Deep Cast Iron Skillet" is Ferro & Salt's).
     Lower-case descriptive words ("wireless", "enameled") do not.
   - A phrase without a brand names a product mentioned lately whose name holds all its words ("the
     power bank", "the Santoku"), or the one catalog product holding them (two words at least, one
     rare in the catalog). A plural the name does not have ("other power banks") names no product.
     A capitalised phrase with a word the catalog has never used and a product word, number or
     version word ("ZenBeat Pro Earbuds", "Instant Vortex Plus") is an unknown product.
   - Two products of a brand covered equally ("the Kestrel Tech 4K webcam") name neither: the
     mention is kept as ambiguous, so claims next to it are not given to another product.
3. Titles in italics or quotes ("*The Navigator's Son*") that name no catalog product are unknown.
4. Product ids, by the shapes of the catalog's ids ("ELE-0004"); an id of such a shape that the
   catalog lacks is an unknown product.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress, count

from plugins.grounding_index import (
    COMMON,
    DESCRIPTIVE,
    GENERIC,
    JOINED,
    NOT_ONE,
    VARIANTS,
    GroundingIndex,
    Name,
    Words,
    normalise,
    read_words,
)


@dataclass(slots=True)
class Mention:
    """A stretch of the answer that names a product (``product_id``), or names one that cannot be
    told (None: ambiguous, or unknown when ``unknown``)."""

    start: int
    end: int
    product_id: str | None
    unknown: bool = False
    brand_only: str = ""     # a brand alone ("made by Orbix"): its brand key
    brand_written: str = ""  # the brand key written in the name when the product is another brand's


def find_mentions(text: str, index: GroundingIndex) -> tuple[Words, list[Mention]]:
    """The products ``text`` names, in order, with ambiguous and unknown names and lone brands
    (and the words read, with where claim words are)."""
    words = read_words(text, index)
    covered = _full_names(words, index)
    mentions: list[Mention] = []
    named: dict[str, None] = {}  # the products named lately, most recent last
    for first, last in _phrases(words, covered, index):
        for mention in _resolve(text, words, covered, first, last, index, named) or ():
            mentions.append(mention)
            if mention.product_id and not mention.unknown:
                named.pop(mention.product_id, None)
                named[mention.product_id] = None
                if len(named) > RECENT:
                    del named[next(iter(named))]
    mentions += _titles(text, mentions)
    if index.id_pattern is not None:
        ids = _ids(text, index)
        if ids:  # an id is read as an id, not as a name ("ELE-0009" is no invented "ELE")
            mentions = [m for m in mentions if not any(i.start < m.end and m.start < i.end for i in ids)] + ids
    mentions.sort(key=lambda m: m.start)
    return words, mentions


def _full_names(words: Words, index: GroundingIndex) -> list[str | None]:
    """For each word, the product whose full name it is part of (exact match, longest first)."""
    norms, caps, soft, size = words.norms, words.caps, words.soft, len(words.norms)
    covered: list[str | None] = [None] * size
    free = 0  # words before this are in a full name already
    for k in compress(count(), map(index.sequence_starts.__contains__, norms)):  # picked in C
        if k < free or k + 1 >= size or not caps[k]:
            continue
        for sequence, pid in index.sequences.get((norms[k], norms[k + 1]), ()):
            end = k + len(sequence)
            if end <= size and tuple(norms[k:end]) == sequence and all(soft[k + 1:end]):
                covered[k:end] = [pid] * len(sequence)
                free = end
                break
    return covered


def _phrases(words: Words, covered: list[str | None], index: GroundingIndex) -> list[tuple[int, int]]:
    """Runs of words joined by name glue, as (first, end) word indexes; a lone word only if it could
    name something alone (a brand, a name word: "the Santoku", "the keyboard")."""
    out = []
    soft, norms, caps, size = words.soft, words.norms, words.caps, len(words.norms)
    heads, brand_starts, vocabulary = index.heads, index.brand_starts, index.vocabulary
    k = 0
    while k < size:
        end = k + 1
        while end < size and soft[end] == JOINED:
            end += 1
        norm = norms[k]
        if end - k > 1 or covered[k] or norm in heads or caps[k] and (norm in brand_starts or norm in vocabulary):
            out.append((k, end))
        k = end
    return out


def _initials(text: str, words: Words, k: int, name: Name) -> bool:
    """Whether word ``k`` is written in capitals as the initials of words of ``name`` ("HR", "Heart Rate")."""
    written = text[words.starts[k]:words.ends[k]]
    size = len(written)
    if not (2 <= size <= 4 and written.isalpha() and written.isupper()):
        return False
    letters = written.lower()
    sequence = name.sequence
    return any(all(sequence[at + n][0] == letters[n] for n in range(size)) for at in range(len(sequence) - size + 1))


def _covers(text: str, words: Words, k: int, name: Name) -> bool:
    """Whether ``name`` holds word ``k`` (or the words it is the initials of)."""
    return words.norms[k] in name.words or _initials(text, words, k, name)


def _conflicts(text: str, words: Words, k: int, name: Name) -> bool:
    """Whether word ``k`` says the phrase names another product than ``name``: a number, or a
    capitalised word, that the name does not hold (lower-case words only describe)."""
    norm = words.norms[k]
    if norm in GENERIC or norm in DESCRIPTIVE or _covers(text, words, k, name):
        return False
    return norm[0].isdigit() or words.caps[k]


def _resolve(text: str, words: Words, covered: list[str | None], first: int, end: int,
             index: GroundingIndex, named: dict[str, None]) -> list[Mention] | None:
    """What the phrase of words ``first``..``end`` names, if anything."""
    starts, ends = words.starts, words.ends
    exact = [k for k in range(first, end) if covered[k]]
    if exact:
        return _resolve_exact(text, words, covered, first, end, exact, index)
    brand_at = _brand(words, first, end, index)
    if brand_at is not None:
        brand, brand_first, brand_end = brand_at
        model = [k for k in range(brand_end, end)]
        model += [k for k in range(first, brand_first) if (brand, words.norms[k]) in index.brand_postings]
        if not model:
            return [Mention(starts[brand_first], ends[brand_end - 1], None, brand_only=brand)]
        span = (starts[brand_first], ends[end - 1])
        return _resolve_branded(text, words, model, brand, span, index)
    return _resolve_plain(text, words, first, end, index, named)


def _resolve_exact(text: str, words: Words, covered: list[str | None], first: int, end: int, exact: list[int],
                   index: GroundingIndex) -> list[Mention]:
    spans: dict[str, list[int]] = {}
    for k in exact:
        spans.setdefault(covered[k], []).append(k)
    if len(spans) == 1:
        name = index.names[covered[exact[0]]]
        if any(_conflicts(text, words, k, name) for k in range(first, end) if not covered[k]):
            return [Mention(words.starts[first], words.ends[end - 1], None, unknown=True)]
    return [Mention(words.starts[inside[0]], words.ends[inside[-1]], pid) for pid, inside in spans.items()]


def _brand(words: Words, first: int, end: int, index: GroundingIndex) -> tuple[str, int, int] | None:
    """The first catalog brand written (capitalised) in the phrase: its key and word span."""
    for k in range(first, end):
        if not words.caps[k]:
            continue
        for brand_words, brand in index.brand_starts.get(words.norms[k], ()):
            size = len(brand_words)
            if k + size <= end and tuple(words.norms[k:k + size]) == brand_words:
                return brand, k, k + size
    return None


def _best(scores: dict[str, int]) -> list[str]:
    """The products with the highest score (several when tied)."""
    top = max(scores.values())
    return [pid for pid, score in scores.items() if score == top]


def _resolve_branded(text: str, words: Words, model: list[int], brand: str, span: tuple[int, int],
                     index: GroundingIndex) -> list[Mention] | None:
    """A phrase with a brand: the brand's product it names, another brand's product it names under
    the wrong brand, an unknown product, or (two products fitting as well) an ambiguous name."""
    scores: dict[str, int] = {}
    for norm in {words.norms[k] for k in model}:
        for pid in index.brand_postings.get((brand, norm), ()):
            scores[pid] = scores.get(pid, 0) + 1
    start, stop = span
    if scores:
        best = _best(scores)
        clean = [pid for pid in best if not any(_conflicts(text, words, k, index.names[pid]) for k in model)]
        if len(best) == 1 and clean:
            return [Mention(start, stop, clean[0])]
        if clean:
            return [Mention(start, stop, None)]  # ambiguous
    other = _other_brand(text, words, model, brand, index)
    if other:
        return [Mention(start, stop, other, brand_written=brand)]
    # A near miss of one of the brand's products, or a product the brand does not make: "Voltara
    # HyperCharge 9000 Pro", "Nordvik Breeze Tower Fan" (lower-case words after a brand only describe it).
    productlike = scores or any(words.norms[k] in index.heads or words.caps[k] or words.norms[k][0].isdigit()
                                for k in model if words.norms[k] not in GENERIC)
    return [Mention(start, stop, None, unknown=True)] if productlike else None


def _other_brand(text: str, words: Words, model: list[int], brand: str, index: GroundingIndex) -> str | None:
    """The one product of another brand whose name holds every (two at least) model word of a phrase."""
    norms = [words.norms[k] for k in model if words.norms[k] not in GENERIC]
    known = [norm for norm in norms if norm in index.postings]
    if len(set(norms)) < 2 or not known:
        return None
    rarest = min(known, key=index.frequency)
    if index.frequency(rarest) > MAX_CANDIDATES:
        return None
    fitting = [pid for pid in index.postings[rarest] if index.names[pid].brand != brand
               and all(_covers(text, words, k, index.names[pid]) for k in model if words.norms[k] not in GENERIC)]
    return fitting[0] if len(fitting) == 1 else None


#: How many of the products named last a phrase without a brand may point back to ("the power bank").
RECENT = 16
#: A word held by more products than this does not, alone, pick candidates for a phrase without a brand.
MAX_CANDIDATES = 64
#: Words before a lone name word that make it point at one product ("the Santoku").
_DETERMINERS = frozenset("the this that our your its their".split())


def _resolve_plain(text: str, words: Words, first: int, end: int, index: GroundingIndex,
                   named: dict[str, None]) -> list[Mention] | None:
    """A phrase without a brand: a product named lately, the one product holding its words, or unknown."""
    norms = {words.norms[k] for k in range(first, end)} - GENERIC - DESCRIPTIVE
    if not norms:
        return None
    start, stop = words.starts[first], words.ends[end - 1]
    if _word_before(text, start) not in NOT_ONE and (end - first > 1 or _determined(text, start)):
        last = text[words.starts[end - 1]:stop].lower()
        earlier = [pid for pid in named if norms <= index.names[pid].words and _same_number(last, index.names[pid])]
        if len(earlier) == 1:
            return [Mention(start, stop, earlier[0])]
        if len(earlier) > 1:
            return [Mention(start, stop, None)]
        pid = _only_product(text, words, first, end, norms, index)
        if pid:
            return [Mention(start, stop, pid)]
    if _invented(text, words, first, end, index):
        return [Mention(start, stop, None, unknown=True)]
    return None


def _word_before(text: str, start: int) -> str:
    """The word just before ``start``, lower-cased ("" when something else comes between)."""
    before = text[max(0, start - 12):start]
    if not before.endswith(" "):
        return ""
    words = before.split()
    return words[-1].lower() if words else ""


def _determined(text: str, start: int) -> bool:
    """Whether the word before ``start`` is "the", "this", "our" ... (one thing, not a kind of thing)."""
    return _word_before(text, start) in _DETERMINERS


def _same_number(written: str, name: Name) -> bool:
    """Whether a phrase's last word, as written, is in the number the name has it in ("poles" for
    "Trekking Poles"; "power banks" is a kind of product, not the "Power Bank")."""
    return written in name.written or normalise(written) == written


def _only_product(text: str, words: Words, first: int, end: int, norms: set[str],
                  index: GroundingIndex) -> str | None:
    """The one product whose name holds at least two of the phrase's words, one of them rare."""
    known = [n for n in norms if n in index.postings]
    if len(known) < 2:
        return None
    rarest = min(known, key=index.frequency)
    if index.frequency(rarest) > MAX_CANDIDATES:
        return None
    scores = {pid: len(norms & index.names[pid].words) for pid in index.postings[rarest]}
    best = _best(scores)
    if len(best) != 1 or scores[best[0]] < 2:
        return None
    name = index.names[best[0]]
    if min(index.frequency(n) for n in norms & name.words) > 2:
        return None
    if any(_conflicts(text, words, k, name) for k in range(first, end)):
        return None
    return best[0] if _same_number(text[words.starts[end - 1]:words.ends[end - 1]].lower(), name) else None


def _invented(text: str, words: Words, first: int, end: int, index: GroundingIndex) -> bool:
    """A capitalised phrase with a word the catalog never uses, named like a model: with an inner capital
    ("AeroPulse Buds X2"), a version word or a number ("Instant Vortex Plus", "Sawyer Squeeze Mini"), or
    ending in a kind of product the catalog sells ("Zentrix Earbuds"). "Holiday Season", "Energy Star"
    and "Free Returns" are not."""
    if end - first < 2:
        return False
    invented = [k for k in range(first, end) if words.caps[k] and words.norms[k] not in index.known]
    if not invented:
        return False
    if any(_inner_capital(text[words.starts[k]:words.ends[k]]) for k in invented):
        return True
    return words.norms[end - 1] in index.heads or any(words.norms[k] in VARIANTS or words.norms[k][0].isdigit()
                                                      for k in range(first, end))


def _inner_capital(word: str) -> bool:
    """Whether a word mixes capitals and small letters after its first ("AeroPulse"; not "ELE", "Pro")."""
    rest = word[1:]
    return not rest.islower() and not rest.isupper()


#: A title in italics, ``*...*`` or ``_..._`` (not bold): a literal first, so the search skips.
_ITALIC = re.compile(r"\*(?<![*\w]\*)(?![*\s])(?P<a>[^*\n]{2,80}+)(?<!\s)\*(?![*\w])"
                     r"|_(?<![_\w]_)(?![_\s])(?P<b>[^_\n]{2,80}+)(?<!\s)_(?![_\w])")
_TITLE_WORDS = re.compile(r"[^\W\d_]++(?:['’][^\W\d_]++)?+|\d++")
_SMALL_WORDS = frozenset("a an the of and or in on at to for with from by".split())


def _titles(text: str, mentions: list[Mention]) -> list[Mention]:
    """Titles in italics ("*The Navigator's Son*") that name nothing the catalog has: unknown products.

    A title has two to eight words, each capitalised but the small ones ("the", "of"), and one at least
    that is not a plain word of answers ("*Great Value*" is no title).
    """
    if "*" not in text and "_" not in text:
        return []
    out = []
    taken = [(m.start, m.end) for m in mentions]
    for match in _ITALIC.finditer(text):
        title = match.group("a") or match.group("b")
        start = match.start("a") if match.group("a") else match.start("b")
        found = _TITLE_WORDS.findall(title)
        if not (2 <= len(found) <= 8 and found[0][0].isupper()
                and all(w[0].isupper() or w.lower() in _SMALL_WORDS or w[0].isdigit() for w in found)
                and any(w.lower() not in COMMON for w in found)):
            continue
        end = start + len(title)
        if not any(a < end and start < b for a, b in taken):
            out.append(Mention(start, end, None, unknown=True))
    return out


def _ids(text: str, index: GroundingIndex) -> list[Mention]:
    """Product ids written in ``text``: known ones name their product, others are unknown products."""
    out = []
    for match in index.id_pattern.finditer(text):
        pid = index.by_id.get(match.group().lower())
        out.append(Mention(match.start(), match.end(), pid, unknown=pid is None))
    return out
