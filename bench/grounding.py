"""CPU cost of the catalog grounding check (issue 19: at most 1 ms for a 500-token answer).

Run ``python bench/grounding.py``. It prints the CPU time (``time.process_time``) of one
``check_answer`` on answers of several sizes against the demo catalog, and of building the index and
checking an answer against a synthetic 5,000-product catalog. Each figure is the best of several
rounds of many repetitions: the machine's other work only ever adds time, so the best round is the
closest to the check's own cost; the median round is printed beside it.

The answers are written the way models write: numbered lists with bold names, a comparison
paragraph naming products by brand and model words, a table with price, stock and rating columns,
prices in several formats, and a few wrong values, so every step of the check runs.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.catalog import read_products  # noqa: E402
from gateway.store.base import Product  # noqa: E402
from plugins.grounding import GroundingIndex, check_answer  # noqa: E402

DEMO = ROOT / "data" / "demo_catalog.json"
STOCK = {"in-stock": "in stock", "limited": "only a few left", "out-of-stock": "currently sold out"}


def list_item(number: int, product: Product) -> str:
    """One numbered recommendation, the way a model writes it."""
    return (f"{number}. **{product.name}** — ${product.price:,.2f}, {STOCK[product.availability]}, "
            f"rated {product.rating}/5. {product.description}\n")


def answer(products: list[Product], paragraphs: int = 1) -> str:
    """A model-style answer about ``products``: list, comparison, table, closing line."""
    first, second, third = products[0], products[1], products[2]
    parts = ["Here are some options that match what you asked for, with current prices and stock:\n\n"]
    parts += [list_item(n, p) for n, p in enumerate(products, start=1)]
    for _ in range(paragraphs):
        parts.append(
            f"\nIf you want the best value, the {first.brand} {first.name.split()[-1].lower()} is the "
            f"cheapest pick at about ${round(first.price)}, and it has a {first.rating} rating. The "
            f"{second.name} costs {second.price:,.2f} USD and is {STOCK[second.availability]}; the "
            f"{third.brand} one sits in between at ${third.price - 10:,.2f} (roughly €{third.price:.0f}) with "
            f"{third.rating} stars. Both of the first two are under {max(first.price, second.price) + 50:.0f} "
            "dollars, which keeps you well within a typical budget.\n")
    parts.append("\n| Product | Price | Availability | Rating |\n|---|---|---|---|\n")
    parts += [f"| {p.name} | ${p.price:,.2f} | {p.availability.replace('-', ' ').title()} | {p.rating} |\n"
              for p in products[:4]]
    parts.append("\nLet me know if you'd like more options or a closer comparison of any two of these!")
    return "".join(parts)


def cpu_per_call(work: Callable[[], object], repeat: int, rounds: int = 7) -> tuple[float, float]:
    """(best, median) CPU milliseconds per call over ``rounds`` rounds of ``repeat`` calls."""
    per_round = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            work()
        per_round.append((time.process_time() - start) / repeat * 1000)
    return min(per_round), statistics.median(per_round)


def python_loop() -> int:
    """A fixed amount of plain Python work, to tell a slow machine (or moment) from a slow check."""
    total = 0
    for number in range(100_000):
        total += number
    return total


def synthetic_catalog(size: int, demo: list[Product]) -> list[Product]:
    """``size`` products: the demo catalog's model names under 100 invented brands, with variants."""
    syllables = ("Vel", "Kor", "Zen", "Lum", "Tar", "Mira", "Quor", "Sal", "Brin", "Ost")
    brands = [a + b.lower() for a in syllables for b in syllables][:100]
    variants = ("", " II", " Pro", " Max", " Lite", " X", " Plus", " Mini", " S", " Ultra")
    models = [p.name.removeprefix(p.brand).strip() for p in demo]
    return [Product(product_id=f"SYN-{n:05d}", name=f"{brands[n % 100]} {models[n % len(models)]}"
                    f"{variants[(n // 100) % len(variants)]}", category=demo[n % len(demo)].category,
                    price=round(5 + (n * 7.31) % 600, 2), brand=brands[n % 100],
                    availability=("in-stock", "limited", "out-of-stock")[n % 3], rating=round(3 + (n % 21) / 10, 1),
                    description=demo[n % len(demo)].description)
            for n in range(size)]


def main() -> None:
    demo = read_products(DEMO)
    index = GroundingIndex(demo)
    picks = [demo[i] for i in (3, 4, 6, 0, 27, 60)]  # power bank, keyboards, mouse, headphones, lamp
    answers = {"short (1 product, ~300 chars)": list_item(1, picks[0]) + "It ships today.",
               "500 tokens (6 products)": answer(picks),
               "2,000 tokens (6 products, long)": answer(picks, paragraphs=12)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    reference, _ = cpu_per_call(python_loop, repeat=20)
    print(f"grounding check, CPU ms per call (best / median of 7 rounds); {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {load:.2f}, Python {platform.python_version()}; this machine runs a Python loop of "
          f"100,000 additions in {reference:.2f} ms (the figures below scale with it)")
    for label, text in answers.items():
        verdict = check_answer(text, index)
        best, median = cpu_per_call(lambda text=text: check_answer(text, index), repeat=300)
        print(f"  demo catalog, {label:34} {len(text):6} chars: {best:6.3f} / {median:6.3f} ms"
              f"   ({verdict.header()})")
    big = synthetic_catalog(5000, demo)
    best, median = cpu_per_call(lambda: GroundingIndex(big), repeat=1, rounds=5)
    print(f"  5,000-product catalog: index build {best:7.1f} / {median:7.1f} ms")
    big_index = GroundingIndex(big)
    text = answer([big[i] for i in (4, 1210, 2345, 3001, 4444, 4999)])
    verdict = check_answer(text, big_index)
    best, median = cpu_per_call(lambda: check_answer(text, big_index), repeat=300)
    print(f"  5,000-product catalog, 500 tokens (6 products) {len(text):6} chars: {best:6.3f} / {median:6.3f} ms"
          f"   ({verdict.header()})")


if __name__ == "__main__":
    main()
