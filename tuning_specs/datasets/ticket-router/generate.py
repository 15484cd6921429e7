"""Generate the ticket-router example dataset (deterministic: same seed, same bytes).

Each example is a customer support ticket and the one queue it belongs to, in the Gemini tuning format
(``systemInstruction`` + a ``user`` turn + a ``model`` turn holding only the queue name). Tickets are short, with
greetings, signatures, order numbers and typos mixed in, so the model has to read the request rather than match a
fixed sentence; the answer is a single word so exact match is a fair metric.

Usage::

    python tuning_specs/datasets/ticket-router/generate.py            # rewrite train.jsonl + validation.jsonl here
    python tuning_specs/datasets/ticket-router/generate.py --out DIR  # write somewhere else
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261125
TRAIN_EXAMPLES = 320
VALIDATION_EXAMPLES = 64

QUEUES = ("billing", "technical", "account", "shipping", "returns", "sales")

SYSTEM_INSTRUCTION = (
    "Route the support ticket to one queue. Answer with the queue name only: "
    "billing, technical, account, shipping, returns or sales."
)

PRODUCTS = ("router", "headset", "smart plug", "webcam", "keyboard", "monitor", "printer", "tablet", "speaker")
PLANS = ("Basic", "Plus", "Pro", "Team", "Family")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October")
CARRIERS = ("the courier", "DHL", "UPS", "the postman", "FedEx")
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lea", "Mia", "Noor")

# Per queue: sentence templates; {product}, {plan}, {month}, {amount}, {order}, {carrier}, {code}, {n} are filled in.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {plan} plan in {month}.",
        "My invoice shows ${amount} but the plan costs less. Please fix the invoice.",
        "Why did my card get charged ${amount} this month?",
        "Can I get a refund of the extra ${amount} you billed me?",
        "The payment for my {plan} subscription failed, can you retry the charge?",
        "Please send me a copy of the invoice for {month}.",
        "I need to update the credit card you bill every month.",
        "There is a charge of ${amount} on my statement that I do not recognise.",
        "I cancelled in {month} but you still billed me.",
        "Please change my billing address on the invoices.",
    ),
    "technical": (
        "My {product} keeps disconnecting from wifi every few minutes.",
        "The {product} shows error {code} when I turn it on.",
        "After the last update the {product} app crashes on start.",
        "The {product} will not pair with my phone over bluetooth.",
        "The firmware update for the {product} is stuck at {n} percent.",
        "My {product} is very slow and freezes since yesterday.",
        "The {product} makes a buzzing noise and the screen flickers.",
        "I get error {code} when I try to sync the {product}.",
        "The {product} does not turn on anymore, the light blinks red.",
        "How do I reset the {product} to factory settings? It stopped working.",
    ),
    "account": (
        "I forgot my password and the reset email never arrives.",
        "I cannot log in, it says my account is locked.",
        "Please change the email address on my account.",
        "How do I turn on two-factor authentication for my login?",
        "Someone else may have accessed my account, please help me secure it.",
        "I want to delete my account and all my data.",
        "The verification code for my login never comes by sms.",
        "Please merge my two accounts into one.",
        "I need to change the username on my profile.",
        "My account was suspended and I do not know why.",
    ),
    "shipping": (
        "My order {order} has not arrived yet, it is {n} days late.",
        "The tracking for order {order} has not moved for a week.",
        "{carrier} says the parcel was delivered but I never got it.",
        "Can you ship order {order} to a different address?",
        "When will my {product} be delivered? Order {order}.",
        "The package for order {order} is stuck in customs.",
        "Do you deliver to Norway, and how long does delivery take?",
        "My parcel was left at the wrong address by {carrier}.",
        "Can I upgrade order {order} to express delivery?",
        "The delivery date for my {product} keeps changing.",
    ),
    "returns": (
        "I want to return the {product} from order {order}, it is not what I expected.",
        "The {product} arrived broken, I would like to send it back.",
        "How do I get a return label for order {order}?",
        "I sent the {product} back {n} days ago, when is the return processed?",
        "Can I exchange the {product} for a different colour?",
        "You sent me the wrong {product}, I want to send it back and get the right one.",
        "Is it too late to return the {product} I bought in {month}?",
        "The return label for order {order} does not work at the drop-off point.",
        "I would like to return two items from order {order}.",
        "The {product} is missing parts, I want to return it.",
    ),
    "sales": (
        "Do you offer a discount for buying {n} {product}s for our office?",
        "What is the difference between the {plan} and Pro plans before I buy?",
        "Can I get a quote for {n} licences of the {plan} plan?",
        "Is the new {product} compatible with Mac before I order it?",
        "Do you have student pricing for the {plan} plan?",
        "I would like to talk to someone about a business contract for {n} seats.",
        "When will the {product} be back in stock? I want to buy one.",
        "Do you offer a free trial of the {plan} plan?",
        "Can I pre-order the next version of the {product}?",
        "Are there bulk prices for schools buying {product}s?",
    ),
}

OPENINGS = ("", "", "Hi, ", "Hello, ", "Hi team, ", "Good morning, ", "Hey, ", "Dear support, ")
CLOSINGS = ("", "", "", " Thanks!", " Thank you.", " Please help.", " Regards, {name}", " Thanks, {name}", " - {name}")


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters in one word, as hurried customers do."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) > 4 and word.isalpha()]
    if not candidates:
        return text
    index = rng.choice(candidates)
    word = words[index]
    at = rng.randrange(1, len(word) - 2)
    words[index] = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    return " ".join(words)


def make_ticket(queue: str, rng: random.Random) -> str:
    """One ticket for ``queue``: a template with its slots filled, an opening, a closing and maybe a typo."""
    body = rng.choice(TEMPLATES[queue]).format(
        product=rng.choice(PRODUCTS),
        plan=rng.choice(PLANS),
        month=rng.choice(MONTHS),
        amount=f"{rng.randint(5, 400)}.{rng.choice(('00', '50', '99'))}",
        order=f"#{rng.randint(10000, 99999)}",
        carrier=rng.choice(CARRIERS),
        code=f"E{rng.randint(100, 999)}",
        n=rng.randint(2, 40),
    )
    opening = rng.choice(OPENINGS)
    if opening:
        body = body[0].lower() + body[1:] if not body.startswith(("I ", "I'")) else body
    text = opening + body + rng.choice(CLOSINGS).format(name=rng.choice(NAMES))
    if rng.random() < 0.2:
        text = _typo(text, rng)
    return text


def make_example(queue: str, rng: random.Random) -> dict:
    """A Gemini-format tuning example for one ticket."""
    return {
        "systemInstruction": {"role": "system", "parts": [{"text": SYSTEM_INSTRUCTION}]},
        "contents": [
            {"role": "user", "parts": [{"text": make_ticket(queue, rng)}]},
            {"role": "model", "parts": [{"text": queue}]},
        ],
    }


def generate(train_count: int = TRAIN_EXAMPLES, validation_count: int = VALIDATION_EXAMPLES, seed: int = SEED):
    """Build the train and validation splits: balanced over queues, no ticket in both.

    Args:
        train_count: Training examples.
        validation_count: Validation examples.
        seed: Seed of the only random generator used.

    Returns:
        ``(train, validation)`` lists of Gemini-format examples.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: list[list[dict]] = []
    for count in (train_count, validation_count):
        examples: list[dict] = []
        while len(examples) < count:
            queue = QUEUES[len(examples) % len(QUEUES)]
            example = make_example(queue, rng)
            ticket = example["contents"][0]["parts"][0]["text"]
            if ticket in seen:
                continue
            seen.add(ticket)
            examples.append(example)
        rng.shuffle(examples)
        splits.append(examples)
    return splits[0], splits[1]


def write_jsonl(path: Path, examples: list[dict]) -> None:
    """Write one compact JSON object per line."""
    path.write_text("".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples), encoding="utf-8")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    args = parser.parse_args()
    train, validation = generate()
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "validation.jsonl", validation)
    print(f"wrote {len(train)} training and {len(validation)} validation examples to {args.out}")


if __name__ == "__main__":
    main()
