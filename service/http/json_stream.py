"""Concatenated JSON objects from a request body read as it arrives (REST Proxy's streaming
produce: `{...}{...}`, or one per line), each parsed as soon as it is complete.

Each object is parsed where it lies in the buffer by the json module's C scanner
(`raw_decode`), which also says where it ends. Only when that fails is the object scanned here
for its end (braces and brackets outside strings, each string to its closing quote), carried
on as more of the body comes: then either it was incomplete and is parsed once whole, or it is
not valid JSON and is handed out as a `BadObject` with the parser's message, and the stream
goes on after it. An incremental parser (ijson) hands out values, not where they end, so it can
neither go on after an invalid object nor bound one object's size before it is all read.

The body is UTF-8 (RFC 8259); bytes that are not are kept as lone surrogates (surrogateescape),
so they surface as an error of the record holding them, not of the whole stream.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

_WHITESPACE = re.compile(r"[ \t\r\n]*")
_STRUCTURE = re.compile(r'["{}\[\]]')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class StreamError(Exception):
    """The body cannot be split further: what follows is not a JSON object, or an incomplete
    object is larger than the bound. Nothing after it is read."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


@dataclass(frozen=True)
class BadObject:
    """An object whose end was found but that is not valid JSON (or too large)."""

    message: str
    too_large: bool = False


class JsonObjects:
    """Feed bytes with `feed`; `next()` gives the next object (a dict), a BadObject, or None
    until more of the body is needed. At the end of the body, `finish()` says whether an
    incomplete object is left."""

    def __init__(self, max_object_chars: int) -> None:
        self._max = max_object_chars
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._text = ""
        self._start = 0  # where the next object starts (or whitespace before it)
        self._scanning = False  # the object at _start failed to parse: its end is being looked for
        self._pos = 0
        self._depth = 0
        self._in_string = False
        self.consumed = 0  # characters of the body before _start

    def feed(self, data: bytes) -> None:
        start = self._start
        self._text = self._text[start:] + self._utf8.decode(data)
        self._start = 0
        self._pos -= start

    def next(self) -> dict[str, Any] | BadObject | None:
        text = self._text
        if not self._scanning:
            m = _WHITESPACE.match(text, self._start)
            assert m is not None
            self._skip_to(m.end())
            start = self._start
            if start == len(text):
                return None
            if text[start] != "{":
                found = text[start:start + 20].encode("utf-8", "replace").decode("utf-8", "replace")
                raise StreamError(f"Expected a JSON object at character {self.consumed} of the body, found '{found}'")
            try:
                value, end = _DECODER.raw_decode(text, start)
            except (ValueError, RecursionError):  # incomplete so far, or not JSON: find its end
                self._scanning, self._pos, self._depth, self._in_string = True, start, 0, False
            else:
                return self._taken(value, end)
        closed = self._scan()
        if closed is None:
            if len(text) - self._start > self._max:
                raise StreamError(self._too_large(), too_large=True)
            return None
        self._scanning = False
        start = self._start
        try:
            value, parsed_end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as e:
            line = text.count("\n", start, e.pos) + 1
            column = e.pos - (text.rfind("\n", start, e.pos) + 1 if line > 1 else start) + 1
            return self._bad(f"{e.msg} at line {line} column {column}", closed)
        except RecursionError:
            return self._bad("nested too deeply", closed)
        except ValueError as e:  # NaN, Infinity, an integer of too many digits
            return self._bad(str(e), closed)
        return self._taken(value, parsed_end)

    def _taken(self, value: Any, end: int) -> dict[str, Any] | BadObject:
        size = end - self._start
        self._skip_to(end)
        if size > self._max:
            return BadObject(self._too_large(), too_large=True)
        assert isinstance(value, dict)
        return value

    def _bad(self, message: str, end: int) -> BadObject:
        self._skip_to(end)
        return BadObject(f"The record is not valid JSON: {message}")

    def _skip_to(self, end: int) -> None:
        self.consumed += end - self._start
        self._start = end

    def _scan(self) -> int | None:
        """Carry the scan for the end of the object at _start on; its end, or None."""
        text, pos, depth = self._text, self._pos, self._depth
        while True:
            if self._in_string:
                q = text.find('"', pos)
                while q != -1 and _escaped(text, q):
                    q = text.find('"', q + 1)
                if q == -1:
                    self._pos, self._depth = len(text), depth
                    return None
                self._in_string = False
                pos = q + 1
                continue
            m = _STRUCTURE.search(text, pos)
            if m is None:
                self._pos, self._depth = len(text), depth
                return None
            c = m.group()
            pos = m.end()
            if c == '"':
                self._in_string = True
            elif c in "{[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return pos

    def _too_large(self) -> str:
        return f"A record's JSON is larger than {self._max} characters (http.max.request.bytes)"

    def finish(self) -> str | None:
        """At the end of the body: a message when an object was left incomplete."""
        self._text += self._utf8.decode(b"", True)  # an incomplete UTF-8 sequence at the very end
        if self._scanning or self._start < len(self._text.rstrip(" \t\r\n")):
            return f"The body ends within the JSON object that starts at character {self.consumed}"
        return None


def _escaped(text: str, quote: int) -> bool:
    """Whether the quote at this position is escaped (an odd run of backslashes before it)."""
    i = quote - 1
    while text[i] == "\\":
        i -= 1
    return (quote - 1 - i) % 2 == 1
