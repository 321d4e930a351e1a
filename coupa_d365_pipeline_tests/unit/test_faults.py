from coupa_d365_pipeline.sandbox.faults import FaultConfig, FaultInjector, ScriptedFault


def decisions(seed: int, n: int = 400):
    injector = FaultInjector(FaultConfig(seed=seed, rate_429=0.1, rate_5xx=0.05, rate_drop=0.02,
                                         latency_ms=5, latency_jitter_ms=10))
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
