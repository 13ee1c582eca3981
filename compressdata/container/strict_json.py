"""JSON as the format reads it (spec section 3.1): RFC 8259 text, refused when an object repeats a key,
a number does not round to a finite binary64 value, `NaN`/`Infinity` appear, a string holds an
unpaired UTF-16 surrogate, or values nest deeper than a limit.

Every check runs at C speed (the standard `json` module, `re`, numpy) on the whole text, so a text
up to the 16 MiB header limit costs a few passes over its bytes whatever its shape: no Python work
per JSON value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from compressdata.errors import FileFormatError

_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# an integer token of 309+ digits (the only integers that may not round to a finite binary64 value);
# in a text without strings, digits after '.', 'e', 'E' or an exponent sign belong to a fraction or exponent
_LONG_INTEGER = re.compile(r"(?<![\d.eE+-])-?\d{309,}(?![\d.eE])")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def loads(text: str, max_depth: int) -> Any:
    """The JSON value of `text`; ValueError naming the problem (RecursionError for absurd nesting)."""
    value = json.loads(text, parse_constant=_reject_constant)
    check(value, text, max_depth)
    return value


def check(value: Any, text: str, max_depth: int) -> None:
    """Check `value`, parsed from `text` by the standard decoder, against the rules above."""
    skeleton = _STRING_TOKEN.sub('""', text)  # structure, numbers and literals only
    if skeleton.count("[") + skeleton.count("{") > max_depth and depth(skeleton) > max_depth:
        raise FileFormatError(f"nesting deeper than {max_depth} levels")
    try:  # a number token out of the binary64 range parses as +-inf; members joined by \x01, which
        # json.dumps always escapes inside strings, so counting it counts the members kept
        dumped = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", "\x01"),
                            check_circular=False)
    except ValueError:
        raise FileFormatError("a number is out of the float64 range (it rounds to infinity)") from None
    try:  # the decoder joins surrogate pairs, so any surrogate left is unpaired
        dumped.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FileFormatError(f"a string holds the unpaired surrogate U+{ord(dumped[e.start]):04X} "
                         f"(near {ascii(dumped[max(0, e.start - 30):e.start + 10])})") from None
    if skeleton.count(":") != dumped.count("\x01"):  # members written vs members kept
        raise FileFormatError(_duplicate_message(text))
    if longest_digit_run(skeleton) >= 309:
        for match in _LONG_INTEGER.finditer(skeleton):
            try:
                float(int(match.group()))
            except OverflowError:
                raise FileFormatError(f"integer {match.group()[:40]}... is out of the float64 range") from None


def depth(skeleton: str) -> int:
    """Deepest nesting of arrays and objects in JSON text without strings."""
    data = np.frombuffer(skeleton.encode("ascii", "replace"), dtype=np.uint8)
    steps = ((data == 0x5B) | (data == 0x7B)).astype(np.int16) - ((data == 0x5D) | (data == 0x7D))
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def longest_digit_run(skeleton: str) -> int:
    """Length of the longest run of ASCII digits in `skeleton`."""
    digits = np.frombuffer(skeleton.encode("ascii", "replace"), dtype=np.uint8)
    digits = np.concatenate(([False], (digits >= 0x30) & (digits <= 0x39), [False])).view(np.int8)
    edges = np.flatnonzero(np.diff(digits))  # starts and ends of runs, alternating
    return int((edges[1::2] - edges[::2]).max(initial=0))


def object_members(text: str, max_members: int | None, max_depth: int, uncounted: str = "") -> dict[str, Any]:
    """The members of `text`, a JSON object, read one by one: ValueError as soon as a key repeats or
    there are more than `max_members` besides `uncounted` (so a header listing a million tensors
    costs nothing); NotAnObject when `text` is JSON but not an object."""
    i = _WHITESPACE.match(text).end()
    if not text.startswith("{", i):
        loads(text, max_depth)
        raise NotAnObject
    members: dict[str, Any] = {}
    i = _WHITESPACE.match(text, i + 1).end()
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            if not text.startswith('"', i):
                raise FileFormatError(f"expected a string key at character {i}")
            key, i = _DECODER.raw_decode(text, i)
            i = _WHITESPACE.match(text, i).end()
            if not text.startswith(":", i):
                raise FileFormatError(f"expected ':' at character {i}")
            start = _WHITESPACE.match(text, i + 1).end()
            value, i = _DECODER.raw_decode(text, start)
            check({key: value}, "{" + json.dumps(key) + ":" + text[start:i] + "}", max_depth)
            if key in members:
                raise FileFormatError(f"duplicate key(s) {ascii([key])}")
            members[key] = value
            if max_members is not None and len(members) - (uncounted in members) > max_members:
                raise TooManyMembers(len(members))
            i = _WHITESPACE.match(text, i).end()
            if text.startswith(",", i):
                i = _WHITESPACE.match(text, i + 1).end()
            elif text.startswith("}", i):
                i += 1
                break
            else:
                raise FileFormatError(f"expected ',' or '}}' at character {i}")
    if _WHITESPACE.match(text, i).end() != len(text):
        raise FileFormatError(f"extra data after the object at character {i}")
    return members


class NotAnObject(FileFormatError):
    """The text is JSON, but not an object."""


class TooManyMembers(FileFormatError):
    """An object has more members than allowed (the count so far is the argument)."""


def _duplicate_message(text: str) -> str:
    """The repeated key's name: parsing again, object by object (only once a repeat is known)."""
    try:
        json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as e:
        return str(e)
    return "an object repeats a key: duplicate key(s)"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        repeated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise FileFormatError(f"duplicate key(s) {ascii(repeated[:5])}")
    return result


def _reject_constant(name: str) -> Any:
    raise FileFormatError(f"{name} is not JSON (non-finite numbers are not allowed)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
