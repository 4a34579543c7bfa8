"""Catalog grounding, the catalog side: what the check needs of a catalog, and an answer's words.

:class:`GroundingIndex` is built once per catalog read: each product's name as normalised words, its
brand and model words (the name without the brand), an inverted index from name words to products
(whole catalog and per brand), the brands, the product ids with a pattern of their shapes, and the
vocabulary (name and description words). :func:`read_words` reads an answer's words against it,
once per answer, keeping only the words that may belong to a name.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.store.base import Product
from plugins.catalog_search import stem
from plugins.grounding_claims import ANCHOR_WORDS

# Caller text reaches every pattern here: each runs in linear time (plugins/grounding_phrases.py says how).
_WORD = re.compile(r"[^\W\d_]++|\d++(?:[.,]\d++)*+")
_PARENTHESIS = re.compile(r"\([^()]*+\)")
_POSSESSIVE = re.compile(r"(?<=[^\W\d_])['’][sS]\b")
_ABBREVIATED = re.compile(r"(?<![^\W\d_])[^\W\d_]++(?=\.)")
#: Characters that may sit between two words of one name ("Ferro & Salt", "Low-Profile", "Orbix's").
_SOFT = " \t-'’&"
_SENTENCE_MARKS = frozenset(".!?:\n#|•;")
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
    "favorite favourite overall runner ideal perfect solid reliable here there note tip why usd us eur euro gbp "
    "cad aud chf jpy inr yen pound dollar buck".split())
#: Capitalised words that describe a product without naming another one ("the Voltara Power Bank in Black").
DESCRIPTIVE = frozenset("black white silver gray grey blue red green pink gold rose navy beige brown purple "
                        "yellow orange".split())
#: Words that tell one version of a product from another: capitalised and absent, they name another product.
VARIANTS = frozenset("pro max plus lite mini ultra x ii iii iv v s se air neo elite go xl xs gen mk".split())
#: Plain words a model may capitalise in a heading that are not names; the descriptions add more.
COMMON = GENERIC | STOP | frozenset(
    "guide buy buying quick look compare compared option choose pick picks also choice affordable cheap "
    "cheapest expensive budget high end low mid range entry level editor editors staff customer customers "
    "user users today now sale offer offers gift gifts idea ideas home office travel everyday daily".split())


#: Words before a phrase that make it a kind of product rather than one product ("other power banks").
NOT_ONE = frozenset("other another many most some similar cheaper pricier all these those any several few".split())
#: Words that are never part of a product name.
NOT_NAME = STOP | GENERIC | NOT_ONE


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
    words: frozenset[str]     # every word of the name, brand and parenthesis included
    model: frozenset[str]     # the words that are not the brand's nor stop words
    brand: str                # the brand, normalised ("" when none)
    sequence: tuple[str, ...] = ()    # the name's words in order (without a parenthesis)
    written: frozenset[str] = frozenset()  # the name's words as written, in lower case ("poles")


class GroundingIndex:
    """What the check needs of a catalog (names, brands, model words, ids), built once per catalog read."""

    #: Above this many distinct id shapes, ids are looked up word by word instead of by one pattern.
    MAX_ID_SHAPES = 24

    def __init__(self, products: Iterable[Product]):
        self.names: dict[str, Name] = {}
        self.by_id: dict[str, str] = {}
        #: The first words of full names, and (first word, second word) -> (words, product id), longest first.
        self.sequence_starts: set[str] = set()
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
        self.lower_words: dict[str, WordEntry] = {word: (STOP_WORD, word, False, False, False, word in ANCHOR_WORDS)
                                                  for word in STOP - NOT_ONE}
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
        #: ``lower_words`` and the other words (capitalised, numbers) met so far: one look-up per word.
        self.words: dict[str, WordEntry] = dict(self.lower_words)
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
        written = frozenset(word.lower() for word in _WORD.findall(product.brand + " " + product.name))
        self.names[pid] = Name(product, words, model, brand, sequence, written)
        self.by_id[pid.lower()] = pid
        if len(words_in_order) >= 2:
            self.sequences.setdefault(words_in_order[:2], []).append((words_in_order, pid))
            self.sequence_starts.add(words_in_order[0])
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
        # The kind of product, the name's last model word ("bank", "keyboard"); a title without its
        # brand (a book's, "Little Fox Finds Home") names no kind of product.
        head = next((w for w in reversed(sequence) if w in model and w not in VARIANTS and not w[0].isdigit()), None)
        if head and brand_words and set(brand_words) <= set(sequence):
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

    #: How many words ``words`` may hold beyond ``lower_words`` before it starts afresh (it grows with answers).
    MAX_REMEMBERED = 50_000

    def read_other(self, word: str) -> WordEntry:
        """The ``WordEntry`` of a word that is not a lower-case word of ``lower_words`` (remembered in ``words``)."""
        norm = normalise(word)
        cap = word[0].isupper()
        if norm in NOT_NAME:
            namelike = False
        elif word[0].isdigit():
            namelike = True if "." not in norm or norm in self.vocabulary else None  # "2.0": if in a name
        elif norm in self.vocabulary:
            namelike = True
        elif not cap:
            namelike = False
        else:
            namelike = None if word[1:].islower() else True
        role = STOP_WORD if norm in STOP and norm not in NOT_ONE else NAME_WORD
        entry = (role, norm, namelike, cap, word[0].isdigit(), word.lower() in ANCHOR_WORDS)
        if len(self.words) > len(self.lower_words) + self.MAX_REMEMBERED:
            self.words = dict(self.lower_words)
        self.words[word] = entry
        return entry

    def frequency(self, word: str) -> int:
        """How many products' names hold ``word``."""
        return len(self.postings.get(word, ()))


@dataclass(slots=True)
class Words:
    """The words of an answer that may be part of a product name, as parallel lists (cheaper than
    objects). The other words are not kept: they only part the words around them.
    """

    starts: Sequence[int]
    ends: Sequence[int]
    norms: Sequence[str]
    caps: Sequence[bool]        # starts with a capital letter
    soft: Sequence[int]         # JOINED to the word before by name glue only, BRIDGED by stop words too, or 0
    anchors: list[tuple[int, str]]  # (start, lower-case word) of each claim word (``ANCHOR_WORDS``)


#: A word with the characters before it, and the word: a letter run, or a number ("1,299.00"), as
#: findall pairs; the ASCII twin is twice as fast, for the (usual) answer that is all ASCII.
_PIECES = re.compile(r"((?<![\W_])[\W_]*+([^\W\d_]++|\d++(?:[.,]\d++)*+))")
_ASCII_PIECES = re.compile(r"((?<![^A-Za-z0-9])[^A-Za-z0-9]*+([A-Za-z]++|[0-9]++(?:[.,][0-9]++)*+))")
#: What makes a number a claim rather than part of a name ("30%", "4/5", "4 stars", "12 months").
_UNIT_AFTER = re.compile(r"[%/]| (?:stars?|reviews?|ratings?|percent|usd|dollars?|bucks?|out|mo|months?|years?|days?"
                         r"|hours?|minutes?|times|x)\b", re.I)
_APOSTROPHES = ("'", "’", ".'", ".’")
JOINED, BRIDGED = 2, 1
#: What ``read_words`` needs to know of a word: (role, normalised, may be a name: True, False, or None
#: when only if not opening a sentence; capitalised; a number; a claim word).
WordEntry = tuple[int, str, "bool | None", bool, bool, bool]
NAME_WORD, STOP_WORD, CLAIM_WORD = 0, 1, 2  # NAME_WORD must stay 0: read_words tests the role's truth


def read_words(text: str, index: GroundingIndex) -> Words:
    """The words of ``text`` that may belong to a product name, marked; and where claim words are.

    This loop runs once per word of every answer checked, so it does as little as it can per word:
    one dictionary look-up tells what a word is, and an ordinary lower-case word (most of an answer)
    costs nothing more, not even a change of state: whether words are joined is told by positions
    (the word before a kept word ended where the last kept one did). Picking the words in C with
    ``map`` and ``compress``, or with a pattern of the catalog's words, was measured slower.
    """
    kept: list[tuple] = []
    anchors: list[tuple[int, str]] = []
    lookup, abbreviations = index.words.get, index.abbreviations
    pieces = (_ASCII_PIECES if text.isascii() else _PIECES).findall(text)
    first = len(pieces[0][0]) - len(pieces[0][1]) if pieces else 0  # where the first word starts
    position = 0
    chain = -1  # where the last kept word ends, or the stop words bridging from it ("Salt and Cedar")
    bridged = False  # whether stop words bridge from the last kept word to ``chain``
    for piece, word in pieces:
        previous = position
        position += len(piece)
        entry = lookup(word)
        if entry is None:
            if word.islower():  # an ordinary word: it parts the words around it
                continue
            entry = index.read_other(word)
        size = len(word)
        start = position - size
        if entry[5]:
            anchors.append((start, word.lower()))
        follows = chain == previous
        if entry[0]:  # not a name word
            if follows:
                gap = piece[:-size]
                if (entry[0] == STOP_WORD and (gap == " " or not gap.strip(_SOFT))
                        or word == "s" and gap in _APOSTROPHES):  # "Orbix's" reads as "Orbix"
                    chain, bridged = position, bridged or word != "s"
            continue
        _, norm, namelike, cap, digits, _ = entry
        if namelike is False:
            continue  # "Review", "$49", "other": it parts the words around it, as an ordinary word does
        gap = piece[:-size]
        if digits and gap[-1:] in _CURRENCY_MARKS:
            continue  # "$49", "#1": a claim or a rank, never a name
        if gap == " " or not gap:
            glued, starting = True, start == first
        else:
            stripped = gap.strip(_SOFT)
            if stripped == "." and follows and kept[-1][2] in abbreviations and "\n" not in gap:
                stripped = ""  # "Campfire Co. Freestanding Ultralight Tent"
            glued = not stripped
            starting = start == first or not _SENTENCE_MARKS.isdisjoint(stripped)
        joined = (BRIDGED if bridged else JOINED) if follows and glued else 0
        if namelike is None:  # a plain capitalised word, or a decimal number: it depends
            if digits:
                namelike = joined == JOINED  # "Kit 2.0", not "rated 4.2"
            else:
                namelike = not starting  # "Great", "Overall" open a sentence; "Sawyer" does not
            if not namelike:
                continue
        if digits and _UNIT_AFTER.match(text, position):
            continue  # "30%", "4 stars", "4/5": a claim, not a name
        kept.append((start, position, norm, cap, joined))
        chain, bridged = position, False
    columns = list(zip(*kept, strict=True)) if kept else [()] * 5
    return Words(*columns, anchors)
