"""``python -m rlm`` is the ``rlm`` command."""

import sys

from rlm.cli.main import main

sys.exit(main())
