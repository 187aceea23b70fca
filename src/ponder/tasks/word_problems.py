"""Grade-school word problems with whole-number answers, drawn from templates.

A deterministic generator of GSM8K-style problems that ponder writes itself (so it can ship them
under its own license): shopping totals, sharing equally, rates and time, ages, money left after
spending, and multi-step problems of two to four operations. Names, items and numbers are drawn
from a seeded random stream; every intermediate value and the answer is a non-negative integer.

Each record (one JSONL line, the GSM8K layout, so ``ponder eval --answer-format gsm8k`` reads it)::

    {"id": "wp-test-000", "question": "...", "answer": "<worked solution>\\n#### 27",
     "final_answer": 27, "level": 2, "template": "shopping_total",
     "formula": "n * price + extra", "values": {"n": 4, "price": 3, "extra": 15}}

- ``answer``: the worked solution, one sentence per operation, each with its equation written out
  (``4 * 3 = 12``), ending in ``#### N``;
- ``level``: the difficulty, the number of arithmetic operations the solution makes (1-4);
- ``formula`` over ``values``: the template's structured numbers, from which the answer can be
  recomputed independently of the solution text.

Splits never overlap: a problem belongs to the split chosen by a hash of its question text (as the
built-in arithmetic task's do). Within a split, problems are unique and cycle through the templates
in a fixed order, so the first ``k`` of a split are the same whatever ``n`` is asked for, and a
short prefix (``--limit``) still mixes templates. ``src/ponder/tasks/data/word_problems.jsonl`` is
``make_split("test", 64, seed=0)``; rebuild it with::

    python -m ponder.tasks.word_problems --out src/ponder/tasks/data/word_problems.jsonl --n 64 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError

SPLITS = ("train", "dev", "test")
# Share of the hash space given to each split (train, dev, test), as in ponder.tasks.arithmetic.
_SPLIT_BUCKETS = {"train": range(0, 80), "dev": range(80, 90), "test": range(90, 100)}
DATA_FILE = Path(__file__).parent / "data" / "word_problems.jsonl"
SHIPPED_N = 64  # four problems of each of the 16 templates
SHIPPED_SEED = 0
SHIPPED_SPLIT = "test"
# Draws per problem before giving up: far more than a split's hash share and rare repeats need.
_MAX_TRIES = 10_000


@dataclass(frozen=True)
class WordProblem:
    """One problem: its text, worked solution, answer and the structured values behind them."""

    id: str
    question: str
    solution: str  # one sentence per operation, then "#### N"
    answer: int
    level: int  # the number of arithmetic operations the solution makes
    template: str
    formula: str  # an expression over ``values`` that equals ``answer``
    values: dict[str, int]

    def to_record(self) -> dict[str, Any]:
        """The JSONL record (GSM8K layout: ``answer`` is the solution ending in ``#### N``)."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.solution,
            "final_answer": self.answer,
            "level": self.level,
            "template": self.template,
            "formula": self.formula,
            "values": self.values,
        }


# --- vocabulary -------------------------------------------------------------------------------------

# (name, subject pronoun, possessive)
PEOPLE = (
    ("Maria", "she", "her"),
    ("James", "he", "his"),
    ("Aisha", "she", "her"),
    ("Diego", "he", "his"),
    ("Mei", "she", "her"),
    ("Tom", "he", "his"),
    ("Priya", "she", "her"),
    ("Lucas", "he", "his"),
    ("Fatima", "she", "her"),
    ("Noah", "he", "his"),
    ("Olivia", "she", "her"),
    ("Kenji", "he", "his"),
    ("Sofia", "she", "her"),
    ("Omar", "he", "his"),
    ("Emma", "she", "her"),
    ("Ivan", "he", "his"),
    ("Grace", "she", "her"),
    ("Samuel", "he", "his"),
    ("Lena", "she", "her"),
    ("Ravi", "he", "his"),
    ("Chloe", "she", "her"),
    ("Mateo", "he", "his"),
    ("Hannah", "she", "her"),
    ("Kwame", "he", "his"),
)
# (plural item, lowest price, highest price) in whole dollars
CHEAP_ITEMS = (
    ("notebooks", 2, 6),
    ("pencils", 1, 3),
    ("apples", 1, 2),
    ("stickers", 1, 2),
    ("muffins", 2, 4),
    ("comic books", 3, 8),
    ("bottles of juice", 2, 5),
    ("packs of gum", 1, 3),
    ("tennis balls", 2, 5),
    ("candles", 3, 7),
)
BIG_ITEMS = (
    ("backpack", 15, 40),
    ("lamp", 12, 30),
    ("board game", 18, 45),
    ("pair of shoes", 25, 60),
    ("watch", 20, 50),
    ("jacket", 30, 70),
)
SAVINGS_GOALS = ("bicycle", "guitar", "video game console", "telescope", "skateboard", "tablet")
SHARED_THINGS = ("marbles", "stickers", "cookies", "crayons", "grapes", "trading cards", "seashells")
BOXED_THINGS = (
    ("crayons", "box"),
    ("pencils", "pack"),
    ("eggs", "carton"),
    ("markers", "set"),
    ("cupcakes", "tray"),
    ("balloons", "bag"),
)
VEHICLES = (("train", 40, 90), ("car", 30, 70), ("bus", 25, 55), ("cyclist", 8, 18), ("boat", 10, 30))
PLANTS = ("tomato plants", "sunflowers", "carrots", "rose bushes", "pepper plants", "tulips")
BAKED = ("cookies", "muffins", "brownies", "cupcakes", "pretzels")
FRUIT = ("apples", "oranges", "peaches", "pears", "lemons", "plums")
GROUPS = ("students", "campers", "club members", "players", "guests")
PETS = (("chickens", 2), ("ducks", 2), ("cows", 4), ("goats", 4), ("sheep", 4), ("pigs", 4))


# --- building a solution ----------------------------------------------------------------------------


@dataclass
class _Work:
    """The worked solution as it is written: one sentence per operation, each checked."""

    sentences: list[str] = field(default_factory=list)
    ops: int = 0

    def op(self, a: int, sym: str, b: int) -> tuple[int, str]:
        """``a sym b`` (exact, non-negative, whole), and its equation text ``"a sym b = r"``."""
        if sym == "+":
            r = Fraction(a + b)
        elif sym == "-":
            r = Fraction(a - b)
        elif sym == "*":
            r = Fraction(a * b)
        elif sym == "/":
            r = Fraction(a, b)
        else:
            raise ValueError(f"unknown operation {sym!r}")
        if r.denominator != 1 or r < 0:
            raise AssertionError(f"{a} {sym} {b} is not a whole non-negative number")
        self.ops += 1
        return int(r), f"{a} {sym} {b} = {int(r)}"

    def say(self, sentence: str) -> None:
        self.sentences.append(sentence)


@dataclass(frozen=True)
class _Draft:
    question: str
    work: _Work
    answer: int
    values: dict[str, int]


def _person(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(PEOPLE)


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    a, b = rng.sample(PEOPLE, 2)
    return a, b


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- templates ---------------------------------------------------------------------------------------
# Each takes the random stream and returns a draft; TEMPLATES pairs it with its formula.


def _rate_distance(rng: random.Random) -> _Draft:
    vehicle, lo, hi = rng.choice(VEHICLES)
    speed, hours = rng.randint(lo, hi), rng.randint(2, 9)
    w = _Work()
    d, eq = w.op(speed, "*", hours)
    w.say(f"In {hours} hours the {vehicle} travels {eq} miles.")
    q = f"A {vehicle} travels at {speed} miles per hour. How many miles does it travel in {hours} hours?"
    return _Draft(q, w, d, {"speed": speed, "hours": hours})


def _share_equally(rng: random.Random) -> _Draft:
    name, _, _ = _person(rng)
    things = rng.choice(SHARED_THINGS)
    friends, each = rng.randint(3, 9), rng.randint(4, 15)
    total = friends * each
    w = _Work()
    r, eq = w.op(total, "/", friends)
    w.say(f"Each friend gets {eq} {things}.")
    q = (
        f"{name} has {total} {things} and shares them equally among {friends} friends. "
        f"How many {things} does each friend get?"
    )
    return _Draft(q, w, r, {"total": total, "friends": friends})


def _shopping_total(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    items, lo, hi = rng.choice(CHEAP_ITEMS)
    big, blo, bhi = rng.choice(BIG_ITEMS)
    n, price, extra = rng.randint(2, 9), rng.randint(lo, hi), rng.randint(blo, bhi)
    w = _Work()
    cost, eq = w.op(n, "*", price)
    w.say(f"The {items} cost {eq} dollars.")
    total, eq = w.op(cost, "+", extra)
    w.say(f"Adding the {big}, {she} spends {eq} dollars in total.")
    q = (
        f"{name} buys {n} {items} for ${price} each and a {big} for ${extra}. "
        f"How much money does {she} spend in total?"
    )
    return _Draft(q, w, total, {"n": n, "price": price, "extra": extra})


def _money_left(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    (a_item, _, _), (b_item, _, _) = rng.sample(BIG_ITEMS, 2)
    a, b = rng.randint(10, 45), rng.randint(10, 45)
    start = a + b + rng.randint(5, 60)
    w = _Work()
    spent, eq = w.op(a, "+", b)
    w.say(f"{_cap(she)} spends {eq} dollars.")
    left, eq = w.op(start, "-", spent)
    w.say(f"{_cap(she)} has {eq} dollars left.")
    q = (
        f"{name} had ${start}. {_cap(she)} spent ${a} on a {a_item} and ${b} on a {b_item}. "
        f"How much money does {she} have left?"
    )
    return _Draft(q, w, left, {"start": start, "a": a, "b": b})


def _change(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    items, lo, hi = rng.choice(CHEAP_ITEMS)
    n, price = rng.randint(2, 8), rng.randint(lo, hi)
    bill = next(b for b in (10, 20, 50, 100) if b >= n * price)
    w = _Work()
    cost, eq = w.op(n, "*", price)
    w.say(f"The {items} cost {eq} dollars.")
    change, eq = w.op(bill, "-", cost)
    w.say(f"{_cap(she)} gets {eq} dollars in change.")
    q = (
        f"{name} buys {n} {items} that cost ${price} each. {_cap(she)} pays with a ${bill} bill. "
        f"How much change does {she} get?"
    )
    return _Draft(q, w, change, {"bill": bill, "n": n, "price": price})


def _ages(rng: random.Random) -> _Draft:
    (a_name, _, _), (b_name, _, _) = _two_people(rng)
    age, times, years = rng.randint(3, 12), rng.randint(2, 4), rng.randint(2, 10)
    w = _Work()
    now, eq = w.op(age, "*", times)
    w.say(f"{b_name} is {eq} years old now.")
    later, eq = w.op(now, "+", years)
    w.say(f"In {years} years, {b_name} will be {eq} years old.")
    q = (
        f"{a_name} is {age} years old. {b_name} is {times} times as old as {a_name}. "
        f"How old will {b_name} be in {years} years?"
    )
    return _Draft(q, w, later, {"age": age, "times": times, "years": years})


def _boxes_given_away(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    things, box = rng.choice(BOXED_THINGS)
    boxes, per = rng.randint(3, 9), rng.randint(6, 24)
    given = rng.randint(2, boxes * per - 1)
    w = _Work()
    total, eq = w.op(boxes, "*", per)
    w.say(f"{_cap(she)} has {eq} {things}.")
    left, eq = w.op(total, "-", given)
    w.say(f"After giving some away, {she} has {eq} {things} left.")
    q = (
        f"{name} buys {boxes} {box}s of {things}. Each {box} has {per} {things}. "
        f"{_cap(she)} gives {given} {things} to friends. How many {things} does {she} have left?"
    )
    return _Draft(q, w, left, {"boxes": boxes, "per": per, "given": given})


def _savings_weeks(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    goal = rng.choice(SAVINGS_GOALS)
    weekly, weeks, has = rng.randint(5, 25), rng.randint(3, 12), rng.randint(10, 80)
    price = has + weekly * weeks
    w = _Work()
    need, eq = w.op(price, "-", has)
    w.say(f"{_cap(she)} still needs {eq} dollars.")
    r, eq = w.op(need, "/", weekly)
    w.say(f"Saving {weekly} dollars a week, that takes {eq} weeks.")
    q = (
        f"{name} wants a {goal} that costs ${price}. {_cap(she)} has already saved ${has} and saves "
        f"${weekly} more every week. How many weeks will it take {name} to have enough money?"
    )
    return _Draft(q, w, r, {"price": price, "has": has, "weekly": weekly})


def _fraction_rest(rng: random.Random) -> _Draft:
    group = rng.choice(GROUPS)
    denom = rng.choice((2, 3, 4, 5))
    total = denom * rng.randint(4, 15)
    words = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
    w = _Work()
    walk, eq = w.op(total, "/", denom)
    w.say(f"{_cap(words[denom])} of the {total} {group} walk: {eq}.")
    bus, eq = w.op(total, "-", walk)
    w.say(f"The rest, {eq}, take the bus.")
    q = (
        f"There are {total} {group} going to the park. {_cap(words[denom])} of them walk and the rest "
        f"take the bus. How many {group} take the bus?"
    )
    return _Draft(q, w, bus, {"total": total, "denom": denom})


def _pick_together(rng: random.Random) -> _Draft:
    (a_name, _, _), (b_name, _, _) = _two_people(rng)
    fruit = rng.choice(FRUIT)
    a, b, hours = rng.randint(5, 30), rng.randint(5, 30), rng.randint(2, 8)
    w = _Work()
    rate, eq = w.op(a, "+", b)
    w.say(f"Together they pick {eq} {fruit} per hour.")
    total, eq = w.op(rate, "*", hours)
    w.say(f"In {hours} hours they pick {eq} {fruit}.")
    q = (
        f"{a_name} picks {a} {fruit} per hour and {b_name} picks {b} {fruit} per hour. "
        f"If they both pick for {hours} hours, how many {fruit} do they pick altogether?"
    )
    return _Draft(q, w, total, {"a": a, "b": b, "hours": hours})


def _reading_week(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    weekday, weekend = rng.randint(5, 30), rng.randint(10, 50)
    w = _Work()
    wd, eq = w.op(5, "*", weekday)
    w.say(f"On the 5 weekdays {she} reads {eq} pages.")
    we, eq = w.op(2, "*", weekend)
    w.say(f"On the 2 weekend days {she} reads {eq} pages.")
    total, eq = w.op(wd, "+", we)
    w.say(f"In one week {she} reads {eq} pages.")
    q = (
        f"{name} reads {weekday} pages every weekday and {weekend} pages on each day of the weekend. "
        f"How many pages does {she} read in one week?"
    )
    return _Draft(q, w, total, {"weekday": weekday, "weekend": weekend})


def _farm_legs(rng: random.Random) -> _Draft:
    name, _, _ = _person(rng)
    (a_kind, a_legs), (b_kind, b_legs) = rng.sample(PETS, 2)
    a, b = rng.randint(3, 20), rng.randint(3, 20)
    w = _Work()
    la, eq = w.op(a, "*", a_legs)
    w.say(f"The {a_kind} have {eq} legs.")
    lb, eq = w.op(b, "*", b_legs)
    w.say(f"The {b_kind} have {eq} legs.")
    total, eq = w.op(la, "+", lb)
    w.say(f"Altogether there are {eq} legs.")
    q = f"{name}'s farm has {a} {a_kind} and {b} {b_kind}. How many legs do the animals have altogether?"
    values = {"a": a, "a_legs": a_legs, "b": b, "b_legs": b_legs}
    return _Draft(q, w, total, values)


def _bake_sale(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    baked = rng.choice(BAKED)
    batches, per, price = rng.randint(2, 6), rng.randint(8, 24), rng.randint(2, 4)
    eaten = rng.randint(1, 6)
    w = _Work()
    made, eq = w.op(batches, "*", per)
    w.say(f"{_cap(she)} bakes {eq} {baked}.")
    sold, eq = w.op(made, "-", eaten)
    w.say(f"{_cap(she)} sells {eq} {baked}.")
    money, eq = w.op(sold, "*", price)
    w.say(f"{_cap(she)} makes {eq} dollars.")
    q = (
        f"{name} bakes {batches} batches of {baked} with {per} {baked} in each batch. {_cap(she)} eats "
        f"{eaten} of them and sells the rest for ${price} each. How many dollars does {she} make?"
    )
    return _Draft(q, w, money, {"batches": batches, "per": per, "eaten": eaten, "price": price})


def _garden_rows(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    plant = rng.choice(PLANTS)
    rows, per, beds = rng.randint(3, 9), rng.randint(4, 12), rng.randint(2, 4)
    failed = rng.randint(1, rows * per * beds // 4)
    w = _Work()
    per_bed, eq = w.op(rows, "*", per)
    w.say(f"Each bed has {eq} {plant}.")
    total, eq = w.op(per_bed, "*", beds)
    w.say(f"The {beds} beds have {eq} {plant}.")
    grew, eq = w.op(total, "-", failed)
    w.say(f"So {eq} {plant} grow.")
    q = (
        f"{name} has {beds} garden beds. In each bed {she} plants {rows} rows of {plant} with {per} in "
        f"each row. {failed} of them do not grow. How many {plant} grow?"
    )
    return _Draft(q, w, grew, {"beds": beds, "rows": rows, "per": per, "failed": failed})


def _coupon_shopping(rng: random.Random) -> _Draft:
    name, she, _ = _person(rng)
    (a_items, alo, ahi), (b_items, blo, bhi) = rng.sample(CHEAP_ITEMS, 2)
    a, pa, b, pb = rng.randint(2, 6), rng.randint(alo, ahi), rng.randint(2, 6), rng.randint(blo, bhi)
    coupon = rng.randint(1, max(1, (a * pa + b * pb) // 3))
    w = _Work()
    ca, eq = w.op(a, "*", pa)
    w.say(f"The {a_items} cost {eq} dollars.")
    cb, eq = w.op(b, "*", pb)
    w.say(f"The {b_items} cost {eq} dollars.")
    both, eq = w.op(ca, "+", cb)
    w.say(f"Together they cost {eq} dollars.")
    pay, eq = w.op(both, "-", coupon)
    w.say(f"With the coupon {she} pays {eq} dollars.")
    q = (
        f"{name} buys {a} {a_items} at ${pa} each and {b} {b_items} at ${pb} each. {_cap(she)} has a "
        f"coupon for ${coupon} off the total. How much does {she} pay?"
    )
    return _Draft(q, w, pay, {"a": a, "pa": pa, "b": b, "pb": pb, "coupon": coupon})


def _pooled_split(rng: random.Random) -> _Draft:
    (a_name, _, _), (b_name, _, _) = _two_people(rng)
    people = rng.randint(2, 6)
    each = rng.randint(6, 30)
    total = people * each
    a = rng.randint(total // 4, total - total // 4)
    b = total - a
    w = _Work()
    pooled, eq = w.op(a, "+", b)
    w.say(f"Together they have {eq} dollars.")
    share, eq = w.op(pooled, "/", people)
    w.say(f"Split {people} ways, each person gets {eq} dollars.")
    q = (
        f"{a_name} has ${a} and {b_name} has ${b}. They put their money together and split it equally "
        f"among {people} people. How many dollars does each person get?"
    )
    return _Draft(q, w, share, {"a": a, "b": b, "people": people})


# name -> (draw, formula over the draft's values); the order is the order problems cycle through.
TEMPLATES: dict[str, tuple[Callable[[random.Random], _Draft], str]] = {
    "shopping_total": (_shopping_total, "n * price + extra"),
    "share_equally": (_share_equally, "total / friends"),
    "money_left": (_money_left, "start - (a + b)"),
    "rate_distance": (_rate_distance, "speed * hours"),
    "ages": (_ages, "age * times + years"),
    "bake_sale": (_bake_sale, "(batches * per - eaten) * price"),
    "change": (_change, "bill - n * price"),
    "reading_week": (_reading_week, "5 * weekday + 2 * weekend"),
    "boxes_given_away": (_boxes_given_away, "boxes * per - given"),
    "savings_weeks": (_savings_weeks, "(price - has) / weekly"),
    "coupon_shopping": (_coupon_shopping, "a * pa + b * pb - coupon"),
    "fraction_rest": (_fraction_rest, "total - total / denom"),
    "pick_together": (_pick_together, "(a + b) * hours"),
    "farm_legs": (_farm_legs, "a * a_legs + b * b_legs"),
    "garden_rows": (_garden_rows, "rows * per * beds - failed"),
    "pooled_split": (_pooled_split, "(a + b) / people"),
}


# --- splits -----------------------------------------------------------------------------------------


def _question_hash(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()


def split_of(question: str) -> str:
    """The split a question belongs to, by a hash of its text."""
    bucket = int(_question_hash(question)[:8], 16) % 100
    return next(s for s, r in _SPLIT_BUCKETS.items() if bucket in r)


def make_split(
    split: str = "test", n: int = SHIPPED_N, seed: int = 0, templates: list[str] | None = None
) -> list[WordProblem]:
    """``n`` distinct problems of ``split``, cycling through ``templates`` (default: all, in order).

    Deterministic in (split, seed, templates); the first ``k`` problems do not depend on ``n``."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of {list(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive whole number, got {n!r}")
    names = list(TEMPLATES) if templates is None else list(templates)
    if not names:
        raise ConfigError(f"templates is empty: choose from {list(TEMPLATES)}")
    unknown = [t for t in names if t not in TEMPLATES]
    if unknown:
        raise ConfigError(f"unknown template(s) {unknown}: choose from {list(TEMPLATES)}")
    # One stream per template, so adding a template later leaves the others' draws unchanged.
    streams = {t: random.Random(f"word_problems/{split}/{seed}/{t}") for t in names}
    seen: set[str] = set()
    out: list[WordProblem] = []
    for i in range(n):
        name = names[i % len(names)]
        draw, formula = TEMPLATES[name]
        for _ in range(_MAX_TRIES):
            draft = draw(streams[name])
            if draft.question not in seen and split_of(draft.question) == split:
                break
        else:
            raise ConfigError(
                f"template {name!r} ran out of distinct {split} problems after {i} problems: ask for fewer"
            )
        seen.add(draft.question)
        solution = "\n".join([*draft.work.sentences, f"#### {draft.answer}"])
        out.append(
            WordProblem(
                id=f"wp-{split}-{i:03d}",
                question=draft.question,
                solution=solution,
                answer=draft.answer,
                level=draft.work.ops,
                template=name,
                formula=formula,
                values=dict(draft.values),
            )
        )
    return out


def to_jsonl(problems: list[WordProblem]) -> str:
    """The problems as JSONL text, one record per line (keys in a fixed order)."""
    return "".join(json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in problems)


def write_jsonl(
    path: str | Path, n: int = SHIPPED_N, seed: int = SHIPPED_SEED, split: str = SHIPPED_SPLIT
) -> Path:
    """Write ``make_split(split, n, seed)`` to ``path`` as JSONL; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_jsonl(make_split(split, n, seed)), encoding="utf-8")
    return out


def data_path() -> Path:
    """The shipped problem file (``make_split("test", 64, seed=0)``), for ``ponder eval --dataset``."""
    return DATA_FILE


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write grade-school word problems as JSONL (GSM8K layout).")
    p.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    p.add_argument("--n", type=int, default=SHIPPED_N, help="how many problems")
    p.add_argument("--seed", type=int, default=SHIPPED_SEED)
    p.add_argument("--split", choices=SPLITS, default=SHIPPED_SPLIT)
    args = p.parse_args(argv)
    path = write_jsonl(args.out, args.n, args.seed, args.split)
    print(f"wrote {args.n} problems to {path}")


if __name__ == "__main__":
    main()
