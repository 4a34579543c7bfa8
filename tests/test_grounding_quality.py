"""The catalog grounding check, measured on labelled answers (issue 19, part 3).

``tests/data/grounding_quality.json`` holds answers a shopping assistant might give about the
demo catalog, written by hand the way chat models write (bullets, tables, hedges, bundles,
near-miss names, other currencies, invented products) and labelled from the catalog: every
(product, field) an answer gets wrong, and every product-like name it presents as real that
matches nothing in the catalog. Its ``about`` says what counts as right.
``tests/data/grounding_holdout.json`` holds more answers in the same style, written last and
kept from the check's author, so the check cannot be tuned to them.

Scoring, per item: the predicted set is the verdict's (product_id, field) pairs plus its unknown
names; the expected set is the labels. Pairs match exactly; an unknown name matches an expected
one when their lower-cased word sets share at least half of the larger set (each name matched
at most once: a lone brand word does not match a whole invented model name). Precision = true
positives / predicted and recall = true positives / expected, summed over the whole file, overall
and per field ("unknown" for the names).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.catalog import read_products
from gateway.store.base import Product

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo_catalog.json"
DATA = Path(__file__).parent / "data"
SETS = {"development": "grounding_quality.json", "holdout": "grounding_holdout.json"}
FIELDS = ("price", "availability", "rating", "brand")
UNKNOWN = "unknown"
#: Precision and recall each set must reach. The held-out answers were written blind, by someone
#: other than the check's author and without seeing its code, so phrasings the development set
#: never shows are expected there: its bar is lower, and it is reported to show how well the
#: check generalises rather than to be met by tuning.
THRESHOLDS = {"development": 0.95, "holdout": 0.90, "both": 0.95}


def load_items(file_name: str) -> list[dict]:
    """The labelled answers of one file."""
    return json.loads((DATA / file_name).read_text())["items"]


ITEMS = {name: load_items(file_name) for name, file_name in SETS.items()}


@dataclass
class Tally:
    """True positives, predictions and expectations of one field (or of all of them)."""

    true_positives: int = 0
    predicted: int = 0
    expected: int = 0

    def add(self, other: Tally) -> None:
        """Count ``other`` in too."""
        self.true_positives += other.true_positives
        self.predicted += other.predicted
        self.expected += other.expected

    @property
    def precision(self) -> float:
        """Share of predictions that are labelled (1.0 when nothing was predicted)."""
        return self.true_positives / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Share of labels that were predicted (1.0 when nothing was labelled)."""
        return self.true_positives / self.expected if self.expected else 1.0


@dataclass
class Score:
    """Tallies per field, and one line per item the check got wrong."""

    fields: dict[str, Tally]
    misses: list[str]

    @property
    def total(self) -> Tally:
        """The tallies of every field together."""
        total = Tally()
        for tally in self.fields.values():
            total.add(tally)
        return total


def words(name: str) -> set[str]:
    """The lower-cased words of a product name."""
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def same_name(predicted: str, expected: str) -> bool:
    """Whether two written names share at least half of the larger one's words."""
    a, b = words(predicted), words(expected)
    return bool(a and b) and len(a & b) * 2 >= max(len(a), len(b))


def score_item(item: dict, verdict) -> Score:
    """Compare one verdict with one item's labels."""
    fields = {field: Tally() for field in (*FIELDS, UNKNOWN)}
    expected = {(m["product_id"], m["field"]) for m in item["mismatches"]}
    predicted = {(m["product_id"], m["field"]): m for m in verdict.mismatches}
    problems = []
    for pair in expected | predicted.keys():
        tally = fields.setdefault(pair[1], Tally())
        tally.expected += pair in expected
        tally.predicted += pair in predicted
        tally.true_positives += pair in expected and pair in predicted
        if pair not in predicted:
            problems.append(f"missed {pair[1]} of {pair[0]}")
        elif pair not in expected:
            found = predicted[pair]
            problems.append(f"false {pair[1]} of {pair[0]} (claimed {found.get('claimed')!r}, "
                            f"catalog {found.get('catalog')!r})")
    unmatched = list(item["unknown_products"])
    fields[UNKNOWN].expected = len(unmatched)
    fields[UNKNOWN].predicted = len(verdict.unknown_products)
    for name in verdict.unknown_products:
        match = next((label for label in unmatched if same_name(name, label)), None)
        if match is None:
            problems.append(f"false unknown {name!r}")
        else:
            unmatched.remove(match)
            fields[UNKNOWN].true_positives += 1
    problems.extend(f"missed unknown {name!r}" for name in unmatched)
    misses = [f"{item['id']} ({item['kind']}): {'; '.join(sorted(problems))}"] if problems else []
    return Score(fields, misses)


def combine(scores) -> Score:
    """The sum of several scores."""
    total = Score({field: Tally() for field in (*FIELDS, UNKNOWN)}, [])
    for score in scores:
        for field, tally in score.fields.items():
            total.fields.setdefault(field, Tally()).add(tally)
        total.misses.extend(score.misses)
    return total


def score_set(items: list[dict], verdicts: list) -> Score:
    """Sum the scores of every item of a set."""
    return combine(score_item(item, verdict) for item, verdict in zip(items, verdicts, strict=True))


def report(name: str, items: list[dict], score: Score) -> str:
    """Precision, recall and counts of a set, overall and per field, as printed lines."""
    total = score.total
    lines = [f"grounding quality, {name}: {len(items)} answers, precision {total.precision:.3f} "
             f"recall {total.recall:.3f} (true positives {total.true_positives}, "
             f"predicted {total.predicted}, expected {total.expected})"]
    for field, tally in score.fields.items():
        lines.append(f"  {field:<12} precision {tally.precision:.3f} recall {tally.recall:.3f} "
                     f"(tp {tally.true_positives}, predicted {tally.predicted}, expected {tally.expected})")
    return "\n".join(lines)


def family(item: dict) -> set[str]:
    """Which kinds of answer an item is: correct, mismatch, unknown."""
    if not item["mismatches"] and not item["unknown_products"]:
        return {"correct"}
    return {kind for kind, labels in (("mismatch", item["mismatches"]),
                                      ("unknown", item["unknown_products"])) if labels}


@pytest.fixture(scope="module")
def demo_products() -> list[Product]:
    return read_products(DEMO)


@pytest.fixture(scope="module")
def scores(demo_products) -> dict[str, tuple[list[dict], Score]]:
    """Each set with the check's score on it."""
    grounding = pytest.importorskip("plugins.grounding")
    index = grounding.GroundingIndex(demo_products)
    scored = {name: (items, score_set(items, [grounding.check_answer(item["answer"], index) for item in items]))
              for name, items in ITEMS.items()}
    scored["both"] = ([item for items, _ in scored.values() for item in items],
                      combine(score for _, score in scored.values()))
    return scored


def test_the_sets_are_labelled_from_the_catalog(demo_products):
    ids = {p.product_id for p in demo_products}
    names = {p.name.lower() for p in demo_products}
    assert len(ITEMS["development"]) >= 150 and len(ITEMS["holdout"]) >= 50
    seen_ids, seen_answers = set(), set()
    for items in ITEMS.values():
        assert set().union(*(family(item) for item in items)) == {"correct", "mismatch", "unknown"}
        for item in items:
            assert item["id"] not in seen_ids and item["answer"] not in seen_answers, item["id"]
            seen_ids.add(item["id"])
            seen_answers.add(item["answer"])
            assert item["kind"] and item["answer"].strip(), item["id"]
            pairs = [(m["product_id"], m["field"]) for m in item["mismatches"]]
            assert len(pairs) == len(set(pairs)), item["id"]
            for product_id, field in pairs:
                assert product_id in ids and field in FIELDS, item["id"]
            for name in item["unknown_products"]:
                assert name in item["answer"] and name.lower() not in names, (item["id"], name)


def verdict(mismatches=(), unknown=()) -> SimpleNamespace:
    """A verdict as the check returns it."""
    return SimpleNamespace(mismatches=[{"product_id": p, "field": f, "claimed": "x", "catalog": "y"}
                                       for p, f in mismatches], unknown_products=list(unknown))


def test_the_scoring_counts_pairs_exactly_and_names_by_shared_words():
    item = {"id": "t1", "kind": "test", "answer": "...",
            "mismatches": [{"product_id": "ELE-0004", "field": "price"},
                           {"product_id": "ELE-0005", "field": "rating"}],
            "unknown_products": ["Voltara HyperCharge 9000 Pro", "Nexio Pro 4K Webcam III"]}
    perfect = score_item(item, verdict([("ELE-0004", "price"), ("ELE-0005", "rating")],
                                       ["HyperCharge 9000", "the Nexio Pro 4K Webcam III"]))
    assert (perfect.total.precision, perfect.total.recall, perfect.misses) == (1.0, 1.0, [])
    wrong = score_item(item, verdict([("ELE-0004", "availability")], ["Orbix Slim Keyboard", "Voltara 9000"]))
    assert (wrong.total.true_positives, wrong.total.predicted, wrong.total.expected) == (1, 3, 4)
    assert wrong.fields["availability"].predicted == 1 and wrong.fields["price"].true_positives == 0
    assert wrong.misses == ["t1 (test): false availability of ELE-0004 (claimed 'x', catalog 'y'); "
                            "false unknown 'Orbix Slim Keyboard'; missed price of ELE-0004; "
                            "missed rating of ELE-0005; missed unknown 'Nexio Pro 4K Webcam III'"]
    silent = score_set([item, {**item, "id": "t2", "mismatches": [], "unknown_products": []}],
                       [verdict(), verdict()])
    assert (silent.total.precision, silent.total.recall) == (1.0, 0.0)
    assert [line.split(":")[0] for line in silent.misses] == ["t1 (test)"]


@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_the_check_meets_the_bar(scores, name, capsys):
    """Precision and recall of mismatches on each set, printed whether or not they pass."""
    items, score = scores[name]
    with capsys.disabled():
        print("\n" + report(name, items, score))
    # The held-out items stay unseen by whoever tunes the check: a failure names development items only.
    misses = "\n".join(miss for miss in score.misses if miss.startswith("q"))
    assert score.total.precision >= THRESHOLDS[name], misses
    assert score.total.recall >= THRESHOLDS[name], misses
