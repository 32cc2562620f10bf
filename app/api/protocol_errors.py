"""Answers to requests that never reach the application: malformed HTTP (a control character in a
header, a header or request line over aiohttp's limits, a bad header name).

aiohttp's own answer is a text body that echoes the offending bytes, and it logs them with a
traceback: a token in such a header would land in both. Here the answer is the API's JSON error
object, and the log line names only the peer, the status and the error class.
"""

import http
import logging

from aiohttp import web, web_protocol

log = logging.getLogger(__name__)


class _RequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.info(
            "request from %s answered %d without reaching the API (%s)",
            request.remote,
            status,
            type(exc).__name__ if exc else "no detail",
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; it cannot turn into an error")
        phrase = http.HTTPStatus(status).phrase
        text = "malformed HTTP request" if status < 500 else phrase.lower()
        response = web.json_response(
            {"error": {"code": phrase.lower().replace(" ", "_"), "message": text}}, status=status
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections answer protocol errors as described above."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no setting for the connection class: the server only changes which one it makes.
        server.__class__ = _Server
        return server
