"""Shared OData vocabulary of the D365 sandbox: F&O's error shape, JSON encoding, ETags, key literals.

Invariants: :class:`ODataError` carries exactly what F&O answers (HTTP status, ``innererror.message``,
``innererror.type``, optional headers); :func:`dumps` writes ``Decimal`` as a JSON number (an integer when it is
integral and safe); :class:`Resp` is the transport-neutral answer every OData handler returns (plain requests
and ``$batch`` parts alike). Strings are compared case-insensitively (``_same``), as X++ does.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ODATA_EXCEPTION = "Microsoft.OData.ODataException"
WRITE_EXCEPTION = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
THROTTLE_MESSAGE = (
    "This request could not be processed at this time due to system experiencing high resource utilization."
)
JSON_CT = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"


class ODataError(Exception):
    """An F&O OData error: HTTP status + ``innererror.message`` + ``innererror.type``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "",
        outer_message: str = "An error has occurred.",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.outer_message = outer_message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": "",
                "message": self.outer_message,
                "innererror": {"message": self.message, "type": self.type, "stacktrace": ""},
            }
        }


def _bad_request(message: str) -> ODataError:
    return ODataError(400, message, ODATA_EXCEPTION)


def _query_error(message: str) -> ODataError:
    return ODataError(
        400, message, ODATA_EXCEPTION, outer_message=f"The query specified in the URI is not valid. {message}"
    )


def _not_found_segment(segment: str) -> ODataError:
    return ODataError(404, f"Resource not found for the segment '{segment}'.")


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _same(a: Any, b: Any) -> bool:
    return _norm(a) == _norm(b)


def split_display_value(text: str, delimiter: str = "-") -> list[str]:
    """Split a dimension display string; ``\\`` escapes the delimiter (``CC\\-10`` is the value ``CC-10``)."""
    segments: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and text.startswith(delimiter, i + 1):
            cur.append(delimiter)
            i += 1 + len(delimiter)
        elif text[i] == "\\" and i + 1 < len(text) and text[i + 1] == "\\":
            cur.append("\\")
            i += 2
        elif text.startswith(delimiter, i):
            segments.append("".join(cur))
            cur = []
            i += len(delimiter)
        else:
            cur.append(text[i])
            i += 1
    segments.append("".join(cur))
    return segments


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if obj == obj.to_integral_value() and abs(obj) < 2**53:
            return int(obj)
        return float(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)!r}")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default, ensure_ascii=False).encode("utf-8")


def to_jsonable(obj: Any) -> Any:
    return json.loads(dumps(obj))


def _etag(version: int) -> str:
    return 'W/"' + base64.b64encode(f"'1,{version}'".encode()).decode() + '"'


def _format_key_value(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value != 0 else "0"
    return str(value)


@dataclass
class Resp:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Resp:
        merged = {"Content-Type": JSON_CT, "OData-Version": "4.0"}
        merged.update(headers or {})
        return cls(status, dumps(obj), merged)

    @classmethod
    def error(cls, err: ODataError) -> Resp:
        return cls.json(err.status, err.body(), err.headers)
