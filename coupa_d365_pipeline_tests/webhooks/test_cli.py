"""``coupa-d365 webhooks``: help texts, the sign helper, refusing to serve without a valid secret
(in-process; the real process is in test_serve_process.py)."""

from __future__ import annotations

import pytest

from coupa_d365_pipeline.cli import main

from .conftest import SECRET


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_help_texts(capsys):
    assert "webhooks" in help_text(capsys)
    assert "serve" in help_text(capsys, "webhooks") and "sign" in help_text(capsys, "webhooks")
    serve = help_text(capsys, "webhooks", "serve")
    for words in ("--host", "default 127.0.0.1", "--port", "COUPA_WEBHOOK_SECRET", "WEBHOOK_STAGING_DIR"):
        assert words in serve
    assert "--timestamp" in help_text(capsys, "webhooks", "sign")


def test_serve_refuses_a_malformed_secret_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COUPA_WEBHOOK_SECRET", "whsec_not*base64")
    monkeypatch.setenv("WEBHOOK_STAGING_DIR", str(tmp_path / "w"))
    assert main(["webhooks", "serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: invalid configuration: COUPA_WEBHOOK_SECRET entry 1 of 1 is not valid base64 after 'whsec_'\n"
    assert not (tmp_path / "w").exists()


def test_sign_reads_the_body_from_a_file(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COUPA_WEBHOOK_SECRET", f"{SECRET},whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    body = tmp_path / "body.json"
    body.write_bytes(b'{"test": 2432232314}')
    assert (
        main(["webhooks", "sign", "--id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "--timestamp", "1614265330", str(body)]) == 0
    )
    assert (
        capsys.readouterr().out.splitlines()[2] == "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    ("webhook_id", "content", "reason"), [("msg 1", b"{}", "printable ASCII"), ("m", b"\xff", "not UTF-8")]
)
def test_sign_refuses_what_the_receiver_would_refuse(capsys, monkeypatch, tmp_path, webhook_id, content, reason):
    monkeypatch.setenv("COUPA_WEBHOOK_SECRET", SECRET)
    body = tmp_path / "body.json"
    body.write_bytes(content)
    assert main(["webhooks", "sign", "--id", webhook_id, str(body)]) == 2
    assert reason in capsys.readouterr().err


def test_status_lists_failed_events_and_requeue_gives_them_another_round(capsys, monkeypatch, tmp_path):
    from datetime import UTC, datetime

    from coupa_d365_pipeline.webhooks.staging import EventType, Place, StagedEvent, WebhookStaging

    monkeypatch.setenv("WEBHOOK_STAGING_DIR", str(tmp_path / "w"))
    assert main(["webhooks", "status"]) == 2
    assert "no webhook staging directory" in capsys.readouterr().err
    staging = WebhookStaging(tmp_path / "w").ensure()
    now = datetime.now(UTC)
    for n in (1, 2):
        staging.stage(
            StagedEvent(
                webhook_id=f"msg_{n}",
                event_type=EventType.INVOICE_APPROVED,
                coupa_id=40 + n,
                updated_at=now,
                event_timestamp=now,
                received_at=now,
            )
        )
    batch = staging.claim([e.key for e in staging.ready(10)])
    staging.fail(batch.batch_id, "3 attempt(s) failed; last: run abc FAILURE")
    assert main(["webhooks", "status"]) == 0
    out = capsys.readouterr().out
    assert "failed     2" in out and "incoming   0" in out
    assert "invoice.approved 41 (webhook-id msg_1): 3 attempt(s) failed; last: run abc FAILURE" in out
    assert main(["webhooks", "requeue-failed", "--staging-dir", str(tmp_path / "w")]) == 0
    assert "2 failed event(s) moved back" in capsys.readouterr().out
    assert staging.count(Place.FAILED) == 0 and staging.count(Place.INCOMING) == 2
