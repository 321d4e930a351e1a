import threading

import pytest

from coupa_d365_pipeline.sandbox.faults import FaultConfig, FaultInjector, LoggedRequest, RequestLog, ScriptedFault


def decisions(seed: int, n: int = 400):
    injector = FaultInjector(
        FaultConfig(seed=seed, rate_429=0.1, rate_5xx=0.05, rate_drop=0.02, latency_ms=5, latency_jitter_ms=10)
    )
    return [(round(lat, 6), d.kind if d else None) for lat, d in (injector.decide("GET", "/api/x") for _ in range(n))]


def test_same_seed_same_fault_sequence_and_rates_are_respected():
    first, again, other = decisions(1), decisions(1), decisions(2)
    assert first == again and first != other
    kinds = [k for _, k in first]
    assert 20 <= kinds.count("429") <= 60 and 5 <= kinds.count("5xx") <= 40 and kinds.count("drop_after") >= 1
    assert all(5 <= lat <= 15 for lat, _ in first)


def test_scripted_faults_match_method_and_path_and_are_consumed_in_order():
    injector = FaultInjector()
    injector.script(ScriptedFault(kind="429", method="POST", path_regex="^/data/Vendor", times=2, retry_after_s=3))
    assert injector.decide("GET", "/data/VendorsV2")[1] is None
    first = injector.decide("POST", "/data/VendorsV2")[1]
    assert first.kind == "429" and first.retry_after_s == 3
    assert injector.decide("POST", "/data/VendorInvoiceHeaders")[1].kind == "429"
    assert injector.decide("POST", "/data/VendorsV2")[1] is None


def test_after_lets_matching_requests_through_first_and_latency_is_reported_as_a_decision():
    injector = FaultInjector()
    fault = injector.script(ScriptedFault(kind="5xx", method="POST", path_regex=r"^/data/\$batch$", after=2))
    assert [injector.decide("POST", "/data/$batch")[1] for _ in range(2)] == [None, None]
    assert injector.decide("GET", "/data/$batch")[1] is None  # not matching: does not count
    assert injector.pending() == [fault]
    assert injector.decide("POST", "/data/$batch")[1].kind == "5xx"
    assert injector.pending() == [] and injector.decide("POST", "/data/$batch")[1] is None
    injector.script(ScriptedFault(kind="latency", method="GET", delay_ms=40))
    latency_ms, decision = injector.decide("GET", "/api/x")
    assert latency_ms == 40 and decision.kind == "latency"


def test_clear_releases_held_requests():
    injector = FaultInjector()
    hold = injector.script(ScriptedFault(kind="hold", method="POST"))
    assert injector.decide("POST", "/x")[1].hold is hold
    assert not hold._released.is_set()
    injector.clear()
    assert hold._released.is_set() and injector.pending() == []


def test_request_log_wait_for_returns_the_predicate_value_or_times_out():
    log = RequestLog()

    def entry(path: str) -> LoggedRequest:
        return LoggedRequest(seq=0, time=0.0, method="GET", path=path, query="", headers={}, body="")

    log.add(entry("/a"))
    writer = threading.Thread(target=lambda: [log.add(entry(p)) for p in ("/b", "/c")])
    writer.start()
    found = log.wait_for(lambda entries: [e for e in entries if e.path == "/c"], timeout_s=30)
    writer.join()
    assert [e.seq for e in found] == [3]
    log.clear()
    assert log.next_seq() == 4  # sequence numbers keep counting across clear()
    with pytest.raises(TimeoutError):
        log.wait_for(lambda entries: entries, timeout_s=0.01)


def test_broken_answer_kinds_are_scripted_like_the_others():
    injector = FaultInjector()
    for kind in ("html", "empty", "html_after", "empty_after", "truncated"):
        injector.script(ScriptedFault(kind=kind, method="GET"))
        assert injector.decide("GET", "/api/invoices")[1].kind == kind
    injector.configure(FaultConfig(rate_5xx=1.0, retry_after_on_5xx=True, retry_after_s=0))
    decision = injector.decide("GET", "/data/VendorsV2")[1]
    assert decision.kind == "5xx" and decision.retry_after_on_5xx and decision.retry_after_s == 0
