"""The /v1 endpoints: each one reads uploads, takes a queue ticket and calls the Python API.

compress -> sedic.compress (and the profile's analysis when no semantics are uploaded);
inspect -> sedic.inspect; decompress -> sedic.decompress; the stream runs ONE sedic.decompress and
sends the image of every stage it can stop after as it is ready (stages=0, 1, ..., K+1; 0 and K+1
for the fused schedule; each equal to `sedic decompress --stages k`), with the decoder's steps as
progress events.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

import sedic

from .. import __version__, codec
from ..config import PROFILES, Profile, get_profile
from ..errors import InputError, SedicError
from ..semantics import SemanticObject, Semantics
from . import uploads
from .errors import Unauthorized, UnsupportedMedia, error_body, status_of
from .forms import schedule_form
from .jobs import JobCancelled, JobQueue, QueueFull, Ticket
from .settings import ServerSettings

SEDIC_MEDIA_TYPE = "application/x-sedic"
FILE_PARTS = ("image", "semantics", "masks", "file")
log = logging.getLogger("sedic.server")


@dataclass
class ServerState:
    settings: ServerSettings
    profile: Profile          # the server's default (an operator's .json profile file stays server-side)
    queue: JobQueue
    models: str = "not loaded"

    @property
    def profile_arg(self) -> str | None:
        """The server's profile as the Python API takes it: a built-in name or the operator's file path."""
        return self.settings.profile

    @property
    def served(self) -> list[Profile]:
        """The profiles this server runs: its own, then the operator's --allow-profile ones."""
        extra = [PROFILES[n] for n in self.settings.extra_profiles if n != self.profile.name]
        return [self.profile] + [p for p in extra if p.id != self.profile.id]

    def _served_names(self) -> str:
        return ", ".join(p.name for p in self.served)

    def profile_for_compress(self, name: str | None) -> str | None:
        """Clients name served built-in profiles only: never a path on the server, never a profile
        whose models the operator did not allow (a request must not make the server download)."""
        if name is None or name == self.profile.name:
            return self.profile_arg
        if name in (p.name for p in self.served):
            return name
        raise InputError(f"profile {name!r} is not served here (served: {self._served_names()}; "
                         f"the operator allows more with --allow-profile)")

    def profile_for_decode(self, parsed, stages: int | None) -> str | None:
        """The server's profile when the file names it (a profile file keeps its base's id), else the
        file's own, which must be served; the preview (stages=0) needs no model and is always given."""
        if parsed.params.profile_id == self.profile.id:
            return self.profile_arg
        if stages == 0 or any(p.id == parsed.params.profile_id for p in self.served):
            return None
        try:
            named = f"profile {parsed.profile.name!r}"
        except SedicError:
            named = f"an unknown profile (id {parsed.params.profile_id})"
        raise InputError(f"the file was made with {named}, which this server does not decode "
                         f"(served: {self._served_names()}); stages=0 gives its preview")


def warm_up_job(state: ServerState) -> None:
    """Load the decoder once: compress and fully decode a small one-object image with the public API."""
    image = np.full((64, 64, 3), 128, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    semantics = Semantics("a grey square", [SemanticObject("square", "a grey square", mask)])
    data = sedic.compress(image, bpp=None, reference_bpp=0.5, semantics=semantics, analyze=False,
                          profile=state.profile_arg, schedule={"object_steps": 1, "final_steps": 1})
    sedic.decompress(data, profile=state.profile_arg, device=state.settings.device)


async def warm_up(state: ServerState) -> None:
    state.models = "loading"
    try:
        await asyncio.wrap_future(state.queue.model_pool.submit(warm_up_job, state))
        state.models = "ready"
    except SedicError as exc:
        state.models = f"unavailable: {' '.join(str(exc).split())}"
    except Exception as exc:  # noqa: BLE001 - reported by /v1/health, the server keeps serving
        state.models = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"


@asynccontextmanager
async def cancel_on_disconnect(request: Request, ticket: Ticket, every: float = 0.25):
    """While the body of the block runs, a client that disconnects sets the ticket's cancel flag."""
    async def watch():
        while not ticket.cancel.is_set():
            if await request.is_disconnected():
                ticket.cancel.set()
                return
            await asyncio.sleep(every)

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def decoder_schedule(parsed, profile: str | None) -> str:
    return codec.decoder_settings(parsed, get_profile(profile) if profile else None).schedule


def stage_plan(parsed, profile: str | None) -> list[tuple[int, str]]:
    """(decoder stages, label) of each image the stream sends: the preview, then each stage that the
    file's schedule can stop after (sequential: every object, then overall; fused: one pass)."""
    from ..restoration.plan import plan_stages  # the decoder's own plan, not a copy of its rules

    settings = codec.decoder_settings(parsed, get_profile(profile) if profile else None)
    return [(0, "preview")] + [(s.stages, s.label) for s in plan_stages(parsed.semantics, settings)]


class ErrorBody(BaseModel):
    """Every error answer: one line, never a traceback (the CLI prints the same after `sedic: error:`)."""
    error: str
    status: int


def _error(description: str, headers: dict | None = None) -> dict[str, Any]:
    answer = {"model": ErrorBody, "description": description}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                             for name, text in headers.items()}
    return answer


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("bad option or input (rate, profile not served, semantics, form parts, stages, Host)"),
    401: _error("missing or wrong API key", {"WWW-Authenticate": "Bearer realm=\"sedic\""}),
    404: _error("no such endpoint"),
    405: _error("wrong method", {"Allow": "the methods of this path"}),
    408: _error("request body slower than the server's --client-timeout allows"),
    413: _error("body above --max-upload-mb, or an image, mask or file above --max-pixels"),
    415: _error("not multipart/form-data, or an upload that is not an accepted image"),
    422: _error("corrupt or truncated .sedic file, a rate that cannot be met, a malformed form field"),
    500: _error("a fault of the server itself, e.g. its TMPDIR removed (the traceback is in its log)"),
    503: _error("queue full (see Retry-After) or the profile's models are not available",
                {"Retry-After": "seconds until a slot is likely free (queue full only)"}),
}
RATE_HEADERS = {f"X-Sedic-{name}": {"description": text, "schema": {"type": "string"}} for name, text in (
    ("Bytes", "file size"), ("Bpp", "bits per pixel of the whole file"), ("Width", "pixels"), ("Height", "pixels"),
    ("Bits-Reference", "bits of the reference stream"), ("Bits-Text", "bits of the text stream"),
    ("Bits-Masks", "bits of the mask stream"), ("Bits-Header", "bits of the container header"),
    ("Warnings", "JSON list of what was changed on the client's behalf (alpha dropped, text cut...), if any"))}
STAGES_HEADERS = {"X-Sedic-Stages": {"description": "the stages decoded", "schema": {"type": "string"}}}
# Every header an answer may carry beyond HTTP's own: the OpenAPI responses declare them from
# here and a cross-origin page may read them all (app.py's CORS expose list).
RESPONSE_HEADERS = ("Content-Disposition", "Retry-After", "Allow", "WWW-Authenticate", *RATE_HEADERS, *STAGES_HEADERS)


def rate_headers(data: bytes) -> dict[str, str]:
    info = sedic.inspect(data)
    headers = {"X-Sedic-Bytes": str(info["bytes"]), "X-Sedic-Bpp": f"{info['bpp']:.6f}",
               "X-Sedic-Width": str(info["width"]), "X-Sedic-Height": str(info["height"])}
    for name, bits in info["streams"].items():
        headers[f"X-Sedic-Bits-{name.capitalize()}"] = str(bits)
    return headers


def mask_data_urls(parsed) -> list[str]:
    """Each object's decoded mask (on the decoder's latent grid, 1/8 of the image) as a PNG data URL."""
    return ["data:image/png;base64," + base64.b64encode(uploads.png_bytes(o.mask.astype(np.uint8) * 255)).decode()
            for o in parsed.semantics.objects]


def sse(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def build_router(state: ServerState) -> APIRouter:
    settings = state.settings
    bearer = HTTPBearer(auto_error=False, description="the server's SEDIC_API_KEY, when it has one")

    async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        if settings.api_key is None:
            return
        given = credentials.credentials if credentials is not None else ""
        # constant time: the comparison does not reveal how much of the key matched
        if not hmac.compare_digest(given.encode("utf-8"), settings.api_key.encode("utf-8")):
            raise Unauthorized("missing or wrong API key (send 'Authorization: Bearer <key>')")

    async def require_multipart(request: Request):
        kind = request.headers.get("content-type", "")
        media = kind.split(";")[0].strip().lower()
        if media != "multipart/form-data":  # `multipart/form-datax` too
            raise UnsupportedMedia(f"expected a multipart/form-data upload, got {media or 'no content type'}")
        form = await request.form()  # parsed once: FastAPI reads the same form for the fields
        for name in set(form.keys()):
            values = form.getlist(name)
            if len(values) > 1 and name != "masks":
                raise InputError(f"{len(values)} '{name}' parts: send one")
            for value in values:
                if isinstance(value, str) and value == "" and name not in FILE_PARTS:
                    raise InputError(f"'{name}' is empty: give a value or leave the part out for the default")
                if name in FILE_PARTS and isinstance(value, str):
                    raise InputError(f"'{name}' must be a file part with a file name (filename=\"...\"), "
                                     f"got a plain form field")

    # the bearer scheme is in /openapi.json only when this server has a key: a keyless server
    # declaring it told clients (and schemathesis) that a missing key would be refused
    keyed = [Depends(require_key)] if settings.api_key is not None else []
    router = APIRouter(prefix="/v1", dependencies=keyed, responses=ERROR_RESPONSES)
    upload = [Depends(require_multipart)]
    queue, limit = state.queue, settings.max_pixels

    async def read(part: UploadFile, default: str) -> tuple[bytes, str]:
        return await part.read(), uploads.safe_name(part.filename, default)

    @router.get("/health", summary="Liveness, model state and queue")
    async def health():
        return {"status": "ok", "version": __version__, "profile": state.profile.name,
                "device": settings.device or "auto", "models": state.models,
                "queue": {"capacity": queue.capacity, "in_flight": queue.in_flight,
                          "model_in_flight": queue.model_in_flight, **queue.counts},
                "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels}}

    @router.get("/profiles", summary="The profiles this server runs (clients may name these in compress)")
    async def profiles():
        return {"default": state.profile.name,
                "profiles": [{"name": p.name, "id": p.id, "description": p.description,
                              "default": p.name == state.profile.name} for p in state.served]}

    @router.post("/compress", dependencies=upload, response_class=Response, summary="Image in, .sedic bytes out",
                 responses={200: {"content": {SEDIC_MEDIA_TYPE: {}}, "headers": RATE_HEADERS,
                                  "description": "the .sedic file; size, bpp and bits per stream in "
                                                 "X-Sedic-* headers"}})
    async def compress(
        request: Request,
        image: UploadFile = File(..., description="PNG, JPEG, WebP, AVIF or HEIC/HEIF"),
        semantics: UploadFile | None = File(None, description="semantics JSON (see docs/analysis.md); "
                                            "each object's `mask` names one of the uploaded `masks`"),
        masks: list[UploadFile] | None = File(None, description="mask PNGs named as in the semantics JSON"),
        analyze: bool = Form(True, description="without uploaded semantics: run the profile's analysis "
                             "on the server (true) or code the reference alone (false)"),
        bpp: float | None = Form(0.03, description="target rate of the whole file; it never exceeds it"),
        reference_bpp: float | None = Form(None, description="cap of the reference stream alone"),
        profile: str | None = Form(None, description="a built-in profile name (default: the server's)"),
        seed: int = Form(0),
        best_effort: bool = Form(False),
        schedule: dict[str, Any] = Depends(schedule_form),  # object_steps, ...: sedic.schedule's fields
    ):
        chosen = state.profile_for_compress(profile or None)
        image_bytes, image_name = await read(image, "image")
        semantics_upload = await read(semantics, "semantics.json") if semantics is not None else None
        mask_uploads = {}
        for k, part in enumerate(masks or []):
            content, name = await read(part, f"mask{k}.png")
            mask_uploads[name] = content
        if mask_uploads and semantics_upload is None:
            raise InputError("mask files need the semantics JSON that names them")
        ticket = queue.admit(min(uploads.image_pixels(image_bytes), limit))
        try:
            async with cancel_on_disconnect(request, ticket):
                pixels = await ticket.run(uploads.decode_image, image_bytes, image_name, limit)
                if semantics_upload is not None:
                    sem = await ticket.run(uploads.load_semantics, *semantics_upload, mask_uploads,
                                           (pixels.shape[1], pixels.shape[0]), limit)
                elif analyze:
                    sem = await ticket.run(partial(sedic.analyze, pixels, profile=chosen, device=settings.device),
                                           model=True)
                else:
                    sem = None
                data = await ticket.run(partial(sedic.compress, pixels, bpp=bpp, reference_bpp=reference_bpp,
                                                semantics=sem, analyze=False, profile=chosen,
                                                best_effort=best_effort, seed=seed, schedule=schedule,
                                                effort=settings.effort))
                headers = await ticket.run(rate_headers, data)
        finally:
            ticket.close(cancelled=ticket.cancel.is_set())
        stem = image_name.rsplit(".", 1)[0] or "image"
        headers["Content-Disposition"] = f'attachment; filename="{stem}.sedic"'
        if ticket.warnings:
            headers["X-Sedic-Warnings"] = json.dumps(ticket.warnings)  # ASCII-escaped
        return Response(data, media_type=SEDIC_MEDIA_TYPE, headers=headers)

    @router.post("/inspect", dependencies=upload, summary="What a .sedic file holds (as `sedic inspect --json`)")
    async def inspect(file: UploadFile = File(..., description="a .sedic file"),
                      masks: bool = Query(False, description="add the decoded masks as PNG data URLs "
                                                             "(latent grid: 1/8 of the image size)")):
        data, _ = await read(file, "file.sedic")
        ticket = queue.admit(min(uploads.file_pixels(data), limit))
        try:
            parsed = await ticket.run(uploads.parse_sedic, data, limit)
            info = await ticket.run(sedic.inspect, data)
            if masks:
                info["masks"] = await ticket.run(mask_data_urls, parsed)
        finally:
            ticket.close()
        return info

    @router.post("/decompress", dependencies=upload, response_class=Response, summary="A .sedic file to PNG",
                 responses={200: {"content": {"image/png": {}}, "description": "the decoded image",
                                  "headers": STAGES_HEADERS}})
    async def decompress(request: Request, file: UploadFile = File(..., description="a .sedic file"),
                         stages: int | None = Form(None, description="0 = the preview, k = objects 1..k, "
                                                   "K+1 or empty = everything")):
        data, name = await read(file, "file.sedic")
        ticket = queue.admit(min(uploads.file_pixels(data), limit))
        try:
            async with cancel_on_disconnect(request, ticket):
                parsed = await ticket.run(uploads.parse_sedic, data, limit)
                decode = partial(sedic.decompress, data, profile=state.profile_for_decode(parsed, stages),
                                 stages=stages, device=settings.device, progress=ticket.progress_guard(),
                                 on_step=ticket.progress_guard())
                image = await ticket.run(decode, model=stages != 0)
                png = await ticket.run(uploads.png_bytes, image)
        finally:
            ticket.close(cancelled=ticket.cancel.is_set())
        done = len(parsed.semantics.objects) + 1 if stages is None else stages
        stem = name.rsplit(".", 1)[0] or "image"
        return Response(png, media_type="image/png",
                        headers={"X-Sedic-Stages": str(done),
                                 "Content-Disposition": f'attachment; filename="{stem}.png"'})

    @router.post("/decompress/stream", dependencies=upload, summary="Decode stage by stage (Server-Sent Events)",
                 response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {}}, "description":
                                  "events: `info` (size, texts, total), then per stage `stage` (it starts) and "
                                  "`image` (index, label, base64 PNG), then `done`; `error` ends a failed stream"}})
    async def decompress_stream(file: UploadFile = File(..., description="a .sedic file"),
                                stages: int | None = Form(None, description="stop after this stage "
                                                          "(default: all, K+1)")):
        data, _ = await read(file, "file.sedic")
        ticket = queue.admit(min(uploads.file_pixels(data), limit))
        try:
            parsed = await ticket.run(uploads.parse_sedic, data, limit)
            profile = state.profile_for_decode(parsed, stages)
            plan = stage_plan(parsed, profile)
            if stages is not None:
                if stages not in [value for value, _ in plan]:
                    raise InputError(f"--stages must be one of {', '.join(str(v) for v, _ in plan)} for this file "
                                     f"({len(parsed.semantics.objects)} objects, "
                                     f"{decoder_schedule(parsed, profile)} schedule)")
                plan = [(value, label) for value, label in plan if value <= stages]
            info = await ticket.run(sedic.inspect, data)
        except BaseException:
            ticket.close()
            raise
        total = len(plan) - 1

        async def decode_events():
            """ONE decode up to the plan's last stage on the model thread; yield its steps and each
            stage's image (equal to a decode with stages=k) as they happen."""
            loop = asyncio.get_running_loop()
            events_in: asyncio.Queue = asyncio.Queue()
            wanted = {value for value, _ in plan}

            def push(kind, payload):
                loop.call_soon_threadsafe(events_in.put_nowait, (kind, payload))

            def on_step(stage, stages_run, step, count):
                ticket.check()  # a client that left stops the decode at the next step
                push("step", {"stage": stage, "stages": stages_run, "step": step, "steps": count})

            def on_image(value, image):
                if value in wanted:
                    push("image", (value, image))

            decode = partial(sedic.decompress, data, profile=profile, stages=plan[-1][0], device=settings.device,
                             progress=ticket.progress_guard(), on_step=on_step, on_image=on_image)
            job = asyncio.ensure_future(ticket.run(decode, model=plan[-1][0] > 0))
            getter = None
            try:
                while not job.done() or not events_in.empty():
                    getter = asyncio.ensure_future(events_in.get())
                    await asyncio.wait({job, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                job.result()  # a failed decode raises here
            finally:
                for task in (job, getter):
                    if task is not None:
                        task.cancel()

        async def events():
            finished = False
            try:
                yield sse("info", {**info, "total": total, "labels": [label for _, label in plan],
                                   "stages": [value for value, _ in plan]})
                index = {value: k for k, (value, _) in enumerate(plan)}
                running = 0  # the plan entry whose image comes next
                yield sse("stage", {"index": 0, "total": total, "stages": plan[0][0], "label": plan[0][1]})
                async for kind, payload in decode_events():
                    if kind == "step":
                        yield sse("step", {"index": running, **payload})
                        continue
                    value, image = payload
                    k = index[value]
                    png = await ticket.run(uploads.png_bytes, image)
                    yield sse("image", {"index": k, "total": total, "stages": value, "label": plan[k][1],
                                        "png": base64.b64encode(png).decode("ascii")})
                    running = k + 1
                    if running < len(plan):
                        yield sse("stage", {"index": running, "total": total, "stages": plan[running][0],
                                            "label": plan[running][1]})
                yield sse("done", {"stages": plan[-1][0], "warnings": ticket.warnings})
                finished = True
            except (SedicError, QueueFull) as exc:
                yield sse("error", error_body(status_of(exc), str(exc)))
                finished = True
            except JobCancelled:
                raise
            except Exception:  # the traceback to the server log; the client gets one line
                log.exception("unexpected error while streaming a decode")
                yield sse("error", error_body(500, "internal error (see the server log)"))
                finished = True
            finally:
                # a client that left (the task is cancelled at the next await) stops the work
                ticket.close(cancelled=not finished)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router
