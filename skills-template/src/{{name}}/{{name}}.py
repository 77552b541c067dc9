"""Implementation of the {{name}} skill: the single entry point is the async ``run``."""


async def run(text: str, repeat: int = 1, upper: bool = False) -> str:
    """Echo text back; replace this with what {{name}} does.

    Parameters become CLI flags (``--text``, ``--repeat``, ``--upper/--no-upper``, and a
    ``list[str]`` parameter becomes ``--items a b``); the ``Args:`` lines become flag help.

    Args:
        text: The text to echo.
        repeat: How many times to repeat it.
        upper: Upper-case the result.

    Returns:
        The echoed text, one copy per line.
    """
    result = "\n".join([text] * repeat)
    return result.upper() if upper else result
