"""Exception and warning types shared by every layer.

The CLI turns any SedicError into one line on stderr and exit code 2, so every
error a user can cause (bad file, bad input, missing model) must be one of these.
"""


class SedicError(Exception):
    """An error caused by input or environment, reported to the user in one line."""


class BitstreamError(SedicError):
    """A .sedic file (or one of its streams) is truncated, corrupted, oversized or unsupported."""


class InputError(SedicError):
    """An input image, semantics JSON or option is invalid."""


class ModelUnavailableError(SedicError):
    """A model named by a profile cannot be loaded (offline, missing path, missing package)."""


class RateError(SedicError):
    """The requested rate cannot be met."""


class SedicWarning(UserWarning):
    """Something was changed or dropped on the user's behalf (alpha removed, empty mask dropped...)."""


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """A message as one line: every run of whitespace (newlines included) becomes one space; an
    exception of another library is prefixed by its type name (sedic's own messages say what
    failed); cut to `limit` characters with an ellipsis."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException) and not isinstance(exc, SedicError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return text
