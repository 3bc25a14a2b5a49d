"""Text that clients choose (user names, client ids, SASL messages), made safe for one log line."""

from __future__ import annotations


def printable(value: object) -> str:
    """`value` as text with control and other non-printable characters escaped (\\n, \\r, \\x1c,
    \\u2028, ...): a name a client picked cannot split a log line in two or forge another one."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
