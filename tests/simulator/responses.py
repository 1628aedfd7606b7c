"""HTTP responses of the ICR simulator: one ``Response`` type and the NestJS / nginx bodies it sends."""

from __future__ import annotations

import http
import json
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"


class Response:
    """What a route answers; ``reset=True`` drops the connection instead (an RST, no bytes)."""

    __slots__ = ("status", "headers", "body", "reset")

    def __init__(self, status: int, body: bytes = b"", headers: list | None = None, reset: bool = False):
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.reset = reset


def json_response(status: int, obj: Any, headers: list | None = None) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", JSON_TYPE)] + (headers or []))


def error(status: int, message: Any, extra: dict | None = None, headers: list | None = None) -> Response:
    """A NestJS-style error: ``{"statusCode", "message", "error"}`` (+ ``extra``)."""
    obj = {"statusCode": status, "message": message, "error": http.HTTPStatus(status).phrase}
    if extra:
        obj.update(extra)
    return json_response(status, obj, headers)


def gateway_html(status: int) -> Response:
    """The HTML page an nginx in front of the API answers with on 502/504."""
    phrase = http.HTTPStatus(status).phrase
    body = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    return Response(status, body, [("Content-Type", "text/html")])
