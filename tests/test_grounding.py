"""The catalog grounding check (``plugins.grounding``) against the demo catalog.

Products used (demo catalog): ELE-0004 Voltara 20000mAh Power Bank, $49.00, in stock, 4.2;
ELE-0005 Orbix Low-Profile Mechanical Keyboard Lite, $152.00, in stock, 5.0; ELE-0001 Kestrel Tech
Wireless Ergonomic Mouse, $94.99, limited, 4.1; AUD-0011 Sonique Studio Noise Cancelling Headphones,
$352.99, out of stock, 4.0; ELE-0007 Nexio Tenkeyless Mechanical Keyboard Max, $114.99, in stock, 4.8.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from gateway.catalog import read_products
from gateway.store.base import Product
from plugins.grounding import GroundingIndex, Verdict, check_answer
from tests.test_search_quality import DEMO

POWER_BANK, KEYBOARD, MOUSE, HEADPHONES, NEXIO_KEYBOARD = "ELE-0004", "ELE-0005", "ELE-0001", "AUD-0011", "ELE-0007"


@pytest.fixture(scope="module")
def index() -> GroundingIndex:
    return GroundingIndex(read_products(DEMO))


def claims(verdict: Verdict) -> tuple[set[tuple], set[tuple]]:
    """(mismatches, verified) as sets of (product id, field, claimed)."""
    return ({(m["product_id"], m["field"], m["claimed"]) for m in verdict.mismatches},
            {(v["product_id"], v["field"], v["claimed"]) for v in verdict.verified})


# Finding the products an answer names

@pytest.mark.parametrize("text, expected", [
    ("The Voltara 20000mAh Power Bank is handy.", [POWER_BANK]),
    ("I like the Voltara power bank.", [POWER_BANK]),
    ("Orbix's low-profile keyboard is quiet.", [KEYBOARD]),
    ("ELE-0004 and ELE-0005 are both popular.", [POWER_BANK, KEYBOARD]),
    ("The Kestrel Tech Wireless Ergonomic Mouse (ELE-0001) fits large hands.", [MOUSE]),
    ("Campfire Co. Freestanding Ultralight Tent sleeps two.", ["OUT-0002"]),
    ("Read The Lantern Keeper, then Salt and Cedar.", ["BOK-0009", "BOK-0016"]),
    ("The Sonique Studio headphones are comfortable.", [HEADPHONES]),
    ("The tenkeyless mechanical keyboard from Nexio is compact.", [NEXIO_KEYBOARD]),
])
def test_finds_products_by_name_brand_and_model_words_or_id(index, text, expected):
    assert check_answer(text, index).checked == expected


def test_a_name_two_products_fit_equally_names_neither(index):
    verdict = check_answer("The Kestrel Tech 4K webcam costs $60.", index)  # ELE-0006 and ELE-0016
    assert verdict.checked == [] and verdict.mismatches == [] and verdict.status == "unverified"


def test_a_short_name_points_back_to_the_product_named_before(index):
    verdict = check_answer("I recommend the Voltara 20000mAh Power Bank. The power bank costs $39.", index)
    assert claims(verdict)[0] == {(POWER_BANK, "price", 39.0)}
    verdict = check_answer("Compare the Orbix Low-Profile Mechanical Keyboard Lite with the Nexio Tenkeyless "
                           "Mechanical Keyboard Max. The Nexio one costs $104.99.", index)
    assert claims(verdict)[0] == {(NEXIO_KEYBOARD, "price", 104.99)}


def test_kinds_of_products_in_general_are_not_a_product(index):
    verdict = check_answer("I recommend the Voltara 20000mAh Power Bank ($49). Other power banks cost around $30.",
                           index)
    assert verdict.status == "verified" and claims(verdict)[1] == {(POWER_BANK, "price", 49.0)}


# Prices

@pytest.mark.parametrize("written, claimed, right", [
    ("$49", 49.0, True),
    ("$49.00", 49.0, True),
    ("US$49", 49.0, True),
    ("49 USD", 49.0, True),
    ("USD 49", 49.0, True),
    ("49 dollars", 49.0, True),
    ("$48.99", 48.99, True),       # a rounding of a whole-dollar price, within the tolerance
    ("$1,299", 1299.0, False),
    ("$1,299.00", 1299.0, False),
    ("1299 USD", 1299.0, False),
    ("1,299 dollars", 1299.0, False),
    ("$29.00", 29.0, False),
    ("$45", 45.0, False),
    ("under 100 dollars", "<100.00", True),
    ("less than $50", "<50.00", True),
    ("under $40", "<40.00", False),
    ("$60 or less", "<60.00", True),
    ("over $100", ">100.00", False),
    ("about $50", "~50.00", True),
    ("around $52", "~52.00", True),
    ("~$50", "~50.00", True),
    ("about $30", "~30.00", False),
    ("$45-$55", "45.00-55.00", True),
    ("$45–55", "45.00-55.00", True),
    ("between $40 and $60", "40.00-60.00", True),
    ("between $20 and $30", "20.00-30.00", False),
])
def test_price_formats(index, written, claimed, right):
    verdict = check_answer(f"The Voltara 20000mAh Power Bank costs {written} today.", index)
    mismatches, verified = claims(verdict)
    assert (verified if right else mismatches) == {(POWER_BANK, "price", claimed)}
    assert verdict.status == ("verified" if right else "mismatch")


@pytest.mark.parametrize("written", ["€45", "45 EUR", "45 euros", "£30", "CA$60", "A$70", "¥5000", "30 GBP"])
def test_amounts_in_other_currencies_are_not_compared(index, written):
    verdict = check_answer(f"The Voltara 20000mAh Power Bank costs {written} in Europe.", index)
    assert verdict.mismatches == [] and verdict.verified == [] and verdict.status == "unverified"


@pytest.mark.parametrize("sentence", [
    "You save $20 with the Voltara 20000mAh Power Bank.",
    "The Voltara 20000mAh Power Bank is $49, $103 cheaper than the Orbix keyboard.",
    "The Voltara 20000mAh Power Bank is $49 and shipping is $5.",
    "The Voltara 20000mAh Power Bank is $49, well within your budget of $100.",
    "The Voltara 20000mAh Power Bank is $49, originally $69.",
    "The Voltara 20000mAh Power Bank is $49 and the warranty is $5/month.",
])
def test_amounts_that_are_not_the_price_are_left_out(index, sentence):
    verdict = check_answer(sentence, index)
    assert verdict.mismatches == [] and claims(verdict)[1] <= {(POWER_BANK, "price", 49.0)}


def test_price_tolerance_is_a_fraction_of_the_catalog_price(index):
    text = "The Orbix Low-Profile Mechanical Keyboard Lite costs $149.50."
    assert check_answer(text, index).status == "mismatch"
    assert check_answer(text, index, price_tolerance=0.02).status == "verified"


# Availability

@pytest.mark.parametrize("phrase, value", [
    ("is in stock", "in-stock"),
    ("is in-stock", "in-stock"),
    ("is available now", "in-stock"),
    ("is ready to ship", "in-stock"),
    ("is sold out", "out-of-stock"),
    ("is out of stock", "out-of-stock"),
    ("is currently unavailable", "out-of-stock"),
    ("is not available", "out-of-stock"),
    ("isn't in stock", "out-of-stock"),
    ("is back-ordered", "out-of-stock"),
    ("has only a few left", "limited"),
    ("has limited stock", "limited"),
    ("is low stock", "limited"),
    ("is running low", "limited"),
    ("has only 3 left", "limited"),
])
def test_availability_phrases(index, phrase, value):
    for pid, name, catalog in ((POWER_BANK, "Voltara 20000mAh Power Bank", "in-stock"),
                               (MOUSE, "Kestrel Tech Wireless Ergonomic Mouse", "limited"),
                               (HEADPHONES, "Sonique Studio Noise Cancelling Headphones", "out-of-stock")):
        verdict = check_answer(f"The {name} {phrase}.", index)
        right = value == catalog or "out-of-stock" not in (value, catalog)  # in stock and limited agree
        mismatches, verified = claims(verdict)
        assert (verified if right else mismatches) == {(pid, "availability", value)}, (name, phrase)


def test_stock_in_conditions_and_questions_is_not_a_claim(index):
    for text in ("If the Sonique Studio Noise Cancelling Headphones are out of stock, try the Echofield pair.",
                 "Is the Voltara 20000mAh Power Bank sold out? Let me check.",
                 "Would you like the Voltara 20000mAh Power Bank for under $30?"):
        assert check_answer(text, index).mismatches == [], text


# Ratings

@pytest.mark.parametrize("written, claimed", [
    ("has 4.2 stars", 4.2), ("is a 4.2-star pick", 4.2), ("is rated 4.2/5", 4.2), ("is rated 4.2 out of 5", 4.2),
    ("has a 4.2 rating", 4.2), ("has an average rating of 4.2", 4.2), ("scores ★ 4.2", 4.2),
    ("has 4.5 stars", 4.5), ("is rated 4.8/5", 4.8), ("has a 3.9 rating", 3.9),
])
def test_rating_formats(index, written, claimed):
    verdict = check_answer(f"The Voltara 20000mAh Power Bank {written}.", index)
    mismatches, verified = claims(verdict)
    assert (verified if claimed == 4.2 else mismatches) == {(POWER_BANK, "rating", claimed)}


def test_rating_bounds_and_whole_stars(index):
    assert claims(check_answer("The Voltara 20000mAh Power Bank is rated 4+ stars.", index))[1] == {
        (POWER_BANK, "rating", ">4.0")}
    assert claims(check_answer("The Voltara 20000mAh Power Bank has about 4 stars.", index))[1] == {
        (POWER_BANK, "rating", "~4.0")}
    assert claims(check_answer("The Voltara 20000mAh Power Bank has 4 stars.", index))[0] == {
        (POWER_BANK, "rating", 4.0)}  # a rating is right within 0.05
    assert claims(check_answer("The Voltara 20000mAh Power Bank has 4.5 stars or higher.", index))[0] == {
        (POWER_BANK, "rating", ">4.5")}


# Brands

@pytest.mark.parametrize("text, right", [
    ("The Voltara 20000mAh Power Bank, made by Orbix, charges fast.", False),
    ("The Voltara 20000mAh Power Bank from Nexio charges fast.", False),
    ("The Voltara 20000mAh Power Bank is manufactured by Nexio.", False),
    ("The Voltara 20000mAh Power Bank from Voltara charges fast.", True),
    ("The Voltara 20000mAh Power Bank is made by Voltara.", True),
])
def test_brand_claims(index, text, right):
    brand = re.search(r"(?:by|from) (\w+)", text).group(1)
    mismatches, verified = claims(check_answer(text, index))
    assert (verified if right else mismatches) == {(POWER_BANK, "brand", brand)}


def test_a_brand_that_is_not_said_of_the_product_is_no_claim(index):
    verdict = check_answer("The Voltara 20000mAh Power Bank is cheaper than anything from Orbix.", index)
    assert verdict.mismatches == []


def test_a_product_named_under_another_brand_is_that_product_with_a_wrong_brand(index):
    verdict = check_answer("Copperpot's Deep Cast Iron Skillet ($47.99) is rated 4.8.", index)  # Ferro & Salt's
    assert verdict.checked == ["KIT-0019"]
    assert claims(verdict) == ({("KIT-0019", "brand", "Copperpot")},
                               {("KIT-0019", "price", 47.99), ("KIT-0019", "rating", 4.8)})


def test_initials_and_lower_case_words_describe_a_product_without_renaming_it(index):
    verdict = check_answer("The Pulsewise Pro HR chest strap is $59.99.", index)  # Heart Rate; $80.00
    assert verdict.unknown_products == [] and claims(verdict)[0] == {("WEA-0004", "price", 59.99)}


def test_a_brand_said_of_a_title_in_brackets(index):
    verdict = check_answer("- *Plant-Based Weeknights* (Hardcover, Quillstone) — $29.95", index)
    assert claims(verdict) == ({("BOK-0019", "brand", "Quillstone")}, {("BOK-0019", "price", 29.95)})


# Products the catalog does not have

@pytest.mark.parametrize("text, unknown", [
    ("Try the Voltara HyperCharge 9000 Pro for travel.", ["Voltara HyperCharge 9000 Pro"]),
    ("The Sonique AirMax Headphones are great.", ["Sonique AirMax Headphones"]),
    ("The Voltara 30000mAh Power Bank lasts longer.", ["Voltara 30000mAh Power Bank"]),
    ("The Orbix Low-Profile Mechanical Keyboard Pro is new.", ["Orbix Low-Profile Mechanical Keyboard Pro"]),
    ("Look at ELE-9999 as well.", ["ELE-9999"]),
    ("The ZenBeat Pro Earbuds are popular.", ["ZenBeat Pro Earbuds"]),
    ("It looks like the **Instant Vortex Plus** but costs less.", ["Instant Vortex Plus"]),
    ("Fans of it also read *The Navigator's Son*, for $17.99.", ["The Navigator's Son"]),
    ("The Greenacre Chocolate Plant-Based Protein Powder is new.", ["Greenacre Chocolate Plant-Based Protein Powder"]),
    ("The Nordvik Breeze Tower Fan is quiet.", ["Nordvik Breeze Tower Fan"]),
])
def test_invented_products_are_unknown(index, text, unknown):
    verdict = check_answer(text, index)
    assert verdict.unknown_products == unknown and verdict.status == "mismatch"


@pytest.mark.parametrize("text", [
    "Great question! Here Are My Top Picks.",
    "## Best Noise Cancelling Headphones\n\nNoise Cancelling Headphones block out the world.",
    "Voltara makes excellent chargers, and Orbix makes keyboards.",
    "Overall, Electronics and Audio are the categories to look at. Wireless Earbuds are popular.",
    "The Voltara 20000mAh Power Bank Review: Price, Stock and Rating",
    "I can also compare Voltara Power Banks for you.",
    "It's an Editor's Choice this Holiday Season, Energy Star certified, with Free Returns.",
    "*Note:* prices change often; see our *Best Budget Picks* below.",
    "Read *Salt and Cedar*, then *Mapping the Deep*.",
])
def test_ordinary_capitalised_words_are_not_unknown_products(index, text):
    assert check_answer(text, index).unknown_products == []


# Giving each claim to its product

def test_claims_go_to_the_product_of_their_sentence(index):
    text = ("The Voltara 20000mAh Power Bank costs $49 and is in stock. The Orbix Low-Profile Mechanical "
            "Keyboard Lite costs $99 and is sold out.")
    mismatches, verified = claims(check_answer(text, index))
    assert mismatches == {(KEYBOARD, "price", 99.0), (KEYBOARD, "availability", "out-of-stock")}
    assert verified == {(POWER_BANK, "price", 49.0), (POWER_BANK, "availability", "in-stock")}


def test_claims_go_to_the_nearest_product_named_before_them(index):
    text = "The Voltara power bank ($49) is cheaper than the Orbix keyboard, which costs $99."
    assert claims(check_answer(text, index))[0] == {(KEYBOARD, "price", 99.0)}
    text = "The Orbix keyboard costs more than the Voltara power bank, at $152."
    assert claims(check_answer(text, index)) == (set(), {(KEYBOARD, "price", 152.0)})


def test_list_items_and_following_lines_keep_their_product(index):
    text = ("### Voltara 20000mAh Power Bank\n\n- Price: $39\n- Availability: In stock\n- Rating: 4.2/5\n\n"
            "### Orbix Low-Profile Mechanical Keyboard Lite\n\n- Price: $152\n- Availability: Sold out\n")
    mismatches, verified = claims(check_answer(text, index))
    assert mismatches == {(POWER_BANK, "price", 39.0), (KEYBOARD, "availability", "out-of-stock")}
    assert verified == {(POWER_BANK, "availability", "in-stock"), (POWER_BANK, "rating", 4.2),
                        (KEYBOARD, "price", 152.0)}


def test_table_rows_and_columns(index):
    text = ("| Product | Price | In stock? | Rating |\n|---|---:|:---:|---|\n"
            "| Voltara 20000mAh Power Bank | 49.00 | Yes | 4.2 |\n"
            "| Orbix Low-Profile Mechanical Keyboard Lite | $129.99 | No | 5.0 |\n"
            "| Kestrel Tech Wireless Ergonomic Mouse | $94.99 | Limited | 4.6 |\n")
    mismatches, verified = claims(check_answer(text, index))
    assert mismatches == {(KEYBOARD, "price", 129.99), (KEYBOARD, "availability", "out-of-stock"),
                          (MOUSE, "rating", 4.6)}
    assert verified == {(POWER_BANK, "price", 49.0), (POWER_BANK, "availability", "in-stock"),
                        (POWER_BANK, "rating", 4.2), (KEYBOARD, "rating", 5.0), (MOUSE, "price", 94.99),
                        (MOUSE, "availability", "limited")}


def test_both_the_first_the_second_and_respectively(index):
    both = "The Voltara power bank and the Orbix low-profile keyboard are both sold out."
    assert claims(check_answer(both, index))[0] == {(POWER_BANK, "availability", "out-of-stock"),
                                                   (KEYBOARD, "availability", "out-of-stock")}
    ordinal = "I picked the Voltara power bank and the Orbix low-profile keyboard. The first is $49, the second $99."
    assert claims(check_answer(ordinal, index)) == ({(KEYBOARD, "price", 99.0)}, {(POWER_BANK, "price", 49.0)})
    respectively = "The Voltara power bank and the Orbix keyboard cost $49 and $99 respectively."
    assert claims(check_answer(respectively, index)) == ({(KEYBOARD, "price", 99.0)},
                                                         {(POWER_BANK, "price", 49.0)})


def test_bundle_totals_are_not_checked(index):
    for text in ("Together, the Voltara power bank and the Orbix keyboard cost $150.",
                 "Get the Voltara power bank and the Orbix keyboard for $150 for both."):
        assert check_answer(text, index).mismatches == [], text
    text = ("Pair the Voltara 20000mAh Power Bank ($39) with the Orbix Low-Profile Mechanical Keyboard Lite "
            "($152) and you're set for about $190 total.")
    assert claims(check_answer(text, index)) == ({(POWER_BANK, "price", 39.0)}, {(KEYBOARD, "price", 152.0)})


def test_both_and_all_reach_to_the_end_of_their_clause(index):
    text = ("All three chef's knives are under $200: the Kettleworks Japanese Chef's Knife, the Kettleworks 8-inch "
            "Chef's Knife and the Mezzaluna Santoku Chef's Knife — though the Santoku is out of stock right now.")
    mismatches, verified = claims(check_answer(text, index))
    assert mismatches == set() and ("KIT-0007", "availability", "out-of-stock") in verified
    assert {pid for pid, field, _ in verified if field == "price"} == {"KIT-0011", "KIT-0016", "KIT-0007"}
    text = ("Both down sleeping bags are in stock: the Northbound Gear Summer Down Sleeping Bag ($160.99) and "
            "the Campfire Co. Quilt Down Sleeping Bag ($293.49).")
    assert claims(check_answer(text, index))[0] == set()


def test_a_claim_that_cannot_be_given_to_a_product_is_not_checked(index):
    text = "I recommend the Voltara 20000mAh Power Bank.\n\nIf you'd like options under $20, I can look."
    assert check_answer(text, index).mismatches == []
    text = "The Kestrel Tech webcams are good value; one of them costs $60."
    assert check_answer(text, index).mismatches == []


def test_stock_said_in_the_negative_and_former_prices(index):
    verdict = check_answer("The Voltara 20000mAh Power Bank hasn't sold out; we have plenty on hand. It is now $49 "
                           "(was $59).", index)
    assert claims(verdict) == (set(), {(POWER_BANK, "availability", "in-stock"), (POWER_BANK, "price", 49.0)})
    verdict = check_answer("The Voltara 20000mAh Power Bank is back in stock next week. ⭐ 4.2", index)
    assert claims(verdict) == ({(POWER_BANK, "availability", "out-of-stock")}, {(POWER_BANK, "rating", 4.2)})


def test_a_kind_of_product_in_the_plural_is_not_the_product(index):
    text = ("**Deskform Dual Motor Standing Desk** — rated 4.4\n\n**Paperhaus Electric Standing Desk**\n"
            "- Dual motors with memory presets\n- Rated 3.8 out of 5")  # the motors are not the Deskform
    assert claims(check_answer(text, index)) == (set(), {("OFF-0003", "rating", 4.4), ("OFF-0005", "rating", 3.8)})


def test_paraphrases_of_the_right_values_are_verified(index):
    text = ("Voltara's power bank is a steal at $49 — it's available now, and buyers give it 4.2 stars. "
            "The Kestrel Tech Wireless Ergonomic Mouse is in stock too, though supplies are limited.")
    verdict = check_answer(text, index)
    assert verdict.status == "verified" and verdict.mismatches == []
    assert (MOUSE, "availability", "limited") in claims(verdict)[1]


# The verdict

def test_verdict_statuses_header_and_summary(index):
    wrong = check_answer("The Voltara 20000mAh Power Bank costs $29.00 and the Voltara HyperCharge 9000 Pro "
                         "is new.", index)
    assert wrong.status == "mismatch"
    assert wrong.header() == "mismatch;products=1;mismatches=1;unknown=1"
    assert re.fullmatch(r"[a-z]+(;[a-z]+=\d+)+", wrong.header())  # an RFC 8941 token with integer parameters
    assert wrong.summary() == ("price of Voltara 20000mAh Power Bank: the answer says $29.00, the catalog $49.00; "
                               "'Voltara HyperCharge 9000 Pro' is not in the catalog")
    assert json.loads(json.dumps(wrong.to_dict())) == {
        "status": "mismatch", "checked": [POWER_BANK], "verified": [],
        "mismatches": [{"product_id": POWER_BANK, "name": "Voltara 20000mAh Power Bank", "field": "price",
                        "claimed": 29.0, "catalog": 49.0}],
        "unknown_products": ["Voltara HyperCharge 9000 Pro"]}
    right = check_answer("The Voltara 20000mAh Power Bank costs $49.", index)
    assert (right.status, right.header()) == ("verified", "verified;products=1;mismatches=0;unknown=0")
    assert check_answer("The Voltara 20000mAh Power Bank is nice.", index).status == "unverified"
    assert check_answer("Hello! How can I help?", index).status == "unverified"
    bound = check_answer("The Voltara 20000mAh Power Bank is under $40.", index)
    assert "under $40.00" in bound.summary()


def test_a_500_token_answer_is_checked_quickly(index):
    """A generous bound that cannot flake; the measured figure is bench/grounding.py's."""
    from bench.grounding import answer, cpu_per_call

    demo = list(read_products(DEMO))
    text = answer([demo[i] for i in (3, 4, 6, 0, 27, 60)])
    assert 1800 < len(text) < 2500
    best, _ = cpu_per_call(lambda: check_answer(text, index), repeat=20, rounds=3)
    assert best < 20


def test_a_large_catalog_is_indexed_once_and_checked_per_answer(index):
    from bench.grounding import synthetic_catalog

    big = synthetic_catalog(5000, list(read_products(DEMO)))
    large = GroundingIndex(big)
    product: Product = big[1234]
    text = f"The {product.name} costs ${product.price + 20:.2f} and is rated {product.rating}/5."
    started = time.process_time()
    verdict = check_answer(text, large)
    assert time.process_time() - started < 0.05
    assert verdict.checked == [product.product_id]
    assert claims(verdict) == ({(product.product_id, "price", round(product.price + 20, 2))},
                               {(product.product_id, "rating", product.rating)})
