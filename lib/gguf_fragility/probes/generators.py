"""Seeded generators for families without a usable offline benchmark.

``arithmetic``, ``string_ops`` and ``structured_output`` are generated from fixed word lists
with :class:`random.Random`; ``long_context`` places a needle sentence into a window of the
Paul Graham essays. The same seed always yields byte-identical items (no time, no hashing
of Python objects, no set iteration order).
"""

from __future__ import annotations

import random

from gguf_fragility.probes.items import make_item


def _w(text: str) -> tuple[str, ...]:
    """Words of a space-separated literal."""
    return tuple(text.split())


WORDS = _w(
    "apple banana cherry garden planet window silver orange purple monkey rabbit guitar "
    "pencil doctor island rocket castle bridge candle dragon forest hammer jacket kitten "
    "ladder marble needle pepper pillow pirate puzzle river saddle spider summer ticket "
    "tomato tunnel turtle velvet violin wallet winter yellow anchor basket bottle button "
    "camera carpet cookie copper desert engine feather finger flower glider harbor helmet "
    "insect jungle kettle lemon magnet meadow mirror napkin noodle office oyster parrot "
    "pickle pocket quartz rhythm salmon shadow singer sponge stable statue sunset tablet "
    "temple thunder toffee travel trumpet unicorn valley walnut whisper wizard zipper "
    "blanket cabinet chicken diamond eagle falcon goblin hobbit lantern mango nickel "
    "octopus panther pumpkin raven sailor timber"
)
FIRST = _w("Maria Liam Olivia Noah Emma Ahmed Sofia Lucas Mia Ethan Aisha Mateo Chloe Arjun "
         "Hannah Kenji Zoe Omar Ingrid Diego Priya Tomas Elena Yusuf Grace")
LAST = _w("Lopez Smith Chen Garcia Muller Rossi Novak Okafor Tanaka Silva Kowalski Dubois "
        "Jensen Haddad Patel Moreau Costa Nguyen Schmidt Ivanova Brown Larsen")
CITIES = _w("Leeds Lyon Porto Graz Turin Bergen Ghent Utrecht Malmo Krakow Seville Bremen "
          "Dublin Lisbon Oslo Vienna Zurich Geneva Antwerp Bristol Nantes Bologna")
NUM_WORDS = _w("zero one two three four five six seven eight nine ten eleven twelve")
ORDINALS = _w("1st 2nd 3rd 4th 5th 6th 7th 8th")


def build_arithmetic(rng: random.Random, n: int = 300) -> list[dict]:
    """Addition, subtraction and multiplication at three sizes, one op per item, shuffled."""
    specs = [("+", 2), ("+", 3), ("+", 4), ("-", 2), ("-", 3), ("-", 4),
             ("*", 1), ("*", 2), ("*", 3)]  # (operator, digits): "*" 3 means 3x2 digits
    out = []
    for k in range(n):
        op, digits = specs[k % len(specs)]
        lo, hi = 10 ** (digits - 1), 10 ** digits - 1
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "*":
            a, b = rng.randint(max(2, lo), hi), rng.randint(10 if digits > 1 else 2,
                                                            99 if digits > 1 else 9)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append(make_item(
            "arithmetic", "generated", f"seed{rng_seed(rng)}", f"{k:04d}", kind="generate",
            question=f"What is {a} {op} {b}?", instruction="Answer with the number only.",
            gold=[str(value)], scorer="numeric",
            meta={"op": op, "digits": digits, "a": a, "b": b}))
    rng.shuffle(out)
    return out


def rng_seed(rng: random.Random) -> int:
    """The seed recorded on a generator (set by :func:`seeded`)."""
    return getattr(rng, "seed_value", 0)


def seeded(seed: int) -> random.Random:
    """A :class:`random.Random` that remembers its seed for provenance."""
    rng = random.Random(seed)
    rng.seed_value = seed  # type: ignore[attr-defined]
    return rng


def _scramble(word: str, rng: random.Random) -> str:
    letters = list(word)
    for _ in range(20):
        rng.shuffle(letters)
        if "".join(letters) != word:
            break
    return "".join(letters)


def build_string_ops(rng: random.Random, n: int = 300) -> list[dict]:
    """Five character/word tasks in turn: reverse, count a letter, n-th letter, sort, unscramble."""
    anagram_free = [w for w in WORDS if sum(sorted(v) == sorted(w) for v in WORDS) == 1]
    out = []
    split = f"seed{rng_seed(rng)}"
    for k in range(n):
        task = ("reverse", "count", "nth", "sort", "unscramble")[k % 5]
        w = rng.choice(WORDS)
        if task == "reverse":
            q, gold, scorer = f"Reverse the letters of the word '{w}'.", [w[::-1]], "exact"
        elif task == "count":
            letter = rng.choice(w) if rng.random() < 0.8 else rng.choice(
                [c for c in "bfjkqvxz" if c not in w] or ["q"])
            q = f"How many times does the letter '{letter}' appear in the word '{w}'?"
            gold, scorer = [str(w.count(letter))], "numeric"
        elif task == "nth":
            i = rng.randrange(min(len(w), len(ORDINALS)))
            q, gold, scorer = f"What is the {ORDINALS[i]} letter of the word '{w}'?", [w[i]], "exact"
        elif task == "sort":
            ws = rng.sample(WORDS, rng.randint(3, 5))
            q = f"Sort these words in alphabetical order: {', '.join(ws)}."
            s = sorted(ws)
            gold, scorer = [", ".join(s), " ".join(s), ",".join(s)], "exact"
        else:
            w = rng.choice(anagram_free)
            q = f"Unscramble the letters '{_scramble(w, rng)}' to make a common English word."
            gold, scorer = [w], "exact"
        out.append(make_item(
            "string_ops", "generated", split, f"{k:04d}", kind="generate", question=q,
            instruction="Answer with the result only.", gold=gold, scorer=scorer,
            meta={"task": task}))
    rng.shuffle(out)
    return out


_ORDER_TEMPLATES = (
    "Hello, this is {name}. Please send {qty} units of product {code} to our office in {city}. "
    "Thanks!",
    "Order request from {name} ({city} branch): we need {qty} of item {code} as soon as "
    "possible.",
    "Hi team, {name} here. Could you ship product {code} to {city}? Quantity: {qty}.",
    "{city} warehouse needs a restock of {code}. Amount: {qty}. Contact person: {name}.",
    "Dear supplier, I am {name} and I would like to order {qty} pieces of {code}, delivered "
    "to {city}.",
)


def build_structured_output(rng: random.Random, n: int = 300) -> list[dict]:
    """Short order messages; the model must return their four fields as a JSON object."""
    out = []
    for k in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        code = f"{rng.choice('ABCDEFGHKMNPRSTX')}{rng.choice('ABCDEFGHKMNPRSTX')}-{rng.randint(100, 9999)}"
        qty = rng.randint(1, 12)
        as_word = rng.random() < 0.3
        city = rng.choice(CITIES)
        tpl = k % len(_ORDER_TEMPLATES)
        text = _ORDER_TEMPLATES[tpl].format(name=name, qty=NUM_WORDS[qty] if as_word else qty,
                                            code=code, city=city)
        fields = {"name": name, "product_code": code, "quantity": qty, "city": city}
        out.append(make_item(
            "structured_output", "generated", f"seed{rng_seed(rng)}", f"{k:04d}",
            kind="generate", context=text,
            question="Extract the customer name, product code, quantity and city from the "
                     "message above.",
            instruction='Reply with only a JSON object with the keys "name", "product_code", '
                        '"quantity" (an integer) and "city".',
            gold=[], scorer="json_fields", params={"fields": fields},
            meta={"template": tpl, "quantity_as_word": as_word}))
    rng.shuffle(out)
    return out


LC_LENGTHS = (250, 500, 1000, 1400)  # target haystack size in tokens (~4 chars/token)
LC_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)  # needle position as a fraction of the haystack
CHARS_PER_TOKEN = 4.0  # rough English BPE rate; the true count is measured per model


def _cut_at_sentence(text: str, pos: int) -> int:
    """Index just after the sentence end (". ") nearest to ``pos``."""
    left, right = text.rfind(". ", 0, pos), text.find(". ", pos)
    cands = [i + 2 for i in (left, right) if i >= 0]
    return min(cands, key=lambda i: abs(i - pos)) if cands else pos


def build_long_context(rng: random.Random, essays: str, n: int = 300) -> list[dict]:
    """
    Needle in a haystack over the Paul Graham essays.

    Each item takes a window of about ``length`` tokens starting at a seeded sentence
    boundary, inserts "The special magic number for <city> is <7 digits>." at the sentence
    boundary nearest to ``depth``, and asks for the number. Lengths x depths are balanced
    (:data:`LC_LENGTHS` x :data:`LC_DEPTHS`); the full haystack is stored in the item so
    rendering needs no essay file. ``meta`` records offset, characters, length and depth.
    """
    cells = [(ln, d) for ln in LC_LENGTHS for d in LC_DEPTHS]
    out = []
    for k in range(n):
        length, depth = cells[k % len(cells)]
        n_chars = int(length * CHARS_PER_TOKEN)
        start = _cut_at_sentence(essays, rng.randrange(0, len(essays) - 2 * n_chars))
        end = _cut_at_sentence(essays, start + n_chars)
        hay = " ".join(essays[start:end].split())
        city, number = rng.choice(CITIES), str(rng.randint(1_000_000, 9_999_999))
        needle = f"The special magic number for {city} is {number}."
        cut = 0 if depth == 0 else len(hay) if depth == 1 else _cut_at_sentence(
            hay, int(depth * len(hay)))
        text = (hay[:cut].rstrip() + " " + needle + " " + hay[cut:].lstrip()).strip()
        out.append(make_item(
            "long_context", "paul_graham_essays", f"seed{rng_seed(rng)}", f"{k:04d}",
            kind="generate", context=text,
            question=f"What is the special magic number for {city} mentioned in the text "
                     "above?", instruction="Answer with the number only.",
            gold=[number], scorer="contains",
            meta={"target_tokens": length, "depth": depth, "essay_offset": start,
                  "n_chars": len(text), "needle": needle}))
    rng.shuffle(out)
    return out


__all__ = ["build_arithmetic", "build_string_ops", "build_structured_output",
           "build_long_context", "seeded", "LC_LENGTHS", "LC_DEPTHS"]
