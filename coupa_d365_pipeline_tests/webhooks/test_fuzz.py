"""Hypothesis: whatever arrives — random bytes, random headers, validly signed random JSON — the
endpoint answers with a client error or a success, never a 5xx, and stages only valid events."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coupa_d365_pipeline.webhooks.receiver import WEBHOOK_PATH
from coupa_d365_pipeline.webhooks.signing import sign
from coupa_d365_pipeline.webhooks.staging import EventType, StagedEvent

from .conftest import SECRET, Receiver, staged_files

ALLOWED = {200, 400, 401, 413, 415}

header_bytes = st.binary(max_size=80).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
dates = st.one_of(
    st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    json_scalars,
)
envelopes = st.fixed_dictionaries(
    {
        "type": st.sampled_from([t.value for t in EventType]) | st.text(max_size=20) | json_scalars,
        "timestamp": dates,
        "data": st.fixed_dictionaries(
            {"id": st.integers(min_value=-5, max_value=2**64) | json_scalars, "updated_at": dates}
        )
        | json_values,
    }
)
aware_dates = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
valid_envelopes = st.fixed_dictionaries(  # mostly-valid events, so the staging path is exercised too
    {
        "type": st.sampled_from([t.value for t in EventType] + ["invoice.commented"]),
        "timestamp": aware_dates,
        "data": st.fixed_dictionaries(
            {"id": st.integers(min_value=1, max_value=2**63 - 1), "updated_at": aware_dates},
            optional={"extra": json_values},
        ),
    },
    optional={"id": json_values},
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
    valid_envelopes.map(lambda v: json.dumps(v).encode()),
)
content_types = st.sampled_from(["application/json"] * 4 + ["application/json; charset=utf-8", "text/plain", None])


def test_endpoint_never_answers_5xx(make_receiver):
    receiver: Receiver = make_receiver()
    counter = iter(range(10**9))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        body=bodies,
        content_type=content_types,
        signed=st.sampled_from([True, True, True, False]),
        skew=st.sampled_from([0] * 6 + [-299, 299, -301, 301, 10**6]),
        overrides=st.sampled_from([{}, {}, {}])
        | st.dictionaries(
            st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "content-length"]),
            header_bytes,
            max_size=2,
        ),
    )
    def check(body: bytes, content_type: str | None, signed: bool, skew: int, overrides: dict[str, bytes]) -> None:
        headers: dict[str, Any] = {}
        if content_type is not None:
            headers["content-type"] = content_type
        if signed:
            try:
                headers.update(sign(SECRET, f"msg_fuzz_{next(counter)}", int(receiver.now) + skew, body))
            except UnicodeDecodeError:
                pass  # a non-UTF-8 body cannot be signed; sent unsigned
        headers.update(overrides)
        before = len(staged_files(receiver.staging))
        response = receiver.client.post(WEBHOOK_PATH, content=body, headers=headers)
        assert response.status_code in ALLOWED, (response.status_code, response.text)
        payload = response.json()
        event(f"{response.status_code} {payload.get('status', '')}")
        after = len(staged_files(receiver.staging))
        if response.status_code == 200:
            assert payload["status"] in {"staged", "duplicate", "ignored"}
            assert after == before + (payload["status"] == "staged")
        else:
            assert isinstance(payload["error"], str) and "\n" not in payload["error"]
            assert after == before

    check()
    for path in staged_files(receiver.staging):  # whatever got in is a valid event
        StagedEvent.model_validate_json(path.read_bytes())
