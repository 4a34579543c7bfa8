"""Catalog grounding, part one: the catalog's names, and which products an answer names.

:class:`GroundingIndex` holds what the check needs of a catalog, built once per catalog read: each
product's name as normalised words, its brand and model words (the name without the brand), an
inverted index from name words to products (whole catalog and per brand), the brands, the product
ids with a pattern of their shapes, and the vocabulary (name and description words).

:func:`find_mentions` reads an answer once, word by word (cost grows with the answer, not the catalog):

1. Exact full names, longest first ("Voltara 20000mAh Power Bank", "The Quiet Harbor").
2. Phrases: runs of name-like words (capitalised mid-sentence, numbers, catalog name words) with
   nothing but spaces, hyphens, apostrophes or ``&`` between them.

   - A phrase with a brand names the brand's product whose model words it covers best, when only
     one does ("the Voltara power bank", "Orbix's low-profile keyboard"). Words none of the brand's
     products has make it an unknown product: an invented word ("HyperCharge", "AirMax"), another
     number ("30000mAh", "9000") or another variant ("Pro" for a "Lite"). Lower-case descriptive words
     ("wireless") and capitalised words the catalog uses elsewhere do not.
   - A phrase without a brand names a product mentioned earlier whose name holds all its words ("the
     power bank"), or the one catalog product holding them (two words at least, one rare in the
     catalog). A capitalised phrase ending in a product noun, holding an invented word ("ZenBeat Pro
     Earbuds"), is an unknown product.
   - Two products of a brand covered equally ("the Kestrel Tech 4K webcam") name neither: the
     mention is kept as ambiguous, so claims next to it are not given to another product.
3. Product ids, by the shapes of the catalog's ids ("ELE-0004"); an id of such a shape that the
   catalog lacks is an unknown product.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.store.base import Product
from plugins.catalog_search import stem
from plugins.grounding_claims import ANCHOR_WORDS

# Caller text reaches every pattern here: each runs in linear time (see plugins/grounding_claims.py).
_WORD = re.compile(r"[^\W\d_]++|\d++(?:[.,]\d++)*+")
_PARENTHESIS = re.compile(r"\([^()]*+\)")
_POSSESSIVE = re.compile(r"(?<=[^\W\d_])['’][sS]\b")
_ABBREVIATED = re.compile(r"[^\W\d_]++(?=\.)")
#: Characters that may sit between two words of one name ("Ferro & Salt", "Low-Profile", "Orbix's").
_SOFT = " \t-'’&"
_SENTENCE_MARKS = frozenset(".!?:\n#*|•;")
_CURRENCY_MARKS = frozenset("$€£¥₹#")
SYNONYMS = {"colour": "color", "aluminium": "aluminum", "grey": "gray", "moisturiser": "moisturizer",
            "organiser": "organizer", "stabilised": "stabilized", "unflavoured": "unflavored",
            "watercolour": "watercolor", "ereader": "reader", "earphone": "earbud", "headset": "headphone"}
STOP = frozenset(
    "a an and or of for with in on to at by from as is are was were be been it its this that these those "
    "the our your my their his her i you we they he she if so but than then also very more most both each "
    "all any some one ones s vs versus into over under about around only just while which who what when "
    "where how not no yes do does can will would should may might".split())
#: Words that never name a product, even capitalised beside one ("Voltara 20000mAh Power Bank Review").
GENERIC = frozenset(
    "product model item option pick choice alternative version edition range lineup line brand "
    "collection series store shop review overview detail spec specification summary verdict deal "
    "bundle comparison price cost rating stock availability status category description recommendation "
    "winner upgrade value budget premium best top great good excellent new latest popular recommended "
    "favorite favourite overall runner ideal perfect solid reliable here there note tip why usd us eur".split())
#: Words that tell one version of a product from another: capitalised and absent, they name another product.
VARIANTS = frozenset("pro max plus lite mini ultra x ii iii iv v s se air neo elite go xl xs gen mk".split())
#: Words that end a number's role in a name (4.5 stars, 30 reviews, 20 percent, 50 dollars).
_UNITS = frozenset("star stars review reviews rating ratings percent usd dollar dollars buck bucks out mo month months "
                   "year years day days hour hours minute minutes time times x".split())
#: Plain words a model may capitalise in a heading that are not names; the descriptions add more.
COMMON = GENERIC | STOP | frozenset(
    "guide buy buying quick look compare compared option choose pick picks also choice affordable cheap "
    "cheapest expensive budget high end low mid range entry level editor editors staff customer customers "
    "user users today now sale offer offers gift gifts idea ideas home office travel everyday daily".split())


#: Words before a phrase that make it a kind of product rather than one product ("other power banks").
_NOT_ONE = frozenset("other another many most some similar cheaper pricier all these those any several few".split())
#: Words that are never part of a product name.
NOT_NAME = STOP | GENERIC | _NOT_ONE


@lru_cache(maxsize=8192)
def normalise(word: str) -> str:
    """A word as names are compared: lower case, singular, one spelling; numbers without commas."""
    if word[0].isdigit():
        return word.replace(",", "")
    lower = word.lower()
    return SYNONYMS.get(lower) or SYNONYMS.get(stem(lower)) or stem(lower)


def name_words(text: str) -> list[str]:
    """The normalised words of a name (a possessive ``'s`` dropped)."""
    return list(map(normalise, _WORD.findall(_POSSESSIVE.sub("", text))))


#: An id's shape: its capitals as A, small letters as a, digits as 9 (``ELE-0004`` -> ``AAA-9999``).
_SHAPES = str.maketrans({**dict.fromkeys("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "A"),
                         **dict.fromkeys("abcdefghijklmnopqrstuvwxyz", "a"), **dict.fromkeys("0123456789", "9")})


def _shape(shape: str) -> str:
    r"""A pattern of the ids of one shape: one character class, then a check that no word character
    comes before it (a first character class lets the search skip the rest of the text quickly):
    ``AAA-9999`` -> ``[A-Z](?<![\w-].)[A-Z]{2}\-[0-9]{4}``."""
    parts = []
    for run in re.finditer(r"[A-Z]++|[a-z]++|[0-9]++|[^A-Za-z0-9]", shape):
        text = run.group()
        kind = ("[A-Z]" if text.isupper() else "[a-z]" if text.islower() else "[0-9]" if text.isdigit()
                else re.escape(text))
        parts.append((kind, len(text)) if text.isascii() and text.isalnum() else (kind, 0))
    kind, size = parts[0]
    first = kind + r"(?<![\w-].)" + (f"{kind}{{{size - 1}}}" if size > 1 else "")
    return first + "".join(f"{kind}{{{size}}}" if size else kind for kind, size in parts[1:])


@dataclass(frozen=True)
class Name:
    """One product's name, as the check compares it."""

    product: Product
    words: frozenset[str]   # every word of the name, brand and parenthesis included
    model: frozenset[str]   # the words that are not the brand's nor stop words
    brand: str              # the brand, normalised ("" when none)


class GroundingIndex:
    """What the check needs of a catalog (names, brands, model words, ids), built once per catalog read."""

    #: Above this many distinct id shapes, ids are looked up word by word instead of by one pattern.
    MAX_ID_SHAPES = 24

    def __init__(self, products: Iterable[Product]):
        self.names: dict[str, Name] = {}
        self.by_id: dict[str, str] = {}
        #: (first word, second word) of a full name -> (words, product id), longest first.
        self.sequences: dict[tuple[str, ...], list[tuple[tuple[str, ...], str]]] = {}
        #: First word of a brand -> (the brand's words, brand key), longest first.
        self.brand_starts: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self.brand_names: dict[str, str] = {}
        #: Name word -> products whose name holds it; (brand key, word) -> the brand's such products.
        self.postings: dict[str, list[str]] = {}
        self.brand_postings: dict[tuple[str, str], list[str]] = {}
        self.vocabulary: set[str] = set()
        #: Lower-case words that matter (name words as written and their plurals, stop words, claim
        #: words) -> what ``read_words`` needs of them (a ``WordEntry``); other lower-case words do not.
        self.lower_words: dict[str, WordEntry] = {word: (NAME_WORD, word, False, False, False, False)
                                                  for word in _NOT_ONE}
        self.lower_words.update((word, (STOP_WORD, word, False, False, False, word in ANCHOR_WORDS))
                                for word in STOP - _NOT_ONE)
        #: The same for other words (capitalised, numbers), filled as answers are read.
        self.other_words: dict[str, WordEntry] = {}
        self.known: set[str] = set(COMMON)
        self.heads: set[str] = set()
        self.abbreviations: set[str] = set()
        shapes: set[str] = set()
        for product in products:
            self._add(product)
            if len(product.product_id) >= 4:  # shorter ids would match ordinary words
                shapes.add(product.product_id.translate(_SHAPES))
        for entries in (*self.sequences.values(), *self.brand_starts.values()):
            entries.sort(key=lambda entry: -len(entry[0]))
        for word in ANCHOR_WORDS:
            role, norm, namelike, cap, number, _ = self.lower_words.get(word, (CLAIM_WORD, word, False, False,
                                                                               False, True))
            self.lower_words[word] = (role, norm, namelike, cap, number, True)
        self.id_pattern = (re.compile("(?:" + "|".join(sorted(map(_shape, shapes))) + r")(?![\w-])")
                           if 0 < len(shapes) <= self.MAX_ID_SHAPES else None)

    def _add(self, product: Product) -> None:
        pid = product.product_id
        brand_words = tuple(name_words(product.brand))
        brand = " ".join(brand_words)
        if brand and brand not in self.brand_names:
            self.brand_names[brand] = product.brand
            self.brand_starts.setdefault(brand_words[0], []).append((brand_words, brand))
        self.abbreviations.update(map(normalise, _ABBREVIATED.findall(product.brand + " " + product.name)))
        sequence = tuple(name_words(_PARENTHESIS.sub(" ", product.name)))
        words_in_order = tuple(w for w in sequence if w not in STOP)
        words = frozenset(name_words(product.name)) | set(brand_words)
        model = frozenset(w for w in sequence if w not in brand_words and w not in STOP)
        self.names[pid] = Name(product, words, model, brand)
        self.by_id[pid.lower()] = pid
        if len(words_in_order) >= 2:
            self.sequences.setdefault(words_in_order[:2], []).append((words_in_order, pid))
        for word in words - STOP:
            self.postings.setdefault(word, []).append(pid)
            if brand:
                self.brand_postings.setdefault((brand, word), []).append(pid)
        self.vocabulary |= words
        for written in _WORD.findall(product.brand + " " + product.name):
            lower = written.lower()
            if lower not in self.lower_words:
                self._add_written(lower)
        self.known |= words
        if product.description:
            self.known.update(map(normalise, _WORD.findall(product.description)))
        head = next((w for w in reversed(sequence) if w in model and w not in VARIANTS and not w[0].isdigit()), None)
        if head:
            self.heads.add(head)

    def _add_written(self, lower: str) -> None:
        """Make a name word, as written in lower case, and its plurals known to ``read_words``."""
        norm = normalise(lower)
        if norm in STOP or not (lower.isalpha() or lower.isdigit()):
            return
        entry = (NAME_WORD, norm, norm not in NOT_NAME, False, lower.isdigit(), False)
        self.lower_words[lower] = entry
        for form in (lower + "s", lower + "es", lower[:-1] + "ies"):
            if form not in self.lower_words and normalise(form) == norm:
                self.lower_words[form] = entry

    #: How many distinct words ``other_words`` keeps before starting afresh (it grows with answers).
    MAX_REMEMBERED = 50_000

    def read_other(self, word: str) -> WordEntry:
        """The ``WordEntry`` of a word that is not a lower-case word of ``lower_words`` (remembered)."""
        norm = normalise(word)
        cap = word[0].isupper()
        if norm in NOT_NAME:
            namelike = False
        elif word[0].isdigit():
            namelike = "." not in norm or norm in self.vocabulary
        elif norm in self.vocabulary:
            namelike = True
        elif not cap:
            namelike = False
        else:
            namelike = None if word[1:].islower() else True
        role = STOP_WORD if norm in STOP and norm not in _NOT_ONE else NAME_WORD
        entry = (role, norm, namelike, cap, word[0].isdigit(), word.lower() in ANCHOR_WORDS)
        if len(self.other_words) > self.MAX_REMEMBERED:
            self.other_words.clear()
        self.other_words[word] = entry
        return entry

    def frequency(self, word: str) -> int:
        """How many products' names hold ``word``."""
        return len(self.postings.get(word, ()))


@dataclass(slots=True)
class Words:
    """The words of an answer that may matter to names, as parallel lists (cheaper than objects).

    Ordinary lower-case words that no name holds are not kept: they only part the words around them.
    """

    starts: Sequence[int]
    ends: Sequence[int]
    norms: Sequence[str]
    caps: Sequence[bool]        # starts with a capital letter
    soft: Sequence[int]         # JOINED to the previous kept word by name glue only, BRIDGED by stop words too, or 0
    sentence: Sequence[bool]    # first word of a sentence, line, cell or heading
    namelike: Sequence[bool]    # may be part of a product name
    anchors: list[tuple[int, str]]  # (start, lower-case word) of each claim word (``ANCHOR_WORDS``)


#: A word and the characters before it: a letter run, or a number ("1,299.00"), as findall pairs; the
#: ASCII twin is twice as fast, for the (usual) answer that is all ASCII.
_PIECES = re.compile(r"(?<![\W_])([\W_]*+)([^\W\d_]++|\d++(?:[.,]\d++)*+)")
_ASCII_PIECES = re.compile(r"(?<![^A-Za-z0-9])([^A-Za-z0-9]*+)([A-Za-z]++|[0-9]++(?:[.,][0-9]++)*+)")
_APOSTROPHES = ("'", "’", ".'", ".’")
JOINED, BRIDGED = 2, 1
#: What ``read_words`` needs to know of a word: (role, normalised, may be a name: True, False, or None
#: when only if not opening a sentence; capitalised; a number; a claim word).
WordEntry = tuple[int, str, "bool | None", bool, bool, bool]
NAME_WORD, STOP_WORD, CLAIM_WORD = 0, 1, 2


def read_words(text: str, index: GroundingIndex) -> Words:
    """The words of ``text`` that may belong to a product name, marked; and where claim words are.

    This loop runs once per word of every answer checked, so it does as little as it can per word:
    one dictionary look-up tells what a word is, and an ordinary lower-case word (most of an answer)
    costs nothing more. (Picking the words in C with ``map`` and ``compress`` was measured slower.)
    """
    kept: list[tuple] = []
    anchors: list[tuple[int, str]] = []
    lower_words, abbreviations, other_words = index.lower_words, index.abbreviations, index.other_words
    position, kept_last, bridged, last_number, first = 0, False, False, False, True
    for gap, word in (_ASCII_PIECES if text.isascii() else _PIECES).findall(text):
        start = position + len(gap)
        position = start + len(word)
        if last_number and (gap[:1] in ("%", "/") or gap == " " and word in _UNITS):
            kept[-1] = (*kept[-1][:6], False)  # "4 stars", "30%": a number, not part of a name
        entry = lower_words.get(word)
        if entry is None:
            if word.islower():  # an ordinary word: it parts the words around it
                kept_last = last_number = first = False
                continue
            entry = other_words.get(word) or index.read_other(word)
        role, norm, namelike, cap, number, anchor = entry
        if anchor:
            anchors.append((start, word.lower()))
        if role != NAME_WORD:
            if word == "s" and gap in _APOSTROPHES:
                continue  # "Orbix's" reads as "Orbix" ("Pantry & Co.'s" too)
            if role == STOP_WORD:  # names may hold it ("Salt and Cedar"): it bridges, it does not part
                bridged = kept_last = kept_last and (gap == " " or not gap.strip(_SOFT))
            else:
                kept_last = False
            last_number = first = False
            continue
        if gap == " " or not gap:
            glued, starting = True, first
        else:
            stripped = gap.strip(_SOFT)
            if stripped == "." and kept_last and kept[-1][2] in abbreviations and "\n" not in gap:
                stripped = ""  # "Campfire Co. Freestanding Ultralight Tent"
            glued = not stripped
            starting = first or not _SENTENCE_MARKS.isdisjoint(stripped)
        joined = (BRIDGED if bridged else JOINED) if kept_last and glued else 0
        if number:
            namelike = namelike and gap[-1:] not in _CURRENCY_MARKS
        elif starting and namelike is None:
            namelike = False  # a capitalised plain word opening a sentence ("Great", "Overall")
        kept.append((start, position, norm, cap, joined, starting, namelike is not False))
        kept_last, bridged, last_number, first = True, False, number, False
    columns = list(zip(*kept, strict=True)) if kept else [()] * 7
    return Words(*columns, anchors)


@dataclass(slots=True)
class Mention:
    """A stretch of the answer that names a product (``product_id``), or names one that cannot be
    told (None: ambiguous, or unknown when ``unknown``)."""

    start: int
    end: int
    product_id: str | None
    unknown: bool = False
    brand_only: str = ""  # a brand alone ("made by Orbix"): its brand key


def find_mentions(text: str, index: GroundingIndex) -> tuple[Words, list[Mention]]:
    """The products ``text`` names, in order, with ambiguous and unknown names and lone brands
    (and the words read, with where claim words are)."""
    words = read_words(text, index)
    covered = _full_names(words, index)
    mentions: list[Mention] = []
    named: dict[str, None] = {}  # the products named lately, most recent last
    for first, last in _phrases(words, covered, index):
        found = _resolve(text, words, covered, first, last, index, named)
        if found is None:
            continue
        for mention in found:
            mentions.append(mention)
            if mention.product_id and not mention.unknown:
                named.pop(mention.product_id, None)
                named[mention.product_id] = None
                if len(named) > RECENT:
                    del named[next(iter(named))]
    if index.id_pattern is not None:
        mentions.extend(_ids(text, index))
        mentions.sort(key=lambda m: m.start)
    return words, mentions


def _full_names(words: Words, index: GroundingIndex) -> list[str | None]:
    """For each word, the product whose full name it is part of (exact match, longest first)."""
    norms, count = words.norms, len(words.norms)
    covered: list[str | None] = [None] * count
    k = 0
    while k < count - 1:
        candidates = index.sequences.get((norms[k], norms[k + 1])) if words.caps[k] else None
        length = 0
        for sequence, pid in candidates or ():
            size = len(sequence)
            if (k + size <= count and tuple(norms[k:k + size]) == sequence
                    and all(words.soft[k + 1:k + size])):
                length = size
                covered[k:k + size] = [pid] * size
                break
        k += length or 1
    return covered


def _phrases(words: Words, covered: list[str | None], index: GroundingIndex) -> list[tuple[int, int]]:
    """Runs of name-like (or full-name) words joined by name glue, as (first, end) word indexes; a lone
    word only if it could name something alone (a brand, or a kind of product: "the keyboard")."""
    out = []
    namelike, soft, norms, count = words.namelike, words.soft, words.norms, len(words.norms)
    heads, brand_starts = index.heads, index.brand_starts
    k = 0
    while k < count:
        if not (namelike[k] or covered[k]):
            k += 1
            continue
        end = k + 1
        while end < count and soft[end] == JOINED and (namelike[end] or covered[end]):
            end += 1
        if end - k > 1 or covered[k] or norms[k] in heads or words.caps[k] and norms[k] in brand_starts:
            out.append((k, end))
        k = end
    return out


def _conflicts(words: Words, k: int, name: Name, index: GroundingIndex) -> bool:
    """Whether word ``k`` says the phrase names another product than ``name``."""
    norm = words.norms[k]
    if norm in name.words or norm in GENERIC:
        return False
    if norm[0].isdigit():
        return True
    if not words.caps[k]:
        return False
    return norm in VARIANTS or norm not in index.known


def _resolve(text: str, words: Words, covered: list[str | None], first: int, end: int,
             index: GroundingIndex, named: dict[str, None]) -> list[Mention] | None:
    """What the phrase of words ``first``..``end`` names, if anything."""
    starts, ends = words.starts, words.ends
    exact = [k for k in range(first, end) if covered[k]]
    if exact:
        return _resolve_exact(words, covered, first, end, exact, index)
    brand_at = _brand(words, first, end, index)
    if brand_at is not None:
        brand, brand_first, brand_end = brand_at
        model = [k for k in range(brand_end, end)]
        model += [k for k in range(first, brand_first) if (brand, words.norms[k]) in index.brand_postings]
        if not model:
            return [Mention(starts[brand_first], ends[brand_end - 1], None, brand_only=brand)]
        span = (starts[brand_first], ends[end - 1])
        return _resolve_branded(words, model, brand, span, index)
    return _resolve_plain(text, words, first, end, index, named)


def _resolve_exact(words: Words, covered: list[str | None], first: int, end: int, exact: list[int],
                   index: GroundingIndex) -> list[Mention]:
    spans: dict[str, list[int]] = {}
    for k in exact:
        spans.setdefault(covered[k], []).append(k)
    if len(spans) == 1:
        name = index.names[covered[exact[0]]]
        if any(_conflicts(words, k, name, index) for k in range(first, end) if not covered[k]):
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


def _resolve_branded(words: Words, model: list[int], brand: str, span: tuple[int, int],
                     index: GroundingIndex) -> list[Mention] | None:
    scores: dict[str, int] = {}
    for norm in {words.norms[k] for k in model}:
        for pid in index.brand_postings.get((brand, norm), ()):
            scores[pid] = scores.get(pid, 0) + 1
    start, stop = span
    productlike = any(words.norms[k] in index.heads or _conflicts(words, k, _NO_NAME, index) for k in model)
    if not scores:
        return [Mention(start, stop, None, unknown=True)] if productlike else None
    best = _best(scores)
    clean = [pid for pid in best if not any(_conflicts(words, k, index.names[pid], index) for k in model)]
    if len(clean) == 1 and len(best) == 1:
        return [Mention(start, stop, clean[0])]
    if not clean:
        return [Mention(start, stop, None, unknown=True)]
    return [Mention(start, stop, None)]  # ambiguous


_NO_NAME = Name(Product("", "", "", 0.0), frozenset(), frozenset(), "")
#: How many of the products named last a phrase without a brand may point back to ("the power bank").
RECENT = 16
#: A word held by more products than this does not, alone, pick candidates for a phrase without a brand.
MAX_CANDIDATES = 64
def _resolve_plain(text: str, words: Words, first: int, end: int, index: GroundingIndex,
                   named: dict[str, None]) -> list[Mention] | None:
    """A phrase without a brand: an earlier product, the one product holding its words, or unknown."""
    norms = {words.norms[k] for k in range(first, end)} - GENERIC
    if not norms:
        return None
    start, stop = words.starts[first], words.ends[end - 1]
    previous = words.norms[first - 1] if first and words.soft[first] == JOINED else ""
    plural = text[stop - 1:stop] in ("s", "S") and words.norms[end - 1] in index.heads
    if previous not in _NOT_ONE and not plural:
        earlier = [pid for pid in named if norms <= index.names[pid].words]
        if len(earlier) == 1:
            return [Mention(start, stop, earlier[0])]
        if len(earlier) > 1:
            return [Mention(start, stop, None)]
        pid = _only_product(words, first, end, norms, index)
        if pid:
            return [Mention(start, stop, pid)]
    if _invented(words, first, end, index):
        return [Mention(start, stop, None, unknown=True)]
    return None


def _only_product(words: Words, first: int, end: int, norms: set[str], index: GroundingIndex) -> str | None:
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
    matched = norms & name.words
    if min(index.frequency(n) for n in matched) > 2:
        return None
    if any(_conflicts(words, k, name, index) for k in range(first, end)):
        return None
    return best[0]


def _invented(words: Words, first: int, end: int, index: GroundingIndex) -> bool:
    """A capitalised phrase ending in a product noun with a word the catalog has never used."""
    if end - first < 2 or words.norms[end - 1] not in index.heads:
        return False
    return any(words.caps[k] and words.norms[k] not in index.known and not words.norms[k][0].isdigit()
               for k in range(first, end - 1))


def _ids(text: str, index: GroundingIndex) -> list[Mention]:
    """Product ids written in ``text``: known ones name their product, others are unknown products."""
    out = []
    for match in index.id_pattern.finditer(text):
        pid = index.by_id.get(match.group().lower())
        out.append(Mention(match.start(), match.end(), pid, unknown=pid is None))
    return out
