"""The text families: ``niah`` (RULER-style needle), ``aggregate`` (OOLONG-style counting)
and ``pairs`` (OOLONG-Pairs-style), generated from a seed.

Every task draws from its own ``random.Random`` seeded with a string naming the family,
seed, length and index (string seeds are hashed with SHA-512 by :mod:`random`, not with the
per-process ``hash``), so a task is the same byte for byte in every process and release of
Python 3. Gold answers are computed while the context is built, from the same draws.

``aggregate`` and ``pairs`` contexts are OOLONG-like records::

    Date: 2023-04-17 || User: 48213 || Instance: Has anyone here ever painted a heron?

Each record mentions one thing of one of six categories; the category is never written: as
in OOLONG, the model has to classify each record (semantically) before it can count.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from itertools import combinations

from rlm.eval.tasks import CHARS_PER_TOKEN, Scorer, Task, format_length

__all__ = ["CATEGORIES", "FAMILIES", "TEMPLATES", "aggregate", "niah", "pairs", "task_rng"]

#: The categories of the records and the things that belong to each (no word is in two).
_THINGS = {
    "animal": "heron otter badger lynx falcon beaver moose tortoise gecko walrus ferret jackal",
    "fruit": "mango apricot plum papaya cherry lychee guava quince fig melon kiwi lime",
    "vehicle": "tram scooter ferry tractor canoe minivan glider sled yacht bulldozer taxi rickshaw",
    "instrument": "violin oboe banjo cello harp tuba flute ukulele drum trumpet accordion sitar",
    "tool": "hammer chisel wrench trowel pliers spanner drill ladder shovel rake sander crowbar",
    "weather": "drizzle blizzard hailstorm fog heatwave thunderstorm gale frost monsoon sleet "
    "tornado downpour",
}
CATEGORIES: dict[str, tuple[str, ...]] = {
    label: tuple(words.split()) for label, words in _THINGS.items()
}

#: Sentences a record's instance is made of; ``{}`` is the thing it mentions.
TEMPLATES: tuple[str, ...] = (
    "Has anyone here ever painted a {}?",
    "I keep thinking about the {} I saw last week.",
    "My neighbour would not stop talking about a {} today.",
    "Is it strange that a {} reminds me of my childhood?",
    "We spent the whole afternoon arguing about the {}.",
    "Honestly, the {} was the best part of the trip.",
    "Can someone explain why everyone loves the {} so much?",
    "The documentary about a {} was longer than I expected.",
)

_FILLER_TEXT = (
    "the a of and to in that it was for on are as with his they at be this from have or "
    "by one had not but what all were when we there can an your which their said if do "
    "will each about how up out them then she many some so these would other into has "
    "more her two like him see time could no make than first been its who now people my "
    "made over did down only way find use may water long little very after words called "
    "just where most know get through back much before go good new write our used me man "
    "too any day same right look think also around another came come work three word must "
    "because does part even place well such here take why things help put years different "
    "away again off went old number great tell men say small every found still between "
    "name should home big give air line set own under read last never us left end along "
    "while might next sound below saw something thought both few those always looked show "
    "large often together asked house world going want school important until form food "
    "keep children feet land side without boy once animals life enough took sometimes "
    "four head above kind began almost live page got earth need far hand high year mother "
    "light parts country father let night following picture being study second eyes soon "
    "times story boys since white days ever paper hard near sentence better best across "
    "during today others however sure means knew its try told young miles sun ways thing "
    "whole hear example heard several change answer room sea against top turned learn "
    "point city play toward five using himself usually"
)
_FILLER_WORDS = tuple(_FILLER_TEXT.split())

_KEY_ADJECTIVES = (
    "amber",
    "brisk",
    "cobalt",
    "dusky",
    "ember",
    "frosty",
    "gilded",
    "hollow",
    "ivory",
    "jaunty",
    "keen",
    "lunar",
    "misty",
    "nimble",
    "opal",
    "plucky",
    "quiet",
    "rustic",
    "silver",
    "tawny",
    "umber",
    "vivid",
    "wistful",
    "zesty",
)
_KEY_NOUNS = (
    "anchor",
    "beacon",
    "canyon",
    "dune",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "islet",
    "jetty",
    "knoll",
    "lagoon",
    "meadow",
    "nebula",
    "orchard",
    "prairie",
    "quarry",
    "reef",
    "summit",
    "tundra",
    "valley",
    "willow",
    "yonder",
    "zenith",
)

_START = date(2023, 1, 1)


def task_rng(family: str, seed: int, tokens: int, index: int) -> random.Random:
    """The generator of one task: independent of every other task and of the process."""
    return random.Random(f"rlm-eval:{family}:{seed}:{tokens}:{index}")


def _task_id(family: str, tokens: int, seed: int, index: int) -> str:
    return f"{family}-{format_length(tokens)}-s{seed}-{index}"


def _filler_sentence(rng: random.Random) -> str:
    words = [rng.choice(_FILLER_WORDS) for _ in range(rng.randint(8, 16))]
    return " ".join(words).capitalize() + "."


def niah(seed: int, tokens: int, index: int) -> Task:
    """One needle (a 7-digit number for a two-word key) in filler sentences, at a depth
    drawn uniformly; the filler never holds a key word, so there is exactly one match."""
    rng = task_rng("niah", seed, tokens, index)
    key = f"{rng.choice(_KEY_ADJECTIVES)}-{rng.choice(_KEY_NOUNS)}"
    number = str(rng.randint(1_000_000, 9_999_999))
    needle = f"The special magic number for {key} is {number}."
    budget = tokens * CHARS_PER_TOKEN - len(needle) - 1
    sentences: list[str] = []
    size = 0
    while True:
        sentence = _filler_sentence(rng)
        if size + len(sentence) + 1 > budget:
            break
        sentences.append(sentence)
        size += len(sentence) + 1
    sentences.insert(rng.randint(0, len(sentences)), needle)
    return Task(
        id=_task_id("niah", tokens, seed, index),
        family="niah",
        length=format_length(tokens),
        tokens=tokens,
        context=" ".join(sentences),
        question=f"What is the special magic number for {key} mentioned in the context? "
        "Answer with the number only.",
        gold=number,
        scorer=Scorer.EXACT,
        kind="single_needle",
    )


def _records(
    rng: random.Random, budget: int, users: list[int], labels: list[str]
) -> tuple[list[str], list[tuple[int, str]]]:
    """Record lines filling ``budget`` characters, and (user, category) of each."""
    lines: list[str] = []
    truth: list[tuple[int, str]] = []
    size = 0
    day = _START
    while True:
        user, label = rng.choice(users), rng.choice(labels)
        thing = rng.choice(CATEGORIES[label])
        day += timedelta(days=rng.randint(0, 2))
        line = f"Date: {day.isoformat()} || User: {user} || Instance: " + rng.choice(
            TEMPLATES
        ).format(thing)
        if size + len(line) + 1 > budget:
            return lines, truth
        lines.append(line)
        truth.append((user, label))
        size += len(line) + 1


def _users(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(10_000, 100_000), count)


_HEADER = (
    "The following lines are records, one per line. Each record's instance mentions exactly "
    "one thing, which belongs to exactly one of these categories: "
    + ", ".join(CATEGORIES)
    + ". The category is not written; infer it from the thing mentioned.\n"
)


def aggregate(seed: int, tokens: int, index: int) -> Task:
    """OOLONG-style: count, most common, compare, or count for one user, over records whose
    category must be inferred. Label frequencies are skewed so questions have one answer."""
    rng = task_rng("aggregate", seed, tokens, index)
    labels = list(CATEGORIES)
    approx = max(8, tokens * CHARS_PER_TOKEN // 80)
    users = _users(rng, max(5, min(400, approx // 12)))
    # Skewed label weights: repeat each label 1..6 times in the draw list.
    weighted = [label for label in labels for _ in range(rng.randint(1, 6))]
    lines, truth = _records(rng, tokens * CHARS_PER_TOKEN - len(_HEADER), users, weighted)
    counts = Counter(label for _, label in truth)
    kind = rng.choice(("count", "most_common", "compare", "user_count"))
    top = counts.most_common()
    if kind == "most_common" and (len(top) < 2 or top[0][1] == top[1][1]):
        kind = "count"  # a tie has no single answer
    scorer = Scorer.NUMERIC
    if kind == "count":
        label = rng.choice(labels)
        question = f"How many records mention a thing of the category '{label}'?"
        gold = str(counts[label])
    elif kind == "most_common":
        question = "Which category is mentioned by the most records? Answer with the category."
        gold, scorer = top[0][0], Scorer.EXACT
    elif kind == "compare":
        first, second = rng.sample(labels, 2)
        question = (
            f"Is the category '{first}' more common than, less common than, or the same "
            f"frequency as the category '{second}' among the records? Answer with exactly one "
            "of: more common than, less common than, same frequency as."
        )
        a, b = counts[first], counts[second]
        gold = (
            "more common than" if a > b else "less common than" if a < b else ("same frequency as")
        )
        scorer = Scorer.EXACT
    else:
        user = rng.choice([u for u, _ in truth]) if truth else users[0]
        label = rng.choice(labels)
        question = f"How many records of user {user} mention a thing of the category '{label}'?"
        gold = str(sum(1 for u, lab in truth if u == user and lab == label))
    return Task(
        id=_task_id("aggregate", tokens, seed, index),
        family="aggregate",
        length=format_length(tokens),
        tokens=tokens,
        context=_HEADER + "\n".join(lines),
        question=question + (" Answer with a number only." if scorer is Scorer.NUMERIC else ""),
        gold=gold,
        scorer=scorer,
        kind=kind,
    )


#: At most this many records of the two rare categories in a ``pairs`` task, and by how many
#: characters one record can be longer than another (templates and things differ in length).
_RARE_MAX = 16
_LONGER_BY = max(map(len, TEMPLATES)) - min(map(len, TEMPLATES)) + 12


def pairs(seed: int, tokens: int, index: int) -> Task:
    """OOLONG-Pairs-style: every pair of users who both have a record of category A and a
    record of category B. A and B are rare (a few users each), so the gold set stays a
    readable size at every length while all other records are noise."""
    rng = task_rng("pairs", seed, tokens, index)
    labels = list(CATEGORIES)
    first, second = rng.sample(labels, 2)
    common = [label for label in labels if label not in (first, second)]
    approx = max(8, tokens * CHARS_PER_TOKEN // 80)
    users = _users(rng, max(8, min(400, approx // 12)))
    # The rare records replace others and may be longer: keep room for the difference.
    room = tokens * CHARS_PER_TOKEN - len(_HEADER) - _RARE_MAX * _LONGER_BY
    lines, truth = _records(rng, room, users, common)
    # A few active users get the rare categories, at least two of them both (so the gold
    # set is rarely empty); every other record is noise.
    active = rng.sample(users, min(len(users), rng.randint(4, 8)))
    wanted: list[tuple[int, str]] = []
    for n, user in enumerate(active):
        if n < 2 or rng.random() < 0.5:
            wanted.append((user, first))
        if n < 2 or rng.random() < 0.5:
            wanted.append((user, second))
    wanted = wanted[: min(_RARE_MAX, len(lines) // 2)]
    for position, (user, label) in zip(
        rng.sample(range(len(lines)), len(wanted)), wanted, strict=True
    ):
        day = lines[position].split(" || ", 1)[0]
        thing = rng.choice(CATEGORIES[label])
        lines[position] = f"{day} || User: {user} || Instance: " + rng.choice(TEMPLATES).format(
            thing
        )
        truth[position] = (user, label)
    has_first = {u for u, label in truth if label == first}
    has_second = {u for u, label in truth if label == second}
    both = sorted(has_first & has_second)
    gold = [f"{a},{b}" for a, b in combinations(both, 2)]
    question = (
        f"List every pair of users who both have at least one record of the category "
        f"'{first}' and at least one record of the category '{second}'. Write each pair as "
        "(smaller user id, larger user id), one pair per line, and nothing else; write NONE "
        "if there is no such pair."
    )
    return Task(
        id=_task_id("pairs", tokens, seed, index),
        family="pairs",
        length=format_length(tokens),
        tokens=tokens,
        context=_HEADER + "\n".join(lines),
        question=question,
        gold=gold,
        scorer=Scorer.PAIRS_F1,
        kind="both_categories",
    )


Generator = Callable[[int, int, int], Task]

#: The built-in families by name; :mod:`rlm.eval.codegen` adds ``code``.
FAMILIES: dict[str, Generator] = {"niah": niah, "aggregate": aggregate, "pairs": pairs}
