"""``python -m rlm`` is the ``rlm`` command."""

import sys

from .cli import main

sys.exit(main())
