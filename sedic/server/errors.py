"""HTTP answers for errors: one-line JSON `{"error": ..., "status": ...}`, never a traceback.

The messages are the library's own (the CLI prints the same text after `sedic: error:`).
"""

from __future__ import annotations

from ..errors import BitstreamError, InputError, ModelUnavailableError, RateError, SedicError
from .jobs import JobCancelled, QueueFull


class TooLarge(InputError):
    """An upload, image or .sedic file above this server's limits (413)."""


class UnsupportedMedia(InputError):
    """A request that is not multipart, or an upload that is not an accepted image (415)."""


class Unauthorized(SedicError):
    """Missing or wrong API key (401)."""


# first match wins: subclasses before their bases
_STATUS = ((TooLarge, 413), (UnsupportedMedia, 415), (Unauthorized, 401), (QueueFull, 503),
           (ModelUnavailableError, 503), (BitstreamError, 422), (RateError, 422), (InputError, 400),
           (SedicError, 400), (JobCancelled, 499))


def status_of(exc: BaseException) -> int | None:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return None


def one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


def error_body(status: int, message: str) -> dict:
    return {"error": one_line(message), "status": status}


def error_headers(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, QueueFull):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="sedic"'}
    return {}
