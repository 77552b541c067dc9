"""The generated families: deterministic byte for byte, the right length, and gold answers
that an independent computation over the context text agrees with."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rlm.errors import ConfigError
from rlm.eval.codegen import code
from rlm.eval.families import aggregate, niah, pairs
from rlm.eval.specs import BUILTIN, build_specs
from rlm.eval.tasks import Task, format_length, parse_length, parse_lengths

# The categories written out again here (not imported), so a wrong table in the generator
# would make the independent answers disagree.
THINGS = {
    "animal": "heron otter badger lynx falcon beaver moose tortoise gecko walrus ferret jackal",
    "fruit": "mango apricot plum papaya cherry lychee guava quince fig melon kiwi lime",
    "vehicle": "tram scooter ferry tractor canoe minivan glider sled yacht bulldozer taxi rickshaw",
    "instrument": "violin oboe banjo cello harp tuba flute ukulele drum trumpet accordion sitar",
    "tool": "hammer chisel wrench trowel pliers spanner drill ladder shovel rake sander crowbar",
    "weather": "drizzle blizzard hailstorm fog heatwave thunderstorm gale frost monsoon sleet "
    "tornado downpour",
}
CATEGORY_OF = {word: label for label, words in THINGS.items() for word in words.split()}
RECORD = re.compile(r"Date: (\d{4}-\d\d-\d\d) \|\| User: (\d+) \|\| Instance: (.+)")


def _records(task: Task) -> list[tuple[str, str]]:
    """(user, category) of every record line, the category found from the words."""
    out = []
    for line in task.context.splitlines()[1:]:
        match = RECORD.fullmatch(line)
        assert match, line
        words = [w for w in re.findall(r"[a-z]+", match.group(3)) if w in CATEGORY_OF]
        assert len(words) == 1, line
        out.append((match.group(2), CATEGORY_OF[words[0]]))
    return out


def test_same_seed_same_task_byte_for_byte_other_seed_differs() -> None:
    here = {}
    for family, make in BUILTIN.items():
        first = make(3, 2048, 1)
        assert first.model_dump_json() == make(3, 2048, 1).model_dump_json()
        assert make(4, 2048, 1).context != first.context
        assert make(3, 2048, 2).context != first.context
        here[family] = first.model_dump_json()
    # in another process too (no dependence on hash randomisation or import order)
    script = (
        "import json; from rlm.eval.specs import BUILTIN; "
        "print(json.dumps({f: m(3, 2048, 1).model_dump_json() for f, m in BUILTIN.items()}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert json.loads(other.stdout) == here


@pytest.mark.parametrize("family", list(BUILTIN))
@pytest.mark.parametrize("tokens", [1024, 16384])
def test_context_fills_the_length_in_chars_over_4(family: str, tokens: int) -> None:
    task = BUILTIN[family](0, tokens, 0)
    assert 0.85 * tokens * 4 <= len(task.context) <= tokens * 4
    assert (task.tokens, task.length) == (tokens, format_length(tokens))


@pytest.mark.parametrize(("seed", "index"), list(itertools.product(range(3), range(4))))
def test_niah_gold_is_the_one_needle(seed: int, index: int) -> None:
    task = niah(seed, 4096, index)
    key = re.search(r"number for (\S+) mentioned", task.question)
    assert key
    found = re.findall(
        rf"The special magic number for {re.escape(key.group(1))} is (\d+)\.", task.context
    )
    assert found == [task.gold]
    assert task.context.count(key.group(1)) == 1


def test_aggregate_gold_matches_an_independent_count() -> None:
    kinds = Counter()
    for seed, index in itertools.product(range(4), range(8)):
        task = aggregate(seed, 4096, index)
        kinds[task.kind] += 1
        records = _records(task)
        counts = Counter(label for _, label in records)
        q = task.question
        if task.kind == "count":
            label = re.search(r"category '(\w+)'", q).group(1)  # type: ignore[union-attr]
            assert task.gold == str(counts[label])
        elif task.kind == "most_common":
            (top, n), (_, runner_up) = counts.most_common(2)
            assert n > runner_up and task.gold == top
        elif task.kind == "compare":
            a, b = re.findall(r"category '(\w+)'", q)
            want = {1: "more common than", -1: "less common than", 0: "same frequency as"}
            assert task.gold == want[(counts[a] > counts[b]) - (counts[a] < counts[b])]
        else:
            user = re.search(r"user (\d+)", q).group(1)  # type: ignore[union-attr]
            label = re.search(r"category '(\w+)'", q).group(1)  # type: ignore[union-attr]
            assert task.gold == str(records.count((user, label)))
    assert set(kinds) == {"count", "most_common", "compare", "user_count"}


def test_pairs_gold_matches_an_independent_join() -> None:
    sizes = []
    for seed, index in itertools.product(range(3), range(5)):
        task = pairs(seed, 4096, index)
        first, second = re.findall(r"category '(\w+)'", task.question)
        records = _records(task)
        both = sorted(
            {u for u, lab in records if lab == first} & {u for u, lab in records if lab == second},
            key=int,
        )
        want = [f"{a},{b}" for a, b in itertools.combinations(both, 2)]
        assert task.gold == want
        sizes.append(len(want))
    assert min(sizes) >= 1  # at least two users have both categories


@pytest.mark.parametrize(("seed", "index"), [(0, 0), (1, 1), (2, 3)])
def test_code_gold_is_what_the_repository_really_returns(
    seed: int, index: int, tmp_path: Path
) -> None:
    task = code(seed, 8192, index)
    parts = re.split(r"^===== (\S+) =====\n", task.context, flags=re.M)
    assert parts[0] == ""
    for path, text in zip(parts[1::2], parts[2::2], strict=True):
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    done = subprocess.run(
        [sys.executable, "-c", "import repo.main; print(repo.main.run())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    options = dict(re.findall(r"^([A-D])\. (-?\d+)$", task.question, flags=re.M))
    assert len(options) == 4 and len(set(options.values())) == 4
    assert options[str(task.gold)] == done.stdout.strip()
    assert len(parts[1::2]) >= 5  # several modules


def test_lengths_and_specs() -> None:
    assert parse_length("8k") == 8192 and parse_length("1M") == 1 << 20
    assert parse_lengths("8k, 64k,8k") == [8192, 65536]
    assert [format_length(t) for t in (8192, 1 << 20, 300)] == ["8k", "1m", "300"]
    for bad in ("", "8x", "-1k", "100", "32m"):
        with pytest.raises(ConfigError):
            parse_lengths(bad)
    specs = build_specs(["niah", "code"], "1k,2k", 2, 5, None)
    assert [s.id for s in specs] == [
        "niah-1k-s5-0",
        "niah-1k-s5-1",
        "niah-2k-s5-0",
        "niah-2k-s5-1",
        "code-1k-s5-0",
        "code-1k-s5-1",
        "code-2k-s5-0",
        "code-2k-s5-1",
    ]
    assert all(s.make().id == s.id for s in specs)
