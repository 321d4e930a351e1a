"""The D365 F&O Data Management (DMF) package API, over :class:`~.client.D365Client`'s transport.

Every call goes through the client's :class:`~coupa_d365_pipeline.common.http.RetryingSender` and
Entra token (retries, ``Retry-After``, the circuit breaker live there, nowhere else). Actions are
``POST /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.<Action>``
(/work/shared/reference/d365-fo-api.md §7):

``GetAzureWriteUrl`` -> ``PUT`` the ZIP to the SAS URL (``x-ms-blob-type: BlockBlob``) ->
``ImportFromPackage`` -> poll ``GetExecutionSummaryStatus`` -> on ``PartiallySucceeded``/``Failed``
``GetExecutionErrors`` and, per entity, ``GenerateImportTargetErrorKeysFile`` +
``GetImportTargetErrorKeysFileUrl`` -> read the landed rows back through OData
(:meth:`DmfClient.read_back_many`: one query per entity set).

Crash safety: ``ImportFromPackage`` starts work and is **never** sent twice blindly. The caller
records the execution id *before* :meth:`DmfClient.import_package`, which first asks
``GetExecutionSummaryStatus`` whether that id exists and only posts when it does not. An ambiguous
answer to the POST raises :class:`DmfSubmissionUnknownError`; calling ``import_package`` again with
the same id is the way to settle it. A 400 saying the execution id already exists is taken as "it
was submitted" (the sandbox answers so; what real F&O does with a duplicate id is not documented).

The zero-row trap: a package whose entity mapping is missing "succeeds" with zero rows (§7.1
pitfall 1), so ``Succeeded`` proves nothing by itself. :meth:`DmfClient.read_back` looks every
packaged row up by its key and :class:`ImportCheck` says which ones are missing; after a clean
``Succeeded`` an entity may be spot-checked instead (a sample of its documents, read in full when
the sample is incomplete): the trap is all-or-nothing per entity, row failures are reported.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..common.http import AmbiguousWriteError, HTTPClientError
from . import odata
from .client import D365Client, D365Error
from .dmf_package import DMF_ENTITIES, DmfPackage, PackagedEntity

BOUND_TO = "DataManagementDefinitionGroups"
NOT_FOUND_MARKERS = ("not found", "were not found", "does not exist")


class DmfExecutionStatus(StrEnum):
    """``GetExecutionSummaryStatus`` values (§7). ``Unknown``/``NotRun``/``Executing`` are not final."""

    UNKNOWN = "Unknown"
    NOT_RUN = "NotRun"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_final(self) -> bool:
        return self in (self.SUCCEEDED, self.PARTIALLY_SUCCEEDED, self.FAILED, self.CANCELED)


class DmfError(HTTPClientError):
    """The DMF API answered something that is not a usable result."""


class DmfSubmissionUnknownError(AmbiguousWriteError):
    """``ImportFromPackage`` failed in a way that leaves open whether D365 took it. Call
    :meth:`DmfClient.import_package` again with the same execution id: it checks before posting."""

    def __init__(self, message: str, *, execution_id: str) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class DmfTimeoutError(DmfError):
    """The execution was still not final when the wait ended; poll again later with the same id."""

    def __init__(self, message: str, *, execution_id: str, last: DmfExecutionStatus) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.last = last


class BlobWriteUrl(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    blob_id: str = Field(alias="BlobId")
    blob_url: str = Field(alias="BlobUrl")

    def __repr__(self) -> str:  # the SAS signature is a credential: never print it
        return (
            f"BlobWriteUrl(blob_id={self.blob_id!r}, blob_url={str(httpx.URL(self.blob_url).copy_with(query=None))!r})"
        )

    __str__ = __repr__


class ExecutionStatusReport(BaseModel):
    """One answer of ``GetExecutionSummaryStatus``. ``found=False``: the execution record does not
    exist (yet) — right after ``ImportFromPackage`` that means pending (§7.1 pitfall 6)."""

    model_config = ConfigDict(frozen=True)

    execution_id: str
    status: DmfExecutionStatus
    found: bool = True

    @property
    def is_final(self) -> bool:
        return self.found and self.status.is_final


class DmfRowError(BaseModel):
    """One error of an execution; ``keys`` (staging field -> value) name the failing row when known."""

    model_config = ConfigDict(frozen=True)

    entity_name: str = ""
    message: str
    row_number: int | None = None
    keys: dict[str, str] = Field(default_factory=dict)


class EntityCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    entity_set: str
    sent: int
    found: dict[tuple[Any, ...], dict[str, Any]]  # packaged key -> the row D365 holds
    missing: tuple[tuple[Any, ...], ...]
    spot_checked: bool = False  # only a sample was read back (and found): the other rows are inferred


class ImportCheck(BaseModel):
    """What D365 holds after an import, compared with what the package carried."""

    model_config = ConfigDict(frozen=True)

    entities: tuple[EntityCheck, ...]

    @property
    def sent(self) -> int:
        return sum(e.sent for e in self.entities)

    @property
    def landed(self) -> int:
        return sum(len(e.found) for e in self.entities)

    @property
    def complete(self) -> bool:
        return all(not e.missing for e in self.entities)

    @property
    def nothing_landed(self) -> bool:
        """Rows were sent and none is in D365: the zero-row trap when the status said Succeeded."""
        return self.sent > 0 and self.landed == 0

    def entity(self, entity_set: str) -> EntityCheck | None:
        return next((e for e in self.entities if e.entity_set == entity_set), None)


def _value(response: httpx.Response) -> Any:
    try:
        return response.json().get("value")
    except (ValueError, AttributeError):
        raise DmfError(f"D365 DMF answered HTTP {response.status_code} without a JSON 'value'") from None


def _key_text(value: Any) -> str:
    """A key value as F&O compares it: numbers by value (``1`` = ``1.0``), text case-insensitively."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return format(Decimal(str(value)).normalize(), "f")
    return odata.fold(value)


def parse_errors(value: Any) -> list[DmfRowError]:
    """``GetExecutionErrors``' value: documented only as "a set of error messages in a JSON list";
    a JSON-encoded string or a list, of strings or objects (shape UNCONFIRMED, so read both)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            return [DmfRowError(message=value)]
    if not isinstance(value, list):
        return [DmfRowError(message=str(value))] if value else []
    errors: list[DmfRowError] = []
    for item in value:
        if isinstance(item, dict):
            row = item.get("RowNumber")
            errors.append(
                DmfRowError(
                    entity_name=str(item.get("EntityName") or ""),
                    message=str(item.get("ErrorMessage") or item.get("Message") or item),
                    row_number=int(row) if isinstance(row, int) else None,
                    keys={str(k): str(v) for k, v in (item.get("Keys") or {}).items()},
                )
            )
        else:
            errors.append(DmfRowError(message=str(item)))
    return errors


def parse_key_file(data: bytes) -> list[dict[str, str]]:
    """An error-keys file (CSV with a header row; UTF-16 or UTF-8, with or without BOM)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    else:
        text = data.decode("utf-8-sig")
    return [dict(row) for row in csv.DictReader(io.StringIO(text, newline=""))]


class DmfClient:
    """The DMF package API for one F&O environment. ``sleep``/``monotonic`` are injectable so a poll
    can be tested without waiting."""

    def __init__(
        self,
        d365: D365Client,
        *,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.d365 = d365
        self.logger = logger or d365.logger
        self.sleep = sleep
        self.monotonic = monotonic

    def _call(self, action: str, body: dict[str, Any], *, idempotent: bool = True) -> httpx.Response:
        return self.d365.action(BOUND_TO, action, body, idempotent=idempotent)

    def _ok(self, action: str, body: dict[str, Any]) -> Any:
        response = self._call(action, body)
        self.d365.raise_for(response, f"DMF {action}")
        return _value(response)

    # -- upload ------------------------------------------------------------------------------
    def get_write_url(self, unique_file_name: str) -> BlobWriteUrl:
        """``GetAzureWriteUrl``: its value is a JSON string holding BlobId and BlobUrl (a SAS URL)."""
        value = self._ok("GetAzureWriteUrl", {"uniqueFileName": unique_file_name})
        try:
            return BlobWriteUrl.model_validate(json.loads(value) if isinstance(value, str) else value)
        except ValueError as exc:
            raise DmfError(f"D365 GetAzureWriteUrl answered no BlobId/BlobUrl: {type(exc).__name__}") from None

    def upload(self, blob: BlobWriteUrl, content: bytes) -> None:
        """PUT the package to the blob (``x-ms-blob-type: BlockBlob``; a PUT is safe to retry)."""
        response = self.d365.storage(
            "PUT",
            blob.blob_url,
            content=content,
            headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/zip"},
        )
        if response.status_code not in (200, 201):
            raise DmfError(
                f"blob upload of {blob.blob_id} answered HTTP {response.status_code}: the SAS URL may have "
                "expired; ask GetAzureWriteUrl for a new one"
            )

    # -- import and status -------------------------------------------------------------------
    def status(self, execution_id: str) -> ExecutionStatusReport:
        """``GetExecutionSummaryStatus``; a 400 "…not found" is ``found=False`` (pending, or never submitted)."""
        response = self._call("GetExecutionSummaryStatus", {"executionId": execution_id})
        if response.status_code == 400:
            try:
                self.d365.raise_for(response, "DMF GetExecutionSummaryStatus")
            except D365Error as exc:
                if any(m in exc.detail.casefold() for m in NOT_FOUND_MARKERS):
                    return ExecutionStatusReport(
                        execution_id=execution_id, status=DmfExecutionStatus.UNKNOWN, found=False
                    )
                raise
        self.d365.raise_for(response, "DMF GetExecutionSummaryStatus")
        value = _value(response)
        try:
            status = DmfExecutionStatus(str(value))
        except ValueError:
            raise DmfError(f"D365 GetExecutionSummaryStatus answered an unknown status {value!r}") from None
        return ExecutionStatusReport(execution_id=execution_id, status=status)

    def import_package(
        self,
        *,
        package_url: str,
        definition_group: str,
        execution_id: str,
        legal_entity: str,
        execute: bool = True,
        overwrite: bool = True,
    ) -> str:
        """``ImportFromPackage`` with a caller-chosen execution id (record it first). Posts only when
        ``GetExecutionSummaryStatus`` does not know the id, so a resumed run never imports twice."""
        if not execution_id:
            raise ValueError("pass an execution id (and record it before calling): an empty one cannot be resumed")
        known = self.status(execution_id)
        if known.found:
            self.logger.warning(
                "DMF: execution %s already exists (%s); not submitting again", execution_id, known.status
            )
            return execution_id
        body = {
            "packageUrl": package_url,
            "definitionGroupId": definition_group,
            "executionId": execution_id,
            "execute": execute,
            "overwrite": overwrite,
            "legalEntityId": legal_entity,
        }
        try:
            response = self._call("ImportFromPackage", body, idempotent=False)
        except AmbiguousWriteError as exc:
            raise DmfSubmissionUnknownError(
                f"DMF ImportFromPackage for execution {execution_id}: outcome unknown ({exc}); call "
                "import_package again with the same execution id: it checks the status before posting",
                execution_id=execution_id,
            ) from None
        if response.status_code == 400:
            detail = response.text.casefold()
            if "already exists" in detail and "execution" in detail:
                self.logger.warning("DMF: execution %s was already submitted; not importing again", execution_id)
                return execution_id
        self.d365.raise_for(response, "DMF ImportFromPackage")
        returned = str(_value(response) or "")
        if returned and returned != execution_id:
            raise DmfError(f"D365 ImportFromPackage answered execution id {returned!r}, not {execution_id!r}")
        return execution_id

    def submit(self, package: DmfPackage, *, execution_id: str, unique_file_name: str | None = None) -> str:
        """Upload ``package`` and import it under ``execution_id``; a no-op when that id already exists
        (so resuming after a crash neither re-uploads nor re-imports)."""
        if self.status(execution_id).found:
            self.logger.warning("DMF: execution %s already exists; not uploading or submitting again", execution_id)
            return execution_id
        blob = self.get_write_url(unique_file_name or f"{execution_id}.zip")
        self.upload(blob, package.content)
        return self.import_package(
            package_url=blob.blob_url,
            definition_group=package.definition_group,
            execution_id=execution_id,
            legal_entity=package.legal_entity,
        )

    def wait(
        self,
        execution_id: str,
        *,
        timeout_s: float = 1800.0,
        initial_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        factor: float = 2.0,
    ) -> ExecutionStatusReport:
        """Poll ``GetExecutionSummaryStatus`` with exponential backoff until the status is final."""
        started = self.monotonic()
        delay = initial_delay_s
        while True:
            report = self.status(execution_id)
            if report.is_final:
                return report
            elapsed = self.monotonic() - started
            if elapsed + delay > timeout_s:
                raise DmfTimeoutError(
                    f"DMF execution {execution_id} is still {report.status if report.found else 'not found'} "
                    f"after {elapsed:.0f} s; poll again later with the same execution id",
                    execution_id=execution_id,
                    last=report.status,
                )
            self.sleep(delay)
            delay = min(max_delay_s, delay * factor)

    # -- errors --------------------------------------------------------------------------------
    def execution_errors(self, execution_id: str) -> list[DmfRowError]:
        return parse_errors(self._ok("GetExecutionErrors", {"executionId": execution_id}))

    def staging_error_file_url(self, execution_id: str, entity_name: str) -> str | None:
        value = self._ok("GetImportStagingErrorFileUrl", {"executionId": execution_id, "entityName": entity_name})
        return str(value) or None

    def target_error_keys(
        self, execution_id: str, entity_name: str, *, attempts: int = 10, delay_s: float = 1.0
    ) -> list[dict[str, str]]:
        """Keys of the rows that failed staging -> target for one entity (by its DMF label):
        ``GenerateImportTargetErrorKeysFile``, then ``GetImportTargetErrorKeysFileUrl`` until it
        answers a URL (``""`` while the file is being generated), then the file itself."""
        body = {"executionId": execution_id, "entityName": entity_name}
        if not self._ok("GenerateImportTargetErrorKeysFile", body):
            return []
        for attempt in range(attempts):
            url = str(self._ok("GetImportTargetErrorKeysFileUrl", body) or "")
            if url:
                response = self.d365.storage("GET", url)
                if response.status_code != 200:
                    raise DmfError(f"error-keys file of {entity_name} answered HTTP {response.status_code}")
                return parse_key_file(response.content)
            if attempt + 1 < attempts:
                self.sleep(delay_s)
        raise DmfError(
            f"D365 did not produce the error-keys file of {entity_name!r} for execution {execution_id} "
            f"after {attempts} attempts; ask again later"
        )

    # -- read back -----------------------------------------------------------------------------
    def read_back(self, package: DmfPackage) -> ImportCheck:
        """Look every packaged row up in D365 by its key (see :meth:`read_back_many`)."""
        return self.read_back_many([package])[0]

    def read_back_many(
        self,
        packages: Sequence[DmfPackage],
        *,
        entity_sets: Collection[str] | None = None,
        spot_check: Sequence[Collection[str]] | None = None,
    ) -> list[ImportCheck]:
        """What D365 holds of each package's rows, per package: one OData query per entity set for all
        the packages (cross-company over their legal entities, paged), narrowed by a prefix cover of
        the first key field and selecting the key fields only; rows are matched by exact key here.

        ``entity_sets``: only these are read back (default: every entity set of the packages).
        ``spot_check[i]``: entity sets of package ``i`` read back for a sample only — the rows of its
        first and last documents (first key field). When the sample is complete the entity is taken as
        landed in full (:attr:`EntityCheck.spot_checked`); else its rows are read back in full. Use it
        where a per-row failure would have been reported (an execution that ``Succeeded`` with no row
        error): the sample still catches the silent failure, an entity D365 imported zero rows of."""
        wanted_sets = dict.fromkeys(e.entity_set for p in packages for e in p.entities)
        if entity_sets is not None:
            wanted_sets = {s: None for s in wanted_sets if s in entity_sets}
        sampled = [set(spot_check[i]) if spot_check else set() for i in range(len(packages))]
        per_entity: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        trusted: set[tuple[int, str]] = set()
        for entity_set in wanted_sets:
            entities = [(i, p.legal_entity, e) for i, p in enumerate(packages) for e in p.entities]
            entities = [item for item in entities if item[2].entity_set == entity_set]
            samples = {i: _sample(e) for i, _, e in entities if entity_set in sampled[i]}
            landed: dict[tuple[Any, ...], dict[str, Any]] = {}
            if samples:
                landed = self._landed_rows(entity_set, [(le, samples[i]) for i, le, _ in entities if i in samples])
                for i, le, _ in entities:
                    if i in samples and all(_normalized(le, key) in landed for key in samples[i]):
                        trusted.add((i, entity_set))
            full = [(le, e.keys) for i, le, e in entities if (i, entity_set) not in trusted]
            landed.update(self._landed_rows(entity_set, full))
            per_entity[entity_set] = landed
        return [
            ImportCheck(
                entities=tuple(
                    self._check_entity(p.legal_entity, e, per_entity[e.entity_set], (i, e.entity_set) in trusted)
                    for e in p.entities
                    if e.entity_set in per_entity
                )
            )
            for i, p in enumerate(packages)
        ]

    def _landed_rows(
        self, entity_set: str, wanted_keys: Sequence[tuple[str, Sequence[tuple[Any, ...]]]]
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        """(folded legal entity, *normalized key) -> row, for the D365 rows matching a wanted key
        (``wanted_keys``: per legal entity, packaged keys)."""
        key_props = DMF_ENTITIES[entity_set].key_properties
        wanted = {_normalized(le, key) for le, keys in wanted_keys for key in keys}
        if not wanted:
            return {}
        rows = self.d365.query(
            entity_set,
            legal_entity=sorted({odata.fold(le) for le, _ in wanted_keys}),
            filter=odata.prefix_cover(key_props[0], {key[0] for _, keys in wanted_keys for key in keys}),
            select=["dataAreaId", *key_props],
        )
        landed: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            normalized = (odata.fold(row.get("dataAreaId")), *(_key_text(row.get(p)) for p in key_props))
            if normalized in wanted:  # exact match only: '*' in an eq literal is a wildcard in F&O
                landed[normalized] = row
        return landed

    def _check_entity(
        self,
        legal_entity: str,
        entity: PackagedEntity,
        landed: dict[tuple[Any, ...], dict[str, Any]],
        spot_checked: bool = False,
    ) -> EntityCheck:
        le = odata.fold(legal_entity)
        unique = list(dict.fromkeys(entity.keys))
        if spot_checked:  # its sample landed: every row taken as landed, the row D365 holds as its key
            key_props = DMF_ENTITIES[entity.entity_set].key_properties
            found = {
                key: landed.get(_normalized(le, key)) or {"dataAreaId": le, **dict(zip(key_props, key, strict=True))}
                for key in unique
            }
            return EntityCheck(
                entity_set=entity.entity_set, sent=len(unique), found=found, missing=(), spot_checked=True
            )
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        for key in unique:
            row = landed.get(_normalized(le, key))
            if row is not None:
                found[key] = row
        missing = tuple(k for k in unique if k not in found)
        return EntityCheck(entity_set=entity.entity_set, sent=len(unique), found=found, missing=missing)


def _normalized(legal_entity: str, key: Sequence[Any]) -> tuple[Any, ...]:
    return (odata.fold(legal_entity), *(_key_text(v) for v in key))


def _sample(entity: PackagedEntity) -> list[tuple[Any, ...]]:
    """The rows of an entity's first and last documents (by the first key field)."""
    if not entity.keys:
        return []
    firsts = {odata.fold(entity.keys[0][0]), odata.fold(entity.keys[-1][0])}
    return [key for key in dict.fromkeys(entity.keys) if odata.fold(key[0]) in firsts]
