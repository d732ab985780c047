"""No request's body may pass MAX_UPLOAD_BYTES, however it is sent.

A Content-Length over the cap is answered 413 before a byte is read. A body sent without one (chunked) is counted as
it arrives, and once past the cap the app is told the client went away and the client gets 413. Gradio's own limit,
max_file_size, is per file: its multipart routes take up to 1000 files a request, so one chunked upload could write
10 GB to its temp folder, and its component server reads every file of a request into memory (an outsider's attack
wrote 72 MB with one request). The event routes have their own, smaller cap (web.events, web.sessions).

An upload carries one file, as the page's uploads do: the upload gate (web.uploads) counts requests, and 999 files in
one request were counted as one (an outsider's attack), each a folder and a file in Gradio's temp folder. Its parts
are counted as they arrive, and a second one is refused the same way.
"""

from __future__ import annotations

import logging

from python_multipart.multipart import parse_options_header

from mascot.web.identity import ASGIApp, Message, Receive, Scope, Send, first_header
from mascot.web.uploads import MAX_UPLOAD_BYTES, TOO_LARGE, answer, is_upload

logger = logging.getLogger(__name__)

REQUEST_TOO_LARGE = f"This request is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB, the most we take."
MAX_FILES_PER_UPLOAD = 1
TOO_MANY_FILES = "Upload one file at a time."
MALFORMED_UPLOAD = "This upload is malformed: upload the file again from the page."


class BodyLimitMiddleware:
    """Pure ASGI, just inside the cross-site guard: see the module's docstring."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Answered as the upload gate answers (web.uploads.answer: Connection: close, for a client still sending).
        sentence = TOO_LARGE if is_upload(scope) else REQUEST_TOO_LARGE
        length = first_header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            await answer(send, 413, sentence)
            return
        parts = MultipartParts.of(scope) if is_upload(scope) else None
        if parts is not None and parts.malformed:
            await answer(send, 400, MALFORMED_UPLOAD)
            return
        body = CappedBody(receive, self.max_bytes, parts)
        held = HeldWhenTooLarge(send, body)
        try:
            await self.app(scope, body.receive, held.send)
        except Exception:
            if not body.too_large:
                raise
            # The app's parser met the disconnect we made up: the refusal below is the answer.
        if body.too_large and not held.started:
            if parts is not None and parts.too_many:
                logger.info("Refused an upload of more than %d file(s)", MAX_FILES_PER_UPLOAD)
                await answer(send, 413, TOO_MANY_FILES)
                return
            logger.info("Refused a request whose body passed %d bytes: %s", self.max_bytes, scope.get("path"))
            await answer(send, 413, sentence)


class MultipartParts:
    """Counts the parts of a multipart body as it goes by: each begins with the delimiter `--<boundary>` followed by
    anything but `--`, which ends the body. The parser splits only where a line break comes before the delimiter, so
    content holding `--<boundary>` would be over-counted here: that refuses a file, never lets one more through (and a
    browser's boundary is random)."""

    def __init__(self, boundary: bytes, max_parts: int = MAX_FILES_PER_UPLOAD) -> None:
        self.malformed = not boundary  # Gradio would parse with an empty boundary; no browser sends one
        self.delimiter = b"--" + boundary
        self.max_parts = max_parts
        self.parts = 0
        # What came last that may still hold a delimiter not yet counted: one split over two chunks, or one whose
        # next two bytes (`--` or not) have not come yet.
        self._held = b""

    @classmethod
    def of(cls, scope: Scope) -> MultipartParts | None:
        """For a multipart request, with its boundary read as Gradio's parser reads it (python-multipart's
        parse_options_header over the first Content-Type: a parameter named twice, its last value); None for any
        other request, which Gradio refuses itself."""
        content_type, options = parse_options_header(first_header(scope, b"content-type") or "")
        if content_type != b"multipart/form-data":
            return None
        return cls(options.get(b"boundary", b""))

    def read(self, chunk: bytes) -> None:
        data, size = self._held + chunk, len(self.delimiter)
        counted_to = 0  # where the text not yet searched starts
        while (found := data.find(self.delimiter, counted_to)) >= 0:
            after = data[found + size : found + size + 2]
            if len(after) < 2:  # decided by bytes still to come: searched again with them
                self._held = data[found:]
                return
            self.parts += after != b"--"
            counted_to = found + size
        self._held = data[max(counted_to, len(data) - size + 1) :]

    @property
    def too_many(self) -> bool:
        """More parts than allowed have begun."""
        return self.parts > self.max_parts


class CappedBody:
    """The request's `receive`, counting body bytes (and, given `parts`, a multipart body's parts): past the cap, the
    app hears a disconnect from then on."""

    def __init__(self, receive: Receive, max_bytes: int, parts: MultipartParts | None = None) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.parts = parts
        self.size = 0
        self.too_large = False

    async def receive(self) -> Message:
        if self.too_large:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = bytes(message.get("body", b""))
            self.size += len(chunk)
            if self.parts is not None:
                self.parts.read(chunk)
            if self.size > self.max_bytes or (self.parts is not None and self.parts.too_many):
                self.too_large = True
                return {"type": "http.disconnect"}
        return message


class HeldWhenTooLarge:
    """The app's `send`, passed on unless the body passed the cap before the app began its answer: then the app's
    answer (an error about a cut body) is dropped for the refusal."""

    def __init__(self, send: Send, body: CappedBody) -> None:
        self._send = send
        self.body = body
        self.started = False

    async def send(self, message: Message) -> None:
        if self.body.too_large and not self.started:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)
