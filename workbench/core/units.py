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
        number = as_float(value)
    else:
        match = _NUMBER.match(str(value)) if len(str(value)) <= 400 else None
        if not match:
            raise WorkbenchError(f"{field}: cannot read {str(value)[:60]!r} as a number", f"Use {ACCEPTED}.")
        number = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(number):
        raise WorkbenchError(f"{field}: {shown(value)} is not finite", f"Use {ACCEPTED}.")
    return number


def shown(value: object, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for messages (an int of thousands of digits has no repr)."""
    try:
        return repr(value)[:limit]
    except ValueError:
        return "a number of thousands of digits"


def parse_positive(text: str | None, option: str) -> float | None:
    """The number an option gives, which must be above 0 (None when not given)."""
    if text is None:
        return None
    value = parse_number(text, option)
    if value <= 0:
        raise WorkbenchError(f"{option}: {text} must be positive", f"Give {option} a number above 0, e.g. 1e21.")
    return value


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
    """A stored field as a float, None when absent or not a number (an int too large for a float: inf)."""
    try:
        return None if value is None else float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return None


def as_int(value: object) -> int | None:
    """A stored field as an int, None when absent, not a number, not finite or beyond a 64-bit integer."""
    number = as_float(value)
    return int(number) if number is not None and math.isfinite(number) and abs(number) < 2**63 else None


INT64_MAX = 2**63 - 1  # counts are stored as BIGINT and handed to torch as int64


def in_domain(
    value: object,
    field: str,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    integer: bool = False,
) -> float | int | None:
    """`value` checked against its domain: None stays None; otherwise a real number (not a bool, not text),
    finite, at least `low` (above it when `low_open`), at most `high`, and whole and below 2^63 when
    `integer`. Anything else is a one-line error naming `field` (e.g. `final.json: val_loss`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkbenchError(f"{field}: {str(value)[:40]!r} is not a number", "Fix or remove the value.")
    number = as_float(value)
    if not math.isfinite(number):
        raise WorkbenchError(f"{field}: {number} is not finite", "Fix or remove the value.")
    if low is not None and (number <= low if low_open else number < low):
        raise WorkbenchError(f"{field}: {value!r} must be {'above' if low_open else 'at least'} {low:g}", "Fix it.")
    if high is not None and number > high:
        raise WorkbenchError(f"{field}: {value!r} must be at most {high:g}", "Fix it.")
    if integer:
        if number != math.floor(number) or abs(number) > INT64_MAX:
            raise WorkbenchError(f"{field}: {value!r} is not a whole number below 2^63", "Fix it.")
        return int(value)
    return float(number)
