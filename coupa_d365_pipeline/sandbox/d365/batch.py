"""``$batch`` of the D365 sandbox: multipart/mixed parsing, atomic changesets, the multipart answer.

Invariants (as ASP.NET OData answers F&O's ``$batch``): the outer response is always 200 unless the whole
batch is throttled (429) or unreadable (400); a changeset is atomic — it runs under the store's lock inside one
journal, and the first failing request rolls it back and is answered alone, as a single ``application/http``
part carrying its Content-ID; a ``$batch`` counts as one operation per inner request against the request
budget and is throttled whole when the budget cannot take all of them; batches do not nest.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .odata import ODataError, Resp, _bad_request, _not_found_segment

if TYPE_CHECKING:
    from .state import D365State

# (method, subpath, query, headers, body) -> the answer; the sandbox's plain OData dispatcher
Handler = Callable[[str, str, str, dict[str, str], bytes], Resp]

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def handle_batch(
    content_type: str,
    body: bytes,
    *,
    state: D365State,
    handle: Handler,
    consume_budget: Callable[[int], bool],
    throttled: Callable[[], Resp],
) -> Resp:
    """Serve one ``$batch`` request: parse it, take its operations from the budget, run it."""
    boundary = _boundary(content_type)
    if not content_type.lower().startswith("multipart/mixed") or not boundary:
        return Resp.error(
            _bad_request("The content type of a $batch request must be multipart/mixed with a boundary parameter.")
        )
    try:
        parts = _split_multipart(body.decode("utf-8"), boundary)
        items: list[tuple[str, Any]] = []
        for part_headers, part_body in parts:
            ctype = part_headers.get("content-type", "")
            if ctype.lower().startswith("multipart/mixed"):
                inner_boundary = _boundary(ctype)
                if not inner_boundary:
                    raise _bad_request("A changeset part lacks a boundary parameter.")
                changeset = [(h, _parse_http_request(b)) for h, b in _split_multipart(part_body, inner_boundary)]
                items.append(("changeset", changeset))
            else:
                items.append(("single", (part_headers, _parse_http_request(part_body))))
    except ODataError as err:
        return Resp.error(err)
    except UnicodeDecodeError:
        return Resp.error(_bad_request("The $batch body is not valid UTF-8."))
    operations = sum(len(v) if kind == "changeset" else 1 for kind, v in items) or 1
    if not consume_budget(operations):
        return throttled()
    out_boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[str] = []
    for kind, value in items:
        if kind == "single":
            part_headers, req = value
            resp = _run_part(handle, req)
            chunks.append(_http_part(part_headers.get("content-id"), resp))
            continue
        state.begin()
        responses: list[str] = []
        failed: str | None = None
        try:
            for part_headers, req in value:
                resp = _run_part(handle, req)
                if resp.status >= 400:
                    failed = _http_part(part_headers.get("content-id"), resp)
                    break
                responses.append(_http_part(part_headers.get("content-id"), resp))
        except BaseException:
            state.rollback()
            raise
        if failed is not None:
            state.rollback()
            chunks.append(failed)
        else:
            state.commit()
            cs_boundary = f"changesetresponse_{uuid.uuid4()}"
            inner = "".join(f"--{cs_boundary}\r\n{r}" for r in responses) + f"--{cs_boundary}--\r\n"
            chunks.append(f"Content-Type: multipart/mixed; boundary={cs_boundary}\r\n\r\n{inner}")
    text = "".join(f"--{out_boundary}\r\n{c}" for c in chunks) + f"--{out_boundary}--\r\n"
    return Resp(
        200, text.encode("utf-8"), {"Content-Type": f"multipart/mixed; boundary={out_boundary}", "OData-Version": "4.0"}
    )


def _run_part(handle: Handler, req: tuple[str, str, dict[str, str], bytes]) -> Resp:
    method, url, headers, body = req
    split = urlsplit(url)
    path = unquote(split.path)
    if split.scheme or path.startswith("/"):
        if not path.startswith("/data/") and path != "/data":
            return Resp.error(_not_found_segment(path.strip("/").split("/")[0]))
        path = path[len("/data") :]
    if path.strip("/") == "$batch":
        return Resp.error(_bad_request("A $batch request cannot be nested in a $batch request."))
    return handle(method, path, split.query, headers, body)


def _boundary(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        k, _, v = piece.strip().partition("=")
        if k.strip().lower() == "boundary":
            return v.strip().strip('"')
    return None


def _parse_headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers


def _split_multipart(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    """Split a multipart body into (headers, body) parts; tolerant of CRLF/LF and trailing spaces."""
    text = text.replace("\r\n", "\n")
    delim, end = f"--{boundary}", f"--{boundary}--"
    parts: list[list[str]] = []
    current: list[str] | None = None
    closed = False
    for line in text.split("\n"):
        stripped = line.rstrip()
        if stripped == end:
            if current is not None:
                parts.append(current)
            current = None
            closed = True
            break
        if stripped == delim:
            if current is not None:
                parts.append(current)
            current = []
            continue
        if current is not None:
            current.append(line)
    if not closed:
        raise _bad_request(f"The multipart body is missing its closing boundary '--{boundary}--'.")
    out = []
    for lines in parts:
        block = "\n".join(lines)
        head, sep, rest = block.partition("\n\n")
        if not sep:
            head, rest = block, ""
        out.append((_parse_headers(head), rest.rstrip("\n")))
    return out


def _parse_http_request(text: str) -> tuple[str, str, dict[str, str], bytes]:
    text = text.lstrip("\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    request_line = lines[0].split()
    if len(request_line) < 2 or request_line[0].upper() not in ("GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"):
        raise _bad_request(f"Invalid request line in $batch part: '{lines[0]}'.")
    return request_line[0].upper(), request_line[1], _parse_headers("\n".join(lines[1:])), body.strip().encode("utf-8")


def _http_part(content_id: str | None, resp: Resp) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, '')}".rstrip()]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    body = resp.body.decode("utf-8")
    return head + "\r\n" + "\r\n".join(lines) + "\r\n\r\n" + (body + "\r\n" if body else "")
