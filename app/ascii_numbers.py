"""Numbers from text, for every input the service reads: ASCII digits only, with a length bound.

`str.isdigit()` and `int()` accept far more ('²', '١٢', ' 7', '1_000', 5,000 digits), which once
let such values through a check and then broke the conversion behind it.
"""

import re

MAX_DIGITS = 18  # every integer the service takes fits; a 64-bit int never overflows
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")


def ascii_int(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """text as a non-negative integer when it is 1 to max_digits ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def ascii_decimal(text: str) -> float | None:
    """text as a non-negative number when it is ASCII digits with an optional fraction, else None."""
    return float(text) if _DECIMAL.fullmatch(text) else None
