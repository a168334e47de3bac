"""serve: the HTTP API and web page (sedic.server, docs/serve.md)."""

from __future__ import annotations

import os
import socket
import sys

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API (/v1, docs at /docs) and the web page (/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--profile", default=None, help="default profile for compress and the decoder to keep warm: "
                   "sedic (default), sd15-tile, test, or a .json profile file on the server")
    p.add_argument("--allow-profile", action="append", default=[], metavar="NAME",
                   help="a built-in profile clients may use besides --profile (repeatable; its models must be "
                   "downloaded already: the server never downloads on a request)")
    p.add_argument("--device", default=None, help="device for the models (default: cuda if available)")
    p.add_argument("--queue", type=int, default=32, help="requests admitted at once, running or waiting "
                   "(default 32); more get HTTP 503 with Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20 MB; 413 above)")
    p.add_argument("--max-pixels", type=int, default=1 << 24, help="largest image or decoded file in pixels "
                   "(default 16777216; 413 above), checked before decoding")
    p.add_argument("--cpu-workers", type=int, default=None, help="threads for reference search, coders and PNGs "
                   "(default: up to 4, one per core)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from this origin (repeatable; default: CORS off)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host header name to answer besides localhost, 127.0.0.1, ::1 and --host (repeatable; "
                   "'*' answers any: DNS rebinding then reaches a server without an API key)")
    p.add_argument("--max-connections", type=int, default=256, help="open connections at once (default 256; "
                   "more are closed at once)")
    p.add_argument("--client-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a client has for a request's headers, and for its body plus one second per "
                   "64 KiB (default 10; slower clients are cut off)")
    p.add_argument("--effort", type=int, default=None, help="AVIF reference encoder effort of every compress "
                   "(0, 1 or 2; default: the profile's, 2); 1 takes a Kodak-size request 2-3x less CPU")
    p.add_argument("--no-warm", action="store_true", help="do not load the decoder at start-up")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    try:
        import uvicorn

        from ..server import ServerSettings, create_app
    except ImportError as exc:
        raise InputError(f"sedic serve needs the serve extra: pip install 'sedic[serve]' ({exc})") from None
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    _never_download()
    options = {"cpu_workers": args.cpu_workers} if args.cpu_workers is not None else {}
    settings = ServerSettings.from_env(profile=args.profile, device=args.device, queue=args.queue,
                                       max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                                       cors_origins=tuple(args.cors_origin), warm=not args.no_warm,
                                       extra_profiles=tuple(args.allow_profile),
                                       allowed_hosts=_host_names(args.host, args.allowed_host),
                                       max_connections=args.max_connections, client_timeout=args.client_timeout,
                                       effort=args.effort,
                                       **options)
    app = create_app(settings)
    sock = _listen(args.host, args.port)  # before announcing the URL: a port in use is a one-line error
    key = "API key required (SEDIC_API_KEY)" if settings.api_key else "no API key"
    if "*" not in settings.allowed_hosts:
        key += f"; answers Host {', '.join(settings.allowed_hosts)} (more with --allowed-host)"
    print(f"sedic serve: http://{args.host}:{args.port}/ (API /v1, docs /docs), "
          f"profile {app.state.sedic.profile.name}, {key}", file=sys.stderr, flush=True)
    from ..server.protocol import guarded_protocol

    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           server_header=False, timeout_keep_alive=5,
                                           http=guarded_protocol(settings.client_timeout, settings.max_connections)))
    with sock:
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down gracefully, then re-raised it (as uvicorn.run)
            pass
    return 0 if server.started else 1


def _host_names(host: str, extra: list[str]) -> tuple[str, ...]:
    """Host header names this server answers: the loopback names, the bound address unless it is a
    wildcard (0.0.0.0 and :: are reached under names only the operator knows), and --allowed-host."""
    from ..server.settings import LOOPBACK_NAMES

    bound = () if host in ("0.0.0.0", "::", "") else (host,)
    return tuple(dict.fromkeys((*LOOPBACK_NAMES, *bound, *extra)))


def _never_download() -> None:
    """The server runs offline: models come from the local cache (`sedic models download`), and no
    request (a profile name, a file naming another profile) makes it reach the hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "huggingface_hub.constants" in sys.modules:  # already imported: it read the variable at import
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True


def _listen(host: str, port: int) -> socket.socket:
    """The bound listening socket for uvicorn (it would log a bind error and exit with status 3)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse the port
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
