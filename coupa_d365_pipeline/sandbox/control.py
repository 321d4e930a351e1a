"""Control routes shared by both sandboxes under /_sandbox/: request log and fault injection."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import FaultConfig, FaultInjector, RequestLog, ScriptedFault


def control_routes(log: RequestLog, injector: FaultInjector) -> list[Route]:
    async def get_requests(request: Request) -> Response:
        return JSONResponse([e.to_dict() for e in log.snapshot()])

    async def clear_requests(request: Request) -> Response:
        log.clear()
        return Response(status_code=204)

    async def set_faults(request: Request) -> Response:
        body = await request.json()
        injector.configure(FaultConfig(**body))
        return JSONResponse(injector.config.to_dict())

    async def script_fault(request: Request) -> Response:
        body = await request.json()
        injector.script(ScriptedFault(**body))
        return Response(status_code=204)

    async def clear_faults(request: Request) -> Response:
        injector.clear()
        return Response(status_code=204)

    return [
        Route("/_sandbox/requests", get_requests, methods=["GET"]),
        Route("/_sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/_sandbox/faults", set_faults, methods=["PUT"]),
        Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/_sandbox/faults/script", script_fault, methods=["POST"]),
    ]
