"""Numbers as people write them in configs and on the command line: 1e18, 6e18, 350M, 16B, 4K."""

import math
import re

from workbench.core.errors import WorkbenchError

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)
ACCEPTED = "a number like 1e18, 6.5e9, 350M, 16B, 4K or 2T"


def parse_number(value: object, field: str = "value") -> float:
    """Parse `value` (int, float or a string such as '350M' or '1e18') to a finite float."""
    if isinstance(value, bool):
        raise WorkbenchError(f"{field}: expected a number, got {value!r}", f"Use {ACCEPTED}.")
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = _NUMBER.match(str(value))
        if not match:
            raise WorkbenchError(f"{field}: cannot read {value!r} as a number", f"Use {ACCEPTED}.")
        number = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(number):
        raise WorkbenchError(f"{field}: {value!r} is not finite", f"Use {ACCEPTED}.")
    return number


def parse_count(value: object, field: str = "value") -> int:
    """Parse a positive count (parameters, tokens) such as '350M' to an int."""
    number = parse_number(value, field)
    if number <= 0:
        raise WorkbenchError(f"{field}: {value!r} must be positive", f"Use {ACCEPTED}.")
    return int(round(number))


def human(number: float, digits: int = 3) -> str:
    """Format 350e6 as '350M', 8.03e9 as '8.03B' (for tables, not for parsing back exactly)."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.{digits}g}{suffix}"
    return f"{number:.{digits}g}"


def as_text(value: object) -> str | None:
    """A stored field as text (None stays None): how run records and store rows read loose JSON/YAML values."""
    return None if value is None else str(value)


def as_float(value: object) -> float | None:
    """A stored field as a float, None when absent or not a number."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def as_int(value: object) -> int | None:
    """A stored field as an int, None when absent, not a number or not finite."""
    number = as_float(value)
    return int(number) if number is not None and math.isfinite(number) else None
