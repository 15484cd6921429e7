"""Generate the invoice-fields example dataset (deterministic: same seed, same bytes).

Each row is an invoice sentence in one of a few shapes and the JSON object of its fields, in the OpenAI chat format
(``messages`` with ``system``/``user``/``assistant``), which tuneform converts to the Gemini format before tuning.
The set is deliberately tiny (24 + 6 rows): it shows the ``openai-chat`` format and an open model, not a benchmark.

Usage::

    python tuning_specs/datasets/invoice-fields/generate.py            # rewrite train.jsonl + validation.jsonl here
    python tuning_specs/datasets/invoice-fields/generate.py --out DIR  # write somewhere else
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 7
SPLITS = (("train", 24), ("validation", 6))
VENDORS = ("Acme Tools", "Nordwind GmbH", "Blue Harbor Ltd", "Kite & Co", "Pioneer Foods", "Quanta Labs")
VENDORS += ("Sunrise Print", "Orbit Freight")
CURRENCIES = (("EUR", "€"), ("USD", "$"), ("GBP", "£"))
TEMPLATES = (
    "Invoice {num} from {vendor}, dated {date}. Total due: {sym}{amount} {cur}.",
    "{vendor} billed us {sym}{amount} ({cur}) on {date}; reference {num}.",
    "Please pay {cur} {amount} to {vendor} for invoice no. {num} issued {date}.",
    "Re: {num} - {vendor} - amount {amount} {cur} - date {date}",
)
SYSTEM = (
    "Extract vendor, invoice number, date (YYYY-MM-DD), amount and currency from the text. "
    "Answer with one JSON object."
)


def _row(rng: random.Random) -> dict[str, object]:
    vendor = rng.choice(VENDORS)
    cur, sym = rng.choice(CURRENCIES)
    num = f"INV-{rng.randint(1000, 9999)}"
    date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    amount = f"{rng.randint(10, 9999)}.{rng.randint(0, 99):02d}"
    text = rng.choice(TEMPLATES).format(num=num, vendor=vendor, date=date, sym=sym, amount=amount, cur=cur)
    answer = json.dumps({"vendor": vendor, "invoice": num, "date": date, "amount": amount, "currency": cur})
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="output directory")
    args = parser.parse_args()
    rng = random.Random(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, count in SPLITS:
        lines = [json.dumps(_row(rng), ensure_ascii=False) + "\n" for _ in range(count)]
        (args.out / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
