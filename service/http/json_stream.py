"""Concatenated JSON objects from a request body read as it arrives (REST Proxy's streaming
produce: `{...}{...}` or one per line), each handed out as its own bytes once it is complete.

Written here rather than taken from an incremental parser (ijson): the produce path needs each
object's byte extent, to bound one record's size before it is all buffered and to go on with the
next object after one that is not valid JSON; parsers hand out values, not extents. This only
finds where each top-level object ends (braces and brackets outside strings, strings to their
closing quote); `json.loads` then parses the object and reports what is wrong with it.
"""

from __future__ import annotations

import re

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURE = re.compile(rb'["{}\[\]]')
_OPEN, _QUOTE, _BACKSLASH = (ord(c) for c in '{"\\')
_COMPACT_AT = 1 << 16  # drop consumed bytes once this many have piled up before the current object


class StreamError(Exception):
    """The body cannot be split further: what follows is not a JSON object, or one object is
    larger than the bound. Nothing after it is read."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


class JsonObjects:
    """Feed bytes in with `feed`; `next()` returns the next whole object's bytes, or None until
    more bytes are needed. At the end of the body, `finish()` says whether a partial object
    is left over."""

    def __init__(self, max_object_bytes: int) -> None:
        self._max = max_object_bytes
        self._buf = bytearray()
        self._start = 0  # where the object being scanned starts
        self._pos = 0  # how far it has been scanned
        self._depth = 0
        self._in_string = False
        self.consumed = 0  # bytes of the body handed out or skipped as whitespace

    def feed(self, data: bytes) -> None:
        if self._start >= _COMPACT_AT:
            del self._buf[:self._start]
            self._pos -= self._start
            self._start = 0
        self._buf += data

    def next(self) -> bytes | None:
        buf = self._buf
        end = len(buf)
        if self._depth == 0:  # between objects: skip whitespace, then an object must start
            m = _WHITESPACE.match(buf, self._start)
            assert m is not None
            self.consumed += m.end() - self._start
            self._start = self._pos = m.end()
            if self._start == end:
                return None
            if buf[self._start] != _OPEN:
                found = bytes(buf[self._start:self._start + 20]).decode("utf-8", "replace")
                raise StreamError(f"Expected a JSON object at byte {self.consumed} of the body, found '{found}'")
            self._depth, self._pos = 1, self._start + 1
        pos, depth = self._pos, self._depth
        while True:
            if self._in_string:
                q = buf.find(b'"', pos)
                while q != -1 and _escaped(buf, q):
                    q = buf.find(b'"', q + 1)
                if q == -1:
                    pos = end
                    break
                self._in_string = False
                pos = q + 1
                continue
            m = _STRUCTURE.search(buf, pos)
            if m is None:
                pos = end
                break
            c = buf[m.start()]
            pos = m.end()
            if c == _QUOTE:
                self._in_string = True
            elif c == _OPEN or c == 0x5B:  # { [
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    value = bytes(buf[self._start:pos])
                    self.consumed += pos - self._start
                    self._start = self._pos = pos
                    self._depth = 0
                    if len(value) > self._max:
                        raise StreamError(self._too_large(), too_large=True)
                    return value
        self._pos, self._depth = pos, depth
        if end - self._start > self._max:
            raise StreamError(self._too_large(), too_large=True)
        return None

    def _too_large(self) -> str:
        return f"A record's JSON is larger than {self._max} bytes (http.max.request.bytes)"

    def finish(self) -> str | None:
        """At the end of the body: a message when an object was left incomplete."""
        if self._depth == 0:
            return None
        return f"The body ends within the JSON object that starts at byte {self.consumed}"


def _escaped(buf: bytearray, quote: int) -> bool:
    """Whether the quote at this position is escaped (an odd run of backslashes before it)."""
    i = quote - 1
    while buf[i] == _BACKSLASH:
        i -= 1
    return (quote - 1 - i) % 2 == 1
