"""Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`), inflated under a size limit.

The limit counts inflated bytes and is checked on every piece as it comes out of zlib, so a
small body that would inflate to gigabytes is refused once `limit` bytes have come out, never
inflated whole. An encoding the proxy cannot undo is refused before the body is read: parsed
as it is, it would only fail later as "not UTF-8" and leave a row of garbage.
"""

from __future__ import annotations

import zlib

from .errors import ProxyError

#: gzip's header and trailer around a deflate stream (zlib's `wbits` for it).
GZIP_WBITS = 16 + zlib.MAX_WBITS
#: The codings undone here, as named in `Content-Encoding` (`x-gzip` is gzip's old name).
CODINGS = ("gzip", "x-gzip", "deflate")
TRAILING_DATA = "there is data after the end of the compressed stream"


class Inflater:
    """One content coding, undone piece by piece."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self._room = limit
        self._head = b""
        self._zlib = None if coding == "deflate" else zlib.decompressobj(GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        """The bytes `data` inflates to; 413 once the output passes the limit, 400 for corrupt data."""
        if self._zlib is None:
            # `deflate` means the zlib format (RFC 9110), but some clients (.NET's DeflateStream
            # among them) send raw deflate: the first two bytes tell which.
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
        if self._zlib.eof:
            if data:
                raise self._corrupt(TRAILING_DATA)
            return b""
        try:
            out = self._zlib.decompress(data, self._room + 1)  # max_length: never more than one byte too many
        except zlib.error as exc:
            raise self._corrupt(str(exc)) from None
        if len(out) > self._room:
            raise too_large(self.limit)
        self._room -= len(out)
        if self._zlib.unused_data:
            raise self._corrupt(TRAILING_DATA)
        return out

    def finish(self) -> None:
        """Check that the compressed stream was complete."""
        if self._zlib is None or not self._zlib.eof:
            raise self._corrupt("the compressed stream ends early")

    def _corrupt(self, why: str) -> ProxyError:
        return ProxyError(
            400,
            f"The request body is not valid {self.coding} data (Content-Encoding: {self.coding}): {why}.",
            code="invalid_compressed_body",
        )


def inflaters(content_encoding: str | None, limit: int) -> list[Inflater]:
    """What undoes a `Content-Encoding` (the coding applied last comes first); 415 for a coding
    other than gzip, deflate and identity."""
    if not content_encoding:
        return []
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    for coding in codings:
        if coding not in CODINGS:
            raise ProxyError(
                415,
                f"Unsupported Content-Encoding {coding!r}: send the body uncompressed, or compressed with gzip or deflate.",
                param="Content-Encoding",
                code="unsupported_content_encoding",
            )
    return [Inflater(coding, limit) for coding in reversed(codings)]


def too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"The request body is larger than the limit of {limit} bytes.", code="request_too_large")


def _zlib_header(data: bytes) -> bool:
    """Whether `data` starts with a zlib header (RFC 1950): method 8 and a check value divisible by 31."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
