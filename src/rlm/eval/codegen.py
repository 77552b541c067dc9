"""The ``code`` family: a generated multi-file Python repository and one multiple-choice
question about it (what ``run()`` in ``repo/main.py`` returns), like the paper's CodeQA.

The answer needs a chain of calls followed across several modules (3 to 6 hops); every other
module is made of functions of the same shape that call each other, so the chain cannot be
found by looking for something unusual. The repository is real Python: the tests import it
and call ``run()`` to check the gold answer. Files are separated by ``===== path =====``
lines.
"""

from __future__ import annotations

import random

from rlm.eval.families import task_rng
from rlm.eval.tasks import CHARS_PER_TOKEN, Scorer, Task, format_length

__all__ = ["FILE_MARK", "LETTERS", "code"]

#: The line that starts a file in the context: ``===== repo/m3.py =====``.
FILE_MARK = "===== {} ====="

LETTERS = "ABCD"

_VERBS = ("scale", "shift", "blend", "fold", "mix", "tune", "warp", "trim", "pack", "spin")


def _expr(rng: random.Random, inner: str) -> tuple[str, int, int]:
    """An affine expression of ``inner`` (``(inner) * 3 + 4``): its text, factor, offset."""
    factor = rng.choice((1, 2, 3))
    offset = rng.randint(-9, 9)
    text = inner if factor == 1 else f"{inner} * {factor}"
    if offset:
        text += f" {'+' if offset > 0 else '-'} {abs(offset)}"
    return text, factor, offset


class _Repo:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.modules: dict[int, list[str]] = {}
        self.imports: dict[int, set[str]] = {}
        self.count = 0

    def name(self, module: int) -> str:
        self.count += 1
        return f"{self.rng.choice(_VERBS)}_{module}_{self.count}"

    def call(self, module: int, target: tuple[int, str]) -> str:
        """How a function of ``module`` calls ``target`` (module-qualified across files, so
        modules may import each other in cycles)."""
        return f"{target[1]}(x)" if target[0] == module else f"m{target[0]}.{target[1]}(x)"

    def add(
        self, module: int, func: str, body: str, doc: str, calls: tuple[int, str] | None
    ) -> int:
        """Add a function; returns about how many characters the context grew by."""
        grown = 0
        if module not in self.modules:
            self.modules[module], self.imports[module] = [], set()
            grown += len(FILE_MARK.format(f"repo/m{module}.py")) + 5
        if calls is not None and calls[0] != module:
            line = f"from repo import m{calls[0]}"
            if line not in self.imports[module]:
                self.imports[module].add(line)
                grown += len(line) + 1
        text = f'def {func}(x):\n    """{doc}"""\n    return {body}\n'
        self.modules[module].append(text)
        return grown + len(text) + 2

    def source(self, module: int) -> str:
        head = "\n".join(sorted(self.imports[module]))
        return (head + "\n\n\n" if head else "") + "\n\n".join(self.modules[module])


def code(seed: int, tokens: int, index: int) -> Task:
    """One repository of about ``tokens`` tokens and its multiple-choice question."""
    rng = task_rng("code", seed, tokens, index)
    budget = tokens * CHARS_PER_TOKEN
    n_modules = max(4, min(2000, budget // 2500))
    repo = _Repo(rng)
    # The chain: main.run -> f1 (module a) -> f2 (module b) -> ... -> a leaf returning x + c.
    hops = rng.randint(3, 6)
    chain_modules = [rng.randrange(n_modules) for _ in range(hops)]
    start = rng.randint(1, 9)
    names = [repo.name(m) for m in chain_modules]
    leaf_offset = rng.randint(1, 20)
    value = start
    steps: list[tuple[int, int]] = []
    for hop in range(hops):
        module, func = chain_modules[hop], names[hop]
        if hop + 1 < hops:
            target = (chain_modules[hop + 1], names[hop + 1])
            body, factor, offset = _expr(rng, repo.call(module, target))
            repo.add(module, func, body, "Combine the next stage.", target)
            steps.append((factor, offset))
        else:
            repo.add(module, func, f"x + {leaf_offset}", "The last stage.", None)
    value = start + leaf_offset
    for factor, offset in reversed(steps):
        value = value * factor + offset
    # Other functions of the same shape, until the text reaches the budget.
    size = 200 + sum(len(s) + 40 for s in (repo.source(m) for m in repo.modules))
    leaves: list[tuple[int, str]] = []
    while size < budget - 160:
        module = rng.randrange(n_modules)
        func = repo.name(module)
        if leaves and rng.random() < 0.7:
            target = rng.choice(leaves)
            body, _, _ = _expr(rng, repo.call(module, target))
            size += repo.add(module, func, body, "Combine the next stage.", target)
        else:
            size += repo.add(module, func, f"x + {rng.randint(1, 20)}", "The last stage.", None)
        leaves.append((module, func))
    choices = {value}
    while len(choices) < 4:
        choices.add(value + rng.choice((-1, 1)) * rng.randint(1, 12))
    options = sorted(choices)
    rng.shuffle(options)
    gold = LETTERS[options.index(value)]
    main = (
        f"from repo import m{chain_modules[0]}\n\n\n"
        f'def run():\n    """The entry point."""\n    return m{chain_modules[0]}.{names[0]}({start})\n'
    )
    files = [(FILE_MARK.format("repo/__init__.py"), ""), (FILE_MARK.format("repo/main.py"), main)]
    for module in sorted(repo.modules):
        files.append((FILE_MARK.format(f"repo/m{module}.py"), repo.source(module)))
    context = "\n".join(f"{mark}\n{text}" for mark, text in files)
    listed = "\n".join(
        f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True)
    )
    return Task(
        id=f"code-{format_length(tokens)}-s{seed}-{index}",
        family="code",
        length=format_length(tokens),
        tokens=tokens,
        context=context,
        question="The context is a Python repository (each file starts with a "
        "'===== path =====' line). What does run() in repo/main.py return?\n"
        f"{listed}\nAnswer with the letter only.",
        gold=gold,
        scorer=Scorer.CHOICE,
        kind="call_chain",
    )
