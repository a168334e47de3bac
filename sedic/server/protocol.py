"""uvicorn's h11 protocol with the two limits it lacks: a deadline for a request's headers and a
cap on open connections (uvicorn's own timer runs only between requests of a kept-alive
connection, so a client sending one header byte a second held a connection forever).

The body has its own deadline, in `uploads.BodyLimit`.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None  # closes a connection whose headers are late

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:  # this one included
                transport.abort()
                return
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():  # the next request's headers get the same deadline
                self._arm_header_deadline()

        def connection_lost(self, exc) -> None:
            self._cancel_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._cancel_header_deadline()
            self._header_deadline = self.loop.call_later(header_timeout, self._headers_overdue)

        def _cancel_header_deadline(self) -> None:
            deadline = getattr(self, "_header_deadline", None)
            if deadline is not None:
                deadline.cancel()
                self._header_deadline = None

        def _headers_overdue(self) -> None:
            self._header_deadline = None
            # IDLE: no complete request line and headers yet (a request being answered is not IDLE)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
