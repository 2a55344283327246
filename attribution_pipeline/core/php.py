"""PHP 8 semantics the validation of Prosper202's model rows depends on (spec §3.6, D10).

Scalar casts (:func:`php_is_numeric`, :func:`php_int`, :func:`php_float`):

* ``is_numeric``: ints and floats (never bools); strings of the form
  ``[ws]* [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)? [ws]*`` with ws one of
  space, \\t, \\n, \\r, \\v, \\f (PHP 8 allows trailing whitespace). No hex, no "inf"/"nan", no
  underscores, "." is not numeric, "1." and ".5" are.
* ``(int)`` of a string: its leading numeric prefix (0 when none); an integer prefix saturates to
  the int64 range; a prefix with '.' or an exponent is parsed as a double and truncated toward
  zero, saturating when out of range and giving 0 for INF (``zend_dval_to_lval_cap``).
  ``(int)`` of a float: truncation toward zero, 0 for NaN/INF, and **modular** (two's-complement
  wrap of the value mod 2**64, ``zend_dval_to_lval``) outside the int64 range, as PHP 7+/8 does
  on 64-bit builds: ``(int) 1e19 == -8446744073709551616``, so ``half_life_hours: 1e19`` is
  rejected as PHP rejects it. A Python int outside int64 (PHP never holds one) is treated as the
  float PHP would hold.
* ``(float)`` of a string: ``zend_strtod`` of its leading numeric prefix (0.0 when none).

JSON: :func:`php_json_decode` decodes like ``json_decode($s, true, 512, JSON_THROW_ON_ERROR)``
and raises :class:`PhpJsonError` with PHP's ``json_last_error_msg()`` text; :func:`php_json`
encodes like ``json_encode`` (compact, floats in shortest form without a trailing ``.0``).
"""

import json
import math
import re
from typing import Any

# PHP's json_last_error_msg() texts.
JSON_SYNTAX = "Syntax error"
JSON_DEPTH = "Maximum stack depth exceeded"
JSON_CTRL_CHAR = "Control character error, possibly incorrectly encoded"
JSON_UTF8 = "Malformed UTF-8 characters, possibly incorrectly encoded"
JSON_UTF16 = "Single unpaired UTF-16 surrogate in unicode escape"
PHP_JSON_MAX_DEPTH = 512  # json_decode's default $depth

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_WS = " \t\n\r\v\f"
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMERIC_STRING = re.compile(rf"[{_WS}]*{_NUMBER}[{_WS}]*")
_NUMERIC_PREFIX = re.compile(rf"[{_WS}]*({_NUMBER})")
_SURROGATE = re.compile("[\ud800-\udfff]")


# ------------------------------------------------------------------------------------------
# PHP 8 scalar semantics
# ------------------------------------------------------------------------------------------


def php_is_numeric(value: Any) -> bool:
    """PHP 8 ``is_numeric``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and _NUMERIC_STRING.fullmatch(value) is not None


def _saturate(value: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, value))


def _float_to_int_cap(value: float) -> int:
    """``zend_dval_to_lval_cap``: PHP's (int) of a string holding a double."""
    if not math.isfinite(value):
        return 0
    return _saturate(int(value))


def _float_to_int(value: float) -> int:
    """``zend_dval_to_lval``: PHP's (int) of a float (modular outside int64 on 64-bit builds)."""
    if not math.isfinite(value):
        return 0
    whole = int(value)  # exact, truncates toward zero
    if INT64_MIN <= whole <= INT64_MAX:
        return whole
    wrapped = whole % 2**64
    return wrapped - 2**64 if wrapped > INT64_MAX else wrapped


def _string_to_int(text: str) -> int:
    match = _NUMERIC_PREFIX.match(text)
    if match is None:
        return 0
    number = match.group(1)
    if "." in number or "e" in number or "E" in number:
        return _float_to_int_cap(float(number))
    return _saturate(int(number))


def php_int(value: Any) -> int:
    """PHP 8 ``(int) $value`` for the types a row or a decoded JSON config can hold."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else _float_to_int(float(value))
    if isinstance(value, float):
        return _float_to_int(value)
    if isinstance(value, str):
        return _string_to_int(value)
    if isinstance(value, (dict, list, tuple)):
        return 1 if value else 0
    raise TypeError(f"php_int: unsupported type {type(value).__name__}")


def php_float(value: Any) -> float:
    """PHP 8 ``(float) $value`` (strings: ``zend_strtod`` of the leading numeric prefix)."""
    if value is None:
        return 0.0
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):
        match = _NUMERIC_PREFIX.match(value)
        return float(match.group(1)) if match else 0.0
    if isinstance(value, (dict, list, tuple)):
        return 1.0 if value else 0.0
    raise TypeError(f"php_float: unsupported type {type(value).__name__}")


def php_string(value: Any) -> str:
    """``(string) $value`` for row columns (NULL -> '')."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)





class PhpJsonError(Exception):
    """A json_decode failure with PHP's json_last_error_msg() text."""


def _reject_constant(name: str) -> Any:
    raise PhpJsonError(JSON_SYNTAX)  # NaN, Infinity, -Infinity are not JSON


def _json_int(text: str) -> int | float:
    """PHP decodes an integer literal outside int64 as a double (no JSON_BIGINT_AS_STRING)."""
    if len(text.lstrip("-")) <= 19:
        number = int(text)
        if INT64_MIN <= number <= INT64_MAX:
            return number
    return float(text)


def _check_php_limits(decoded: Any) -> None:
    """Depth > 512 and unpaired surrogates, which Python's json accepts and PHP's does not."""
    stack = [(decoded, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise PhpJsonError(JSON_UTF16)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > PHP_JSON_MAX_DEPTH:
            raise PhpJsonError(JSON_DEPTH)
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((item, depth + 1) for item in items)


def _syntax_reason(text: str, exc: json.JSONDecodeError) -> str:
    if exc.msg.startswith("Invalid control character"):
        return JSON_CTRL_CHAR
    if exc.pos < len(text) and text[exc.pos] == "\x00":
        return JSON_CTRL_CHAR  # PHP's scanner reports a NUL outside a string as a control character
    return JSON_SYNTAX


def php_json_decode(text: str) -> Any:
    if _SURROGATE.search(text):
        raise PhpJsonError(JSON_UTF8)  # such a str has no UTF-8 encoding
    try:
        decoded = json.loads(text, parse_constant=_reject_constant, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise PhpJsonError(_syntax_reason(text, exc)) from None
    except RecursionError:
        raise PhpJsonError(JSON_DEPTH) from None
    _check_php_limits(decoded)
    return decoded


def php_json(value) -> str:
    """JSON as PHP's ``json_encode`` writes it: compact, floats shortest, no trailing ``.0``."""

    def fmt(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
                return str(int(v))
            return repr(v)
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(str(k))}:{fmt(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        raise TypeError(f"cannot encode {type(v).__name__}")

    return fmt(value)
