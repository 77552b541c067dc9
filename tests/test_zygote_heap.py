"""The zygote fills its pools' free slots before forking (rlm.zygote.heap)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_filling_takes_the_free_slots_scattered_over_used_pools():
    """A heap with holes everywhere (every other object of each size freed): after filling,
    what is left free is the room in the few pools filling itself opened."""
    code = textwrap.dedent(
        """
        import json
        from rlm.zygote.heap import fill_free_blocks, free_blocks
        kept = [bytes(n % 480) for n in range(200_000)] + [float(n) for n in range(20_000)]
        del kept[::2]
        before = free_blocks()
        filled = fill_free_blocks()
        print(json.dumps([sum(before.values()), filled, sum(free_blocks().values())]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    before, filled, after = json.loads(done.stdout)
    assert before > 100_000 and filled >= before
    assert after < before / 20, (before, after)
