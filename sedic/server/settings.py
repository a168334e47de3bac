"""What an operator sets when starting `sedic serve` (the CLI flags and SEDIC_API_KEY)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..config import check_effort
from ..errors import InputError

API_KEY_ENV = "SEDIC_API_KEY"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerSettings:
    profile: str | None = None          # server default: a built-in name or an operator's .json profile file
    device: str | None = None           # model device (None: cuda if available)
    queue: int = 32                     # requests admitted at once (running + waiting); more get 503
    max_upload_mb: float = 20.0         # request body limit (413 above)
    max_pixels: int = 1 << 24           # image and .sedic pixel limit (413 above), checked before decoding
    cpu_workers: int = max(1, min(4, os.cpu_count() or 1))  # threads for reference search, coders, PNGs
    cors_origins: tuple[str, ...] = ()  # CORS stays off unless origins are named
    # built-in profiles clients may use besides `profile` (their models must be on the server:
    # a request never downloads anything)
    extra_profiles: tuple[str, ...] = ()
    # Host header names answered (DNS rebinding): the loopback names unless the operator widens them
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    max_connections: int = 256          # open connections; more are closed at once
    client_timeout: float = 10.0        # seconds for a request's headers; for its body, plus 1 s per 64 KiB
    warm: bool = True                   # load the profile's decoder at start-up
    # the AVIF reference's encoder effort for every compress (None: the profile's, 2); 1 costs a
    # Kodak-size request 2-3x less CPU (docs/reference-stream.md, "Round 3")
    effort: int | None = None
    # repr=False: the key never appears in logs or tracebacks that print the settings
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.queue < 1:
            raise InputError(f"--queue must be at least 1, got {self.queue}")
        if not 0 < self.max_upload_mb < float("inf"):
            raise InputError(f"--max-upload-mb must be positive and finite, got {self.max_upload_mb}")
        if self.max_pixels < 1:
            raise InputError(f"--max-pixels must be positive, got {self.max_pixels}")
        from ..config import PROFILES

        for name in self.extra_profiles:
            if name not in PROFILES:
                raise InputError(f"--allow-profile: unknown profile {name!r} (known: {', '.join(PROFILES)})")
        if not 0 < self.client_timeout < float("inf"):
            raise InputError(f"--client-timeout must be positive and finite, got {self.client_timeout}")
        if self.max_connections < 1:
            raise InputError(f"--max-connections must be at least 1, got {self.max_connections}")
        if self.cpu_workers < 1:
            raise InputError(f"--cpu-workers must be at least 1, got {self.cpu_workers}")
        if self.effort is not None:
            check_effort(self.effort)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @classmethod
    def from_env(cls, **kwargs) -> ServerSettings:
        """Settings with the API key taken from SEDIC_API_KEY (empty means no key)."""
        return cls(api_key=os.environ.get(API_KEY_ENV) or None, **kwargs)
