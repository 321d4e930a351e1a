"""Secrets never reach a log: not through the loggers the clients and the sync core use inside a
Dagster run (its event log), not through exception text, not through propagated library loggers."""

from __future__ import annotations

import logging

import dagster as dg

from coupa_d365_pipeline.common.redact import RedactingLogger, install_log_redaction, register_secret
from coupa_d365_pipeline.defs.resources import CoupaResource, D365Resource

SECRET = "s3cr3t-value-that-must-never-be-logged"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_redacting_logger_cleans_message_arguments_and_exception_text():
    register_secret(SECRET)
    logger = logging.getLogger("test.redaction.adapter")
    capture = Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    wrapped = RedactingLogger(logger)
    wrapped.info("token %s", SECRET)
    wrapped.warning(f"inline {SECRET}")
    try:
        raise RuntimeError(f"server echoed {SECRET}")
    except RuntimeError:
        wrapped.exception("request failed")
    text = "\n".join(capture.lines)
    assert SECRET not in text
    assert text.count("***") == 3 and "server echoed ***" in text


def test_library_records_propagating_to_root_are_redacted():
    register_secret(SECRET)
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        install_log_redaction()
        logging.getLogger("httpx").warning("Authorization: Bearer %s", SECRET)
        logging.getLogger("coupa_d365_pipeline.coupa.deep").warning("secret=%s", SECRET)
    finally:
        root.removeHandler(capture)
    assert capture.lines and all(SECRET not in line and "***" in line for line in capture.lines)


def test_a_secret_logged_through_the_clients_logger_in_a_run_never_reaches_the_event_log(sandboxes, sandbox_env):
    env = sandboxes.env()

    @dg.asset
    def leaky(context, coupa: CoupaResource, d365: D365Resource):
        coupa.client.logger.warning("coupa secret %s", env["COUPA_CLIENT_SECRET"])
        d365.client.logger.warning("d365 secret %s", env["D365_CLIENT_SECRET"])

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [leaky],
            instance=instance,
            resources={
                "coupa": CoupaResource(
                    base_url=env["COUPA_BASE_URL"],
                    client_id=env["COUPA_CLIENT_ID"],
                    client_secret=env["COUPA_CLIENT_SECRET"],
                ),
                "d365": D365Resource(
                    base_url=env["D365_BASE_URL"],
                    tenant_id=env["D365_TENANT_ID"],
                    client_id=env["D365_CLIENT_ID"],
                    client_secret=env["D365_CLIENT_SECRET"],
                    authority_url=env["D365_AUTHORITY_URL"],
                    default_legal_entity="usmf",
                ),
            },
        )
        assert result.success
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
    logged = [m for m in messages if "secret" in m]
    assert len(logged) == 2
    assert all("***" in m for m in logged)
    assert not any(env["COUPA_CLIENT_SECRET"] in m or env["D365_CLIENT_SECRET"] in m for m in messages)
