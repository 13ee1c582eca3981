"""Text from files made safe to show: on a terminal (`terminal_text`) and in Markdown (`markdown_text`).

Class names, source names and other strings of a bank come from whoever wrote the file: they may hold
terminal escape sequences, bidirectional overrides, unpaired surrogates or Markdown / HTML syntax.
"""

from __future__ import annotations

import re
import unicodedata

# control (Cc), format (Cf: bidi overrides, zero-width), surrogate (Cs), private use (Co), line and
# paragraph separators (Zl, Zp): shown as escapes, never passed to the terminal or the page as is
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# inline syntax: emphasis, code, links and images, tables, strikethrough, math (line-start syntax cannot
# occur: the text is always placed after other text)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~$])")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_text(text: str) -> str:
    """`text` with every control, format, surrogate, private-use and separator character written as
    a Python-style escape (\\x1b, \\u202e, \\ud800), so printing it cannot move the cursor, recolour
    or reorder the terminal, or fail to encode."""
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def markdown_text(text: str, limit: int = 200) -> str:
    """`text` as inert Markdown inline text (also inside a table cell): unsafe characters escaped as
    in `terminal_text`, HTML's `&`, `<`, `>` as entities, Markdown punctuation backslash-escaped, at
    most `limit` characters of the original (then an ellipsis)."""
    short = text if len(text) <= limit else text[:limit] + "\u2026"
    safe = terminal_text(short).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", safe)


def code_fence(content: str) -> str:
    """A backtick fence longer than any backtick run in `content` (so the content cannot close it)."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    return "`" * max(3, longest + 1)
