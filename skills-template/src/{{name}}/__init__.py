"""{{name}}: an rlm skill. Call it as ``await {{name}}(...)``; ``help({{name}})`` for details."""

from rlm.skill import make_callable

from .{{name}} import run as run  # "as run": an explicit re-export, for linters

# Makes the module itself callable: `await {{name}}(...)` runs `run`, help() shows its docs.
make_callable(__name__)
