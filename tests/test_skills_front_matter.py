"""SKILL.md front matter: real YAML, every value kept as the text written, and a broken
front matter is one clear line that never stops discovery of the other skills."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rlm.errors import ConfigError
from rlm.skills.discovery import discover, parse_front_matter


def test_front_matter_blocks_quotes_and_comments() -> None:
    text = (
        "---\nname: web\ndescription: >\n  Searches the web\n  and summarizes.\n"
        "# comment\ntitle: 'It''s \"quoted\"'\nnotes: |\n  one\n  two\n---\n\n# Body\n"
    )
    meta, body = parse_front_matter(text)
    assert meta == {
        "name": "web",
        "description": "Searches the web and summarizes.",
        "title": 'It\'s "quoted"',
        "notes": "one\ntwo",
    }
    assert body == "# Body"


def test_values_stay_the_text_written() -> None:
    """YAML 1.1 would read ``no`` as False and ``1.10`` as 1.1; a description is text."""
    meta, _ = parse_front_matter("---\nname: no\nversion: 1.10\ndescription: 2024-01-01\n---\n")
    assert meta == {"name": "no", "version": "1.10", "description": "2024-01-01"}


def test_without_front_matter_the_text_is_all_body() -> None:
    assert parse_front_matter("# No front matter\n") == ({}, "# No front matter\n")
    assert parse_front_matter("---\nname: x\n") == ({}, "---\nname: x\n")  # unterminated
    assert parse_front_matter("---\n---\nbody") == ({}, "body")  # empty front matter
    assert parse_front_matter("") == ({}, "")


@pytest.mark.parametrize(
    ("front", "message"),
    [
        (
            "name: web\ndescription: Search: the web\n",
            "line 3: mapping values are not allowed here (quote a value that contains ': ')",
        ),
        ("name: [web\n", "line 2: expected ',' or ']'"),
        ("- a list\n- not keys\n", "front matter must be 'key: value' lines"),
    ],
    ids=["colon-in-value", "unclosed-bracket", "not-a-mapping"],
)
def test_bad_front_matter_is_one_clear_line(front: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_front_matter(f"---\n{front}---\nbody\n")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def _fake_dist(site: Path, name: str, skill_md: str, summary: str) -> None:
    """An installed distribution ``rlm-skill-<name>`` shipping ``<name>/SKILL.md``."""
    (site / name).mkdir(parents=True)
    (site / name / "SKILL.md").write_text(skill_md)
    info = site / f"rlm_skill_{name}-0.1.dist-info"
    info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: rlm-skill-{name}\nVersion: 0.1\nSummary: {summary}\n"
    (info / "METADATA").write_text(metadata)
    (info / "RECORD").write_text(f"{name}/SKILL.md,,\n")


def test_discover_keeps_a_skill_whose_front_matter_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_dist(tmp_path, "good", "---\ndescription: Does good.\n---\n", "good summary")
    _fake_dist(tmp_path, "typo", "---\ndescription: Fix: it\n---\n", "typo summary")
    with caplog.at_level(logging.WARNING, logger="rlm.skills.discovery"):
        infos = {info.name: info for info in discover(path=[str(tmp_path)])}
    assert infos["good"].description == "Does good."
    assert infos["typo"].description == "typo summary"  # falls back to the summary
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(tmp_path / "typo" / "SKILL.md") in warning
    assert "mapping values are not allowed here" in warning
