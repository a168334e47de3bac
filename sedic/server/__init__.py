"""`sedic serve`: an HTTP API (FastAPI) and a web page over the Python API (docs/serve.md)."""

from .settings import ServerSettings


def create_app(settings: ServerSettings | None = None):
    """The FastAPI app; imported lazily so that `import sedic.server` does not need FastAPI."""
    from .app import create_app as _create

    return _create(settings)


__all__ = ["ServerSettings", "create_app"]
