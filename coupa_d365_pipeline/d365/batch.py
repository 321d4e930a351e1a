"""OData ``$batch`` encoding and decoding (multipart/mixed, changesets) — pure functions.

F&O answers a ``$batch`` with HTTP 200 even when a part failed, so :func:`parse_batch_response`
returns every part's own status and body; callers must look at each one.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .odata import dumps

CRLF = "\r\n"


@dataclass
class BatchOperation:
    method: str  # POST | PATCH | DELETE | GET
    path: str  # relative to /data/, e.g. "VendorInvoiceHeaders" or "Set(key)"
    body: dict[str, Any] | None = None
    content_id: str = ""


@dataclass
class BatchPartResult:
    content_id: str
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Changeset:
    operations: list[BatchOperation] = field(default_factory=list)


def encode_batch(base_url: str, changesets: list[Changeset]) -> tuple[str, bytes]:
    """Return (content type, body) for a $batch request with one changeset per entry."""
    batch_boundary = f"batch_{uuid.uuid4().hex}"
    lines: list[str] = []
    next_id = 1
    for changeset in changesets:
        cs_boundary = f"changeset_{uuid.uuid4().hex}"
        lines += [f"--{batch_boundary}", f"Content-Type: multipart/mixed; boundary={cs_boundary}", ""]
        for op in changeset.operations:
            if not op.content_id:
                op.content_id = str(next_id)
            if op.content_id.isdigit():
                next_id = max(next_id, int(op.content_id) + 1)
            lines += [
                f"--{cs_boundary}",
                "Content-Type: application/http",
                "Content-Transfer-Encoding: binary",
                f"Content-ID: {op.content_id}",
                "",
                f"{op.method} {base_url.rstrip('/')}/data/{op.path} HTTP/1.1",
                "OData-Version: 4.0",
                "OData-MaxVersion: 4.0",
                "Content-Type: application/json;odata.metadata=minimal;charset=UTF-8",
                "Accept: application/json;odata.metadata=minimal",
                "",
            ]
            lines.append(dumps(op.body).decode("utf-8") if op.body is not None else "")
        lines.append(f"--{cs_boundary}--")
    lines.append(f"--{batch_boundary}--")
    lines.append("")
    return f"multipart/mixed; boundary={batch_boundary}", CRLF.join(lines).encode("utf-8")


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS = re.compile(r"^HTTP/1\.[01] (\d{3})")


def _split_parts(body: str, boundary: str) -> list[str]:
    delimiter = f"--{boundary}"
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            break
        parts.append(chunk.lstrip("\r\n") if chunk.startswith(("\r\n", "\n")) else chunk)
    return parts


def _split_headers(text: str) -> tuple[dict[str, str], str]:
    normalized = text.replace("\r\n", "\n")
    head, _, rest = normalized.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def parse_batch_response(content_type: str, body: bytes) -> list[BatchPartResult]:
    match = _BOUNDARY.search(content_type or "")
    if not match:
        raise ValueError(f"$batch response has no multipart boundary (Content-Type {content_type!r})")
    return _parse_multipart(body.decode("utf-8", errors="replace"), match.group(1))


def _parse_multipart(text: str, boundary: str) -> list[BatchPartResult]:
    results: list[BatchPartResult] = []
    for part in _split_parts(text, boundary):
        part_headers, payload = _split_headers(part)
        ctype = part_headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = _BOUNDARY.search(ctype)
            if inner:
                results += _parse_multipart(payload, inner.group(1))
            continue
        status_line, _, http_rest = payload.lstrip("\n").partition("\n")
        status_match = _STATUS.match(status_line.strip())
        if not status_match:
            continue
        http_headers, http_body = _split_headers(http_rest)
        http_body = http_body.strip()
        try:
            parsed: Any = json.loads(http_body) if http_body else None
        except ValueError:
            parsed = http_body
        content_id = part_headers.get("content-id") or http_headers.get("content-id", "")
        results.append(BatchPartResult(content_id, int(status_match.group(1)), http_headers, parsed))
    return results
