"""The DMF package API of the D365 sandbox (/work/shared/reference/d365-fo-api.md §7), with its blob storage.

Actions (``POST /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.<Action>``, bearer
token and request budget like any ``/data`` call; answers ``{"@odata.context": …, "value": …}``):

- ``GetAzureWriteUrl{uniqueFileName}`` -> a JSON *string* ``{"BlobId": "{GUID}", "BlobUrl": <SAS URL>}``.
  The blob lives on the sandbox itself: ``PUT /_blob/dmf/<name>?…&sig=…`` with ``x-ms-blob-type:
  BlockBlob`` (201; without the header 400 ``MissingRequiredHeader``; a wrong or expired signature 403).
- ``ImportFromPackage{packageUrl, definitionGroupId, executionId, execute, overwrite, legalEntityId}`` ->
  the execution id. Synchronous checks: the data project must be configured (``dmf_data_projects``), the
  legal entity must exist, the package must have been uploaded and parse (:mod:`.dmf_package`; an unknown
  entity label is a 400). The import itself runs on a timer thread ``dmf_execution_s`` later.
- ``GetExecutionSummaryStatus{executionId}`` -> ``Executing`` until the run ends, then ``Succeeded`` (no
  row failed — also when zero rows were imported because an entity had no mapping: the real trap),
  ``PartiallySucceeded`` (some rows landed, some failed) or ``Failed`` (none landed, something failed).
  An unknown id, or a known one within ``dmf_status_hidden_s`` of its submission, is 400 "…were not found".
- ``GetExecutionErrors{executionId}`` -> a JSON string: a list of ``{"EntityName", "RowNumber" (data row,
  1 = first after the header), "Keys" (staging key field -> value), "ErrorMessage"}``.
- ``GenerateImportTargetErrorKeysFile{executionId, entityName}`` -> true when that entity (DMF label) has
  failed rows; ``GetImportTargetErrorKeysFileUrl`` then answers ``""`` for ``dmf_error_keys_pending_calls``
  calls ("still generating") and afterwards the URL of a CSV-Unicode file of the failed rows' keys.
- ``GetImportStagingErrorFileUrl`` -> ``""`` (this sandbox has no source->staging row errors).

Rows are written through :meth:`.state.D365State.create` (or ``update`` when the key exists: DMF upserts by
key), so every OData rule applies — schema, foreign keys (vendor, main account, dimension values, item,
header), PO rules — and landed rows are exactly what OData reads. Choices where the reference is silent:
an already used execution id is refused with 400 "Execution ID '<id>' already exists." and nothing is
imported again; an unknown data project is a 400.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .dmf_package import DMF_LABELS, DataProject, PackageEntity, PackageError, read_package, read_rows, staging_fields
from .odata import ODATA_EXCEPTION, ODataError, Resp
from .schema import EntitySchema
from .state import D365State

ACTION_PREFIX = "DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
BLOB_PATH = "/_blob/dmf/"
SAS_LIFETIME_S = 3600.0


@dataclass
class Execution:
    execution_id: str
    legal_entity: str
    project: DataProject
    entities: list[PackageEntity]
    submitted: float  # time.monotonic()
    status: str = "Executing"
    errors: list[dict[str, Any]] = field(default_factory=list)
    imported: dict[str, int] = field(default_factory=dict)  # label -> rows landed
    key_files: dict[str, int] = field(default_factory=dict)  # label -> GetImportTargetErrorKeysFileUrl calls
    done: threading.Event = field(default_factory=threading.Event)


def _typed(prop: str, sch: EntitySchema, text: str) -> Any:
    """A CSV cell as the JSON value OData would have received for the property."""
    kind = sch.properties[prop].type
    if kind in ("Edm.Decimal", "Edm.Double"):
        try:
            return Decimal(text)
        except InvalidOperation:
            return text  # coerce_body refuses it with F&O's conversion message
    if kind in ("Edm.Int32", "Edm.Int64"):
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "Edm.Boolean":
        return text.strip().casefold() in ("true", "yes", "1")
    return text


class DmfService:
    """Executions, blobs and the DMF actions of one sandbox."""

    def __init__(
        self,
        state: D365State,
        env_url: str,
        *,
        data_projects: dict[str, tuple[str, ...]],
        execution_s: float,
        status_hidden_s: float,
        error_keys_pending_calls: int,
        clock: Any = time.time,
    ) -> None:
        self.state = state
        self.env_url = env_url
        self.projects = {name: DataProject(name, tuple(labels)) for name, labels in data_projects.items()}
        self.execution_s = execution_s
        self.status_hidden_s = status_hidden_s
        self.error_keys_pending_calls = error_keys_pending_calls
        self.clock = clock
        self.lock = threading.RLock()
        self.blobs: dict[str, bytes] = {}
        self._sas: dict[str, tuple[str, float]] = {}  # blob name -> (signature, expiry epoch)
        self.executions: dict[str, Execution] = {}

    # ---- blob storage ------------------------------------------------------------------------
    def _sas_url(self, name: str) -> str:
        signature = secrets.token_urlsafe(24)
        with self.lock:
            self._sas[name] = (signature, self.clock() + SAS_LIFETIME_S)
        return f"{self.env_url}{BLOB_PATH}{quote(name)}?sv=2019-02-02&sr=b&sp=rw&sig={quote(signature)}"

    def _blob_name(self, url: str) -> str | None:
        path = urlsplit(url).path
        return unquote(path[len(BLOB_PATH) :]) if path.startswith(BLOB_PATH) else None

    def _authorized(self, name: str, signature: str) -> bool:
        with self.lock:
            granted = self._sas.get(name)
        return granted is not None and secrets.compare_digest(granted[0], signature) and self.clock() < granted[1]

    def routes(self) -> list[Route]:
        async def blob(request: Request) -> Response:
            name = unquote(request.path_params["name"])
            if not self._authorized(name, request.query_params.get("sig", "")):
                return _storage_error(403, "AuthenticationFailed", "Server failed to authenticate the request.")
            if request.method == "GET":
                with self.lock:
                    data = self.blobs.get(name)
                if data is None:
                    return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
                return Response(data, headers={"Content-Type": "application/octet-stream"})
            if request.headers.get("x-ms-blob-type") != "BlockBlob":
                return _storage_error(
                    400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified."
                )
            body = await request.body()
            with self.lock:
                self.blobs[name] = body
            return Response(status_code=201, headers={"ETag": f'"0x{uuid.uuid4().hex[:16].upper()}"'})

        return [Route(BLOB_PATH + "{name:path}", blob, methods=["GET", "PUT"])]

    # ---- actions -----------------------------------------------------------------------------
    def handle_action(self, method: str, action: str, body: bytes) -> Resp:
        if method != "POST":
            return Resp.error(ODataError(405, f"The action '{action}' requires POST."))
        try:
            params = json.loads(body.decode("utf-8") or "{}")
            if not isinstance(params, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError):
            return Resp.error(ODataError(400, "The request body is not valid JSON.", ODATA_EXCEPTION))
        handlers = {
            "GetAzureWriteUrl": (self.get_azure_write_url, "Edm.String"),
            "ImportFromPackage": (self.import_from_package, "Edm.String"),
            "ImportFromPackageAsync": (self.import_from_package, "Edm.String"),
            "GetExecutionSummaryStatus": (
                self.summary_status,
                "Microsoft.Dynamics.DataEntities.DMFExecutionSummaryStatus",
            ),
            "GetExecutionErrors": (self.execution_errors, "Edm.String"),
            "GetImportStagingErrorFileUrl": (lambda p: "", "Edm.String"),
            "GenerateImportTargetErrorKeysFile": (self.generate_error_keys, "Edm.Boolean"),
            "GetImportTargetErrorKeysFileUrl": (self.error_keys_url, "Edm.String"),
        }
        if action not in handlers:
            return Resp.error(
                ODataError(404, f"Resource not found for the segment 'Microsoft.Dynamics.DataEntities.{action}'.")
            )
        handler, edm = handlers[action]
        try:
            value = handler(params)
        except ODataError as err:
            return Resp.error(err)
        return Resp.json(200, {"@odata.context": f"{self.env_url}/data/$metadata#{edm}", "value": value})

    def get_azure_write_url(self, params: dict[str, Any]) -> str:
        name = str(params.get("uniqueFileName") or "")
        if not name:
            raise ODataError(400, "uniqueFileName must be specified.", ODATA_EXCEPTION)
        return json.dumps({"BlobId": "{" + str(uuid.uuid4()).upper() + "}", "BlobUrl": self._sas_url(name)})

    def import_from_package(self, params: dict[str, Any]) -> str:
        execution_id = str(params.get("executionId") or "")
        group = str(params.get("definitionGroupId") or "")
        legal_entity = str(params.get("legalEntityId") or "").lower()
        project = self.projects.get(group)
        if project is None:
            raise ODataError(400, f"Data project '{group}' does not exist.", ODATA_EXCEPTION)
        if legal_entity not in self.state.companies():
            raise ODataError(400, f"Company '{legal_entity}' does not exist.", ODATA_EXCEPTION)
        name = self._blob_name(str(params.get("packageUrl") or ""))
        with self.lock:
            blob = self.blobs.get(name) if name is not None else None
            if execution_id and execution_id in self.executions:
                raise ODataError(400, f"Execution ID '{execution_id}' already exists.", ODATA_EXCEPTION)
        if blob is None:
            raise ODataError(400, "Unable to download the package from the blob storage.", ODATA_EXCEPTION)
        parsed = read_package(blob, set(self.state.schema.entity_sets))
        execution_id = execution_id or f"{group}-{uuid.uuid4()}"
        execution = Execution(execution_id, legal_entity, project, parsed.entities, time.monotonic())
        with self.lock:
            if execution_id in self.executions:  # a concurrent twin won the race
                raise ODataError(400, f"Execution ID '{execution_id}' already exists.", ODATA_EXCEPTION)
            self.executions[execution_id] = execution
        if params.get("execute", True):
            timer = threading.Timer(self.execution_s, self._run, args=(execution,))
            timer.daemon = True
            timer.start()
        else:
            execution.status = "NotRun"
            execution.done.set()
        return execution_id

    def _visible(self, execution_id: str) -> Execution:
        with self.lock:
            execution = self.executions.get(str(execution_id))
        if execution is None or time.monotonic() - execution.submitted < self.status_hidden_s:
            raise ODataError(
                400, f"The execution details for execution ID '{execution_id}' were not found.", ODATA_EXCEPTION
            )
        return execution

    def summary_status(self, params: dict[str, Any]) -> str:
        return self._visible(params.get("executionId", "")).status

    def execution_errors(self, params: dict[str, Any]) -> str:
        return json.dumps(self._visible(params.get("executionId", "")).errors)

    def generate_error_keys(self, params: dict[str, Any]) -> bool:
        execution = self._visible(params.get("executionId", ""))
        label = str(params.get("entityName") or "")
        failed = any(e["EntityName"] == label and e["Keys"] for e in execution.errors)
        if failed:
            with self.lock:
                execution.key_files.setdefault(label, 0)
        return failed

    def error_keys_url(self, params: dict[str, Any]) -> str:
        execution = self._visible(params.get("executionId", ""))
        label = str(params.get("entityName") or "")
        with self.lock:
            if label not in execution.key_files:
                return ""
            execution.key_files[label] += 1
            if execution.key_files[label] <= self.error_keys_pending_calls:
                return ""
        rows = [e["Keys"] for e in execution.errors if e["EntityName"] == label and e["Keys"]]
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        name = f"errorkeys/{execution.execution_id}/{label}.csv"
        with self.lock:
            self.blobs[name] = b"\xff\xfe" + out.getvalue().encode("utf-16-le")
        return self._sas_url(name)

    # ---- the import ----------------------------------------------------------------------------
    def _run(self, execution: Execution) -> None:
        try:
            with self.state.lock:
                for entity in execution.entities:
                    self._import_entity(execution, entity)
        except Exception as exc:  # a sandbox bug must end the execution, not leave it Executing forever
            self._fail(execution, "", f"The import stopped: {type(exc).__name__}: {exc}")
        landed = sum(execution.imported.values())
        if not execution.errors:
            status = "Succeeded"
        else:
            status = "PartiallySucceeded" if landed else "Failed"
        with self.lock:
            execution.status = status
        execution.done.set()

    def _fail(self, execution: Execution, entity: str, message: str, row: int | None = None, keys: Any = None) -> None:
        execution.errors.append({"EntityName": entity, "RowNumber": row, "Keys": keys or {}, "ErrorMessage": message})

    def _import_entity(self, execution: Execution, entity: PackageEntity) -> None:
        sch = self.state.schema[entity.entity_set]
        execution.imported[entity.label] = 0
        fields = staging_fields(sch)
        if not entity.mapping:
            if entity.label not in execution.project.mapped_entities:
                return  # no mapping: nothing is read, and nothing is reported either (the trap)
            entity.mapping = {f: f for f in fields}
        try:
            rows = read_rows(entity, sch)
        except PackageError as exc:
            self._fail(execution, entity.label, exc.message)
            return
        key_fields = [k.upper() for k in sch.keys if k != "dataAreaId"]
        for number, row in enumerate(rows, start=1):
            payload: dict[str, Any] = {"dataAreaId": execution.legal_entity}
            for staging, text in row.items():
                if text != "":
                    payload[fields[staging]] = _typed(fields[staging], sch, text)
            keys = {k: row.get(k, "") for k in key_fields}
            key_values = {k: payload.get(k) for k in sch.keys}
            try:
                if all(v not in (None, "") for v in key_values.values()) and self.state.get(
                    entity.entity_set, key_values
                ):
                    changes = {k: v for k, v in payload.items() if k not in sch.keys}
                    self.state.update(entity.entity_set, key_values, changes)
                else:
                    self.state.create(entity.entity_set, payload)
            except ODataError as err:
                self._fail(execution, entity.label, err.message, number, keys)
                continue
            execution.imported[entity.label] += 1


def _storage_error(status: int, code: str, message: str) -> Response:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Response(body, status_code=status, headers={"Content-Type": "application/xml", "x-ms-error-code": code})


def dmf_action(subpath: str) -> str | None:
    """The action name when ``subpath`` (after ``/data/``) addresses a DMF action, else None."""
    path = subpath.strip("/")
    return path[len(ACTION_PREFIX) :] if path.startswith(ACTION_PREFIX) else None


__all__ = ["DMF_LABELS", "DmfService", "Execution", "dmf_action"]
