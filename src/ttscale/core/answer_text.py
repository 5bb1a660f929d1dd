"""Answer text that strategies read without knowing the answer space: the last ``\\boxed{...}``.

Tree search stops a path when its text boxes a final answer; the math answer space extracts answers
with the same rule (:mod:`ttscale.verifiers.math_answers` builds on :func:`last_boxed`).
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")


def _balanced(text: str, open_at: int) -> str | None:
    """The content of the brace group opening at ``text[open_at] == "{"`` (None if unclosed)."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":  # skip escaped characters such as \{ and \}
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces fine) or ``\\boxed 5``."""
    found: str | None = None
    for m in _BOX_RE.finditer(text):
        if m.group(1):
            content = _balanced(text, m.end() - 1)
        else:  # "\boxed 5": up to the next space, "$" or end
            tail = re.match(r"([^\s$]+)", text[m.end():])
            content = tail.group(1) if tail else None
        if content is not None and content.strip():
            found = content.strip()
    return found
