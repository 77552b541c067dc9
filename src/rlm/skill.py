"""The module skill packages import: ``from rlm.skill import make_callable`` in their
``__init__.py`` and ``<name> = "rlm.skill:cli"`` as their console script.

Its name is a contract with every installed skill, so it stays here; the code lives in
:mod:`rlm.skills.entry`.
"""

from rlm.skills.entry import cli, make_callable

__all__ = ["cli", "make_callable"]
