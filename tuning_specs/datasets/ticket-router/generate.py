"""Generate the ticket-router example dataset (deterministic: same seed, same bytes).

Each example is a customer support ticket and the one queue it belongs to, in the Gemini tuning format (a ``user``
turn + a ``model`` turn holding only the queue name). The point of tuning is that the short prompt works: most
examples carry no system instruction (a quarter do, so both ways of asking are learnt).

A ticket is built from parts, so that the model learns the task rather than a template:

- a **request**: one of many phrasings of one of about ten intents per queue, its slots filled (products, plans,
  amounts, order numbers, dates, carriers, error codes);
- sometimes a **second sentence** with more detail of the same request;
- **noise**: greetings, sign-offs, a subject line, background ("I've been a customer for years"), phone signatures,
  quoted order references, praise or complaints that name *another* topic without asking about it;
- **style**: lower case, no punctuation, shouting, texting abbreviations, and typos (swapped, dropped or doubled
  letters), at different rates.

The test set (``test.jsonl``) is not made here: it was written by hand, with its own vocabulary and structure, and
``tests/test_ticket_router_data.py`` checks that none of its tickets (nor any 8 words in a row of them) appear in
the training data.

Usage::

    python tuning_specs/datasets/ticket-router/generate.py            # rewrite train.jsonl + validation.jsonl here
    python tuning_specs/datasets/ticket-router/generate.py --out DIR  # write somewhere else
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261201
TRAIN_EXAMPLES = 720
VALIDATION_EXAMPLES = 60
SYSTEM_SHARE = 0.25
"""Share of examples that carry the system instruction."""

QUEUES = ("billing", "technical", "account", "shipping", "returns", "sales")

SYSTEM_INSTRUCTION = (
    "Route the support ticket to one queue. Answer with the queue name only: "
    "billing, technical, account, shipping, returns or sales."
)

SLOTS: dict[str, tuple[str, ...]] = {
    "product": (
        "router",
        "headset",
        "smart plug",
        "webcam",
        "keyboard",
        "monitor",
        "printer",
        "tablet",
        "speaker",
        "mouse",
        "laptop stand",
        "smartwatch",
        "earbuds",
        "charger",
        "doorbell camera",
        "thermostat",
        "phone case",
        "backpack",
        "desk lamp",
        "coffee grinder",
    ),
    "plan": ("Basic", "Plus", "Pro", "Team", "Family", "Business", "Starter", "Premium"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "November"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "carrier": ("the courier", "DHL", "UPS", "the postman", "FedEx", "the delivery guy", "Royal Mail", "DPD"),
    "country": ("Norway", "Ireland", "Mexico", "Japan", "Poland", "Australia", "Switzerland", "Brazil"),
    "app": ("the app", "the mobile app", "the desktop program", "the web portal", "the companion app"),
    "os": ("iOS", "Android", "Windows", "macOS", "Chromebook", "Linux"),
    "symptom": (
        "keeps restarting",
        "won't charge",
        "overheats",
        "has no sound",
        "drops the connection",
        "freezes after a few minutes",
        "shows a black screen",
        "is stuck on the logo",
        "lags badly",
        "does not power on",
        "blinks red",
        "is not recognised by my computer",
    ),
    "colour": ("black", "white", "grey", "red", "navy", "green"),
    "size": ("small", "medium", "large", "the bigger", "the smaller"),
    "people": ("5", "8", "12", "20", "35", "50", "100", "250"),
    "org": ("our office", "our school", "my team", "our clinic", "the university", "our startup", "our agency"),
}

# Per queue and intent: phrasings. Slots in braces are filled from SLOTS plus {amount}, {order}, {code}, {n}.
INTENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "billing": {
        "double charge": (
            "I was charged twice for the same month.",
            "you took the payment two times from my card",
            "There are two identical charges of ${amount} on my account.",
            "Duplicate payment for my {plan} subscription, please refund one.",
            "my bank shows you billed me twice on {day}",
        ),
        "wrong amount": (
            "My invoice says ${amount} but my {plan} plan should cost less.",
            "the bill for {month} is higher than the price I agreed to",
            "Why am I paying ${amount} now? Nobody told me the price went up.",
            "The total on my last invoice is wrong.",
            "I was billed for more licences than we have.",
        ),
        "unknown charge": (
            "There is a charge of ${amount} on my statement I don't recognise.",
            "what is this ${amount} fee on my card?",
            "I see a payment to you that I never authorised.",
            "Can you explain the extra line item on this month's bill?",
        ),
        "refund of a charge": (
            "Please refund the ${amount} you charged me after I cancelled.",
            "I cancelled my subscription in {month} but you still took money, I want it back.",
            "charged after the trial ended even though I cancelled. refund please",
            "Can I get my money back for the renewal that went through yesterday?",
        ),
        "payment failed": (
            "My card payment failed, can you try charging it again?",
            "The renewal payment for the {plan} plan was declined and I updated my card.",
            "payment not going through at checkout, it keeps saying declined",
            "Your email says my payment is overdue but I paid on {day}.",
        ),
        "invoice copy": (
            "Please send me the invoice for {month}.",
            "I need copies of all receipts from last year for my taxes.",
            "Where can I download my invoices?",
            "Can you put our company name and tax number on the invoice?",
            "the receipt you sent is missing the VAT line",
        ),
        "payment method": (
            "How do I change the credit card you bill?",
            "Can I settle the bills through a wire transfer from now on?",
            "Please move my direct debit to a new bank account.",
            "can I pay with paypal from now on?",
        ),
        "billing details": (
            "Please update the billing address on my invoices.",
            "Change the name on the bills to my company's name.",
            "I want the invoices sent to our accounts department's email.",
        ),
        "subscription cost": (
            "Switch me from monthly to yearly billing please.",
            "My discount is not applied on this month's bill.",
            "The coupon I used was not taken off the amount I paid.",
            "you charged me in the wrong currency",
            "Stop the automatic renewal charge for my {plan} plan.",
        ),
    },
    "technical": {
        "connectivity": (
            "My {product} keeps dropping off the wifi.",
            "the {product} loses its connection every few minutes",
            "The {product} won't connect to my network at all.",
            "{product} disconnects from bluetooth constantly",
            "I can't get the {product} online, setup fails at the last step.",
        ),
        "error": (
            "The {product} shows error {code} when I switch it on.",
            "I keep getting error {code} in {app}.",
            "{app} says 'something went wrong' every time I open it.",
            "getting a {code} error when I try to sync",
            "Installation fails with error {code} on {os}.",
        ),
        "crash": (
            "{app} crashes as soon as I open it on {os}.",
            "Since the update {app} closes by itself.",
            "the software freezes and I have to force quit it",
            "{app} never gets beyond the start screen.",
        ),
        "hardware fault": (
            "My {product} {symptom}.",
            "the {product} {symptom} since yesterday",
            "After a week the {product} {symptom}, what can I do?",
            "Our {product} {symptom} every time we use it.",
        ),
        "pairing": (
            "The {product} will not pair with my phone.",
            "how do I pair the {product} with my {os} laptop? it never shows up",
            "Pairing mode light blinks forever and nothing happens.",
        ),
        "update": (
            "The firmware update for the {product} is stuck at {n} percent.",
            "After the latest update my {product} stopped working properly.",
            "can I go back to the old firmware? the new one broke the {product}",
        ),
        "setup": (
            "How do I reset the {product} to factory settings?",
            "I can't finish setting up the {product}, the instructions don't match what I see.",
            "The {product} isn't detected by {app}.",
        ),
        "performance": (
            "Everything in {app} is really slow lately.",
            "the {product} takes forever to respond",
            "Pages in the web portal time out constantly.",
            "Sync is not working, my changes don't show up on my other devices.",
        ),
        "audio video": (
            "The sound on my {product} crackles and cuts out.",
            "the picture on the {product} flickers",
            "My microphone isn't picked up in calls with the {product}.",
            "Only one side of the {product} plays sound.",
        ),
    },
    "account": {
        "password": (
            "I forgot my password and the reset email never comes.",
            "reset password link doesn't work",
            "How do I change my password?",
            "The password reset page says the link is invalid.",
        ),
        "locked out": (
            "I can't log in, it says my account is locked.",
            "Locked out of my account after too many tries.",
            "i cant sign in anymore, it just says login failed",
            "My login stopped working today.",
        ),
        "two factor": (
            "How do I turn on two-factor authentication?",
            "I got a new phone and lost my authenticator codes, now I can't get in.",
            "the verification code by sms never arrives",
            "Please disable 2FA on my account, I lost the device.",
        ),
        "profile change": (
            "Please change the email address on my account.",
            "I want to update my username.",
            "How do I change the name shown on my profile?",
            "can you update my phone number in my account",
        ),
        "security": (
            "Someone logged into my account without my permission.",
            "I think my account was hacked, there are logins I don't recognise.",
            "I got a security alert about a new sign-in that wasn't me.",
            "Please help me secure my account, my password was leaked.",
        ),
        "delete": (
            "I want to delete my account and all my data.",
            "please close my account for good",
            "How do I remove my profile permanently?",
        ),
        "merge": (
            "I have two accounts, can you merge them into one?",
            "I accidentally made a second account with another email.",
        ),
        "suspended": (
            "My account was suspended and I don't know why.",
            "why has my account been disabled?",
            "I can't access my account, it says deactivated.",
        ),
        "users and roles": (
            "How do I add another user to my account?",
            "Please make my colleague an admin of our workspace.",
            "Remove a former employee from our team account.",
            "transfer the account owner role to someone else please",
        ),
        "data and privacy": (
            "I'd like to download a copy of my personal data.",
            "How do I change the privacy settings on my profile?",
            "Stop showing my activity to other users.",
        ),
        "single sign on": (
            "Login with Google no longer works for me.",
            "Sign in with Apple gives an error and sends me back to the start.",
            "our company single sign-on stopped letting people in",
        ),
    },
    "shipping": {
        "late": (
            "My order {order} has not arrived yet, it's {n} days late.",
            "still waiting for my package from {order}",
            "Where is my order? I ordered it {n} days ago.",
            "The {product} I ordered should have been here by {day}.",
            "order hasn't come yet, when will it arrive",
        ),
        "tracking": (
            "The tracking for order {order} hasn't moved in a week.",
            "tracking number doesn't work on the carrier's site",
            "I never got a tracking link for my order.",
            "Tracking says delivered but there's nothing here.",
            "The tracking page shows no updates since {day}.",
        ),
        "lost": (
            "{carrier} says the parcel was delivered but I never got it.",
            "My package got lost in transit.",
            "the parcel was left at the wrong house by {carrier}",
            "Half of my order is missing, only one box came.",
        ),
        "address change": (
            "Can you ship order {order} to a different address?",
            "I entered the wrong delivery address, can it be changed before it ships?",
            "I moved, please send my order to my new address.",
        ),
        "delivery options": (
            "Do you deliver to {country}, and how long does it take?",
            "How much does shipping to {country} cost?",
            "Can I upgrade order {order} to express delivery?",
            "Is next-day delivery possible?",
            "Can I collect my order from a pick-up point instead?",
        ),
        "customs": (
            "My package is stuck in customs.",
            "I was asked to pay import duties to receive my parcel.",
            "customs is holding my order {order}, what do I do",
        ),
        "delivery attempt": (
            "{carrier} says they tried to deliver but I was home.",
            "I missed the delivery, how do I rebook it?",
            "The driver left a note but no parcel.",
            "Can the courier leave it with a neighbour?",
        ),
        "delivery date": (
            "The delivery date for my {product} keeps changing.",
            "Estimated delivery moved from {day} to next week, why?",
            "will my order arrive before {day}? it's a gift",
        ),
    },
    "returns": {
        "return unwanted": (
            "I want to return the {product} from order {order}.",
            "Not keeping the {product} after all, how does a return work?",
            "The {product} isn't what I expected, I'd like to return it.",
            "how do i return something i bought online",
        ),
        "damaged": (
            "The {product} arrived broken and I'd like a return.",
            "My {product} came damaged in the box. Return please.",
            "the {product} has a crack and scratches, I'm returning it",
        ),
        "wrong item": (
            "You sent me the wrong {product}, I want to swap it for the one I ordered.",
            "I received a {colour} one instead of {colour}, can I exchange it?",
            "wrong size delivered, need to send it back",
        ),
        "exchange": (
            "Can I exchange the {product} for {size} size?",
            "I'd like to swap the {product} for a different colour.",
            "can I trade in the {product} for the newer model and pay the difference?",
        ),
        "label": (
            "How do I get a return label for order {order}?",
            "The return label doesn't scan at the drop-off point.",
            "please email me a prepaid return label",
            "Where do I drop off my return?",
        ),
        "return status": (
            "I sent the {product} back {n} days ago, when will the return be processed?",
            "You received my return last week but I haven't been refunded.",
            "what's the status of my return for order {order}?",
            "Only part of my returned items were refunded.",
        ),
        "policy": (
            "Is it too late to return the {product} I bought in {month}?",
            "Can I return an item without the original box?",
            "How many days do I have to return something?",
            "who covers the postage when I send something back?",
        ),
        "defect warranty": (
            "My {product} broke after {n} weeks, can I return it under warranty?",
            "The {product} {symptom}, I want a replacement, not a repair.",
            "I'd like to send the faulty {product} back for a new one.",
        ),
        "return refused": (
            "My return was rejected, why?",
            "The returns page says my order can't be returned.",
            "The warehouse sent my return back to me.",
        ),
    },
    "sales": {
        "bulk": (
            "Do you offer a discount for buying {n} {product}s for {org}?",
            "We want to order {people} {product}s, is there volume pricing?",
            "Are there bulk prices for {org}?",
        ),
        "quote": (
            "Can I get a quote for {people} licences of the {plan} plan?",
            "please send a price quote for {people} seats",
            "We need a formal offer for {n} {product}s for our purchasing department.",
        ),
        "plans": (
            "What is the difference between the {plan} and Pro plans?",
            "Which plan should I buy for a team of {people}?",
            "does the {plan} plan include priority support?",
            "I'd like to upgrade to a bigger plan, who do I talk to?",
        ),
        "compatibility": (
            "Does the {product} work with {os} before I buy it?",
            "Is the {product} compatible with my setup? Thinking of ordering one.",
            "will the {product} work in {country}? want to buy one",
        ),
        "discount": (
            "Do you have student pricing for the {plan} plan?",
            "Any discounts for nonprofits?",
            "Are there any sales coming up on the {product}?",
            "Is there a bundle price if I buy the {product} and a case?",
        ),
        "trial": (
            "Do you offer a free trial of the {plan} plan?",
            "Can I test the software before paying?",
            "is there a demo version i could try",
        ),
        "stock": (
            "When will the {product} be back in stock? I want to buy one.",
            "Can I pre-order the next version of the {product}?",
            "Is the {product} available in {colour}?",
            "do you still sell the older {product} model?",
        ),
        "contact sales": (
            "I'd like to talk to someone about a business contract for {people} seats.",
            "Can someone from sales call me about an enterprise deal?",
            "We're interested in becoming a reseller of your products.",
            "Could we schedule a product demo for {org}?",
        ),
        "pre purchase": (
            "How much does the {product} cost?",
            "What's the price of the {plan} plan per user?",
            "Which {product} would you recommend for a small flat?",
            "I'm thinking of buying a {product}, what's the warranty like?",
        ),
    },
}

OPENINGS = (
    "Hi, ",
    "Hello, ",
    "Hi team, ",
    "Good morning, ",
    "Hey, ",
    "Dear support, ",
    "Hello there. ",
    "Hi support team,\n",
    "To whom it may concern: ",
    "Hey guys ",
    "yo ",
    "Greetings, ",
)
CLOSINGS = (
    " Thanks!",
    " Thank you.",
    " Please help.",
    "\nRegards,\n{name}",
    " Thanks, {name}",
    " - {name}",
    " Cheers",
    " Kind regards, {name}",
    " Any help appreciated.",
    "\n\nSent from my iPhone",
    " thx",
    " Waiting for your answer.",
)
BACKGROUND = (
    "I've been a customer for {n} years.",
    "I'm writing from my phone, sorry for typos.",
    "This is my second time writing about this.",
    "I already tried your help pages.",
    "My colleague told me to contact you.",
    "I bought a {product} from you last {month}.",
    "Not very happy right now.",
    "I hope you can sort this out quickly.",
    "My name is {name}.",
    "Account email is {name_lower}@example.com.",
    "I have the {plan} plan.",
)
ASIDES: dict[str, tuple[str, ...]] = {
    # Remarks that name a queue's topic without asking about it; a ticket gets one from another queue only.
    "billing": ("I'm not asking about a refund, just this.", "The price is fine, by the way."),
    "technical": ("The {product} itself works great.", "Not a technical question, to be clear."),
    "account": ("My account works fine, that's not the issue.", "I can log in without problems."),
    "shipping": ("Delivery was quick, no complaints there.", "The parcel came on time."),
    "returns": ("I don't want to return anything.", "I'm keeping the {product}."),
    "sales": ("Love your products otherwise.", "I'll probably buy more from you later."),
}
SUBJECTS = ("Subject: {topic}\n\n", "RE: {topic}\n", "[{topic}] ", "{topic} - ")
TOPICS: dict[str, tuple[str, ...]] = {
    "billing": ("Billing question", "Invoice", "Payment issue", "Charge on my card", "Subscription fee"),
    "technical": ("Not working", "Bug report", "Device problem", "Error message", "Help with setup"),
    "account": ("Login problem", "My account", "Account access", "Profile", "Security"),
    "shipping": ("Delivery", "Where is my order", "Shipping question", "Parcel", "Tracking"),
    "returns": ("Return", "Exchange request", "Return request", "Send back", "Refund for return"),
    "sales": ("Pricing question", "Buying", "Quote request", "Interested in your products", "Sales enquiry"),
}
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elif", "Femi", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lea", "Mia", "Noor")
TEXTING = {"you": "u", "your": "ur", "please": "pls", "thanks": "thx", "because": "bc", "are": "r", "to": "2"}


def _fill(template: str, rng: random.Random) -> str:
    name = rng.choice(NAMES)
    values = {key: rng.choice(options) for key, options in SLOTS.items()}
    values.update(
        amount=f"{rng.randint(5, 400)}.{rng.choice(('00', '50', '99'))}",
        order=rng.choice(("#", "", "order ", "A-", "no. ")) + str(rng.randint(10000, 99999)),
        code=rng.choice(("E", "ERR-", "0x", "")) + str(rng.randint(100, 999)),
        n=rng.randint(2, 40),
        name=name,
        name_lower=name.lower(),
    )
    return template.format(**values)


def _typo(text: str, rng: random.Random) -> str:
    """One slip of the fingers in one word: two letters swapped, one dropped or one doubled."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) > 4 and word.isalpha()]
    if not candidates:
        return text
    index = rng.choice(candidates)
    word = words[index]
    at = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    elif kind == 1:
        word = word[:at] + word[at + 1 :]
    else:
        word = word[:at] + word[at] + word[at:]
    words[index] = word
    return " ".join(words)


def _style(text: str, rng: random.Random) -> str:
    """How hurried, casual or angry people write."""
    roll = rng.random()
    if roll < 0.15:
        text = text.lower()
    elif roll < 0.22:
        text = text.lower().replace(".", "").replace(",", "").replace("'", "")
    elif roll < 0.25:
        text = text.upper()
    elif roll < 0.30:
        text = " ".join(TEXTING.get(word, word) for word in text.split(" "))
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        text = _typo(text, rng)
    if rng.random() < 0.08:
        text = text.rstrip(".!") + rng.choice(("!!", "??", "!!!", "?!"))
    return text


def _request(queue: str, rng: random.Random) -> str:
    intent = rng.choice(sorted(INTENTS[queue]))
    phrasings = INTENTS[queue][intent]
    first = _fill(rng.choice(phrasings), rng)
    if rng.random() < 0.25 and len(phrasings) > 1:
        # A second sentence of the same intent: longer tickets that repeat themselves, as people do.
        second = _fill(rng.choice([p for p in phrasings if p != first]), rng)
        first = f"{first.rstrip('.!?')}. {second[0].upper()}{second[1:]}"
    return first[0].upper() + first[1:]


def make_ticket(queue: str, rng: random.Random) -> str:
    """One ticket for ``queue``: a request with, at random, background, an aside, a greeting, a closing and style."""
    parts = [_request(queue, rng)]
    if rng.random() < 0.3:
        parts.insert(0, _fill(rng.choice(BACKGROUND), rng))
    if rng.random() < 0.15:
        other = rng.choice([q for q in QUEUES if q != queue])
        parts.insert(rng.randrange(len(parts) + 1), _fill(rng.choice(ASIDES[other]), rng))
    text = " ".join(parts)
    if rng.random() < 0.45:
        text = rng.choice(OPENINGS) + text[0].lower() + text[1:] if not text.startswith("I ") else text
    if rng.random() < 0.4:
        text += _fill(rng.choice(CLOSINGS), rng)
    text = _style(text, rng)
    if rng.random() < 0.12:
        text = rng.choice(SUBJECTS).format(topic=rng.choice(TOPICS[queue])) + text
    return text


def make_example(queue: str, rng: random.Random) -> dict:
    """A Gemini-format tuning example for one ticket; a share of them carries the system instruction."""
    example: dict = {
        "contents": [
            {"role": "user", "parts": [{"text": make_ticket(queue, rng)}]},
            {"role": "model", "parts": [{"text": queue}]},
        ]
    }
    if rng.random() < SYSTEM_SHARE:
        example = {"systemInstruction": {"role": "system", "parts": [{"text": SYSTEM_INSTRUCTION}]}, **example}
    return example


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
