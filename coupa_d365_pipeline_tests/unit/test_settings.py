from datetime import date

import pytest

from coupa_d365_pipeline.settings import ENV_VARS, ConfigError, load_settings

GOOD = {
    "COUPA_BASE_URL": "https://acme.coupahost.com/",
    "COUPA_CLIENT_ID": "cid",
    "COUPA_CLIENT_SECRET": "s3cret-value",
    "D365_BASE_URL": "https://Contoso.Operations.Dynamics.com/",
    "D365_TENANT_ID": "tenant",
    "D365_CLIENT_ID": "app",
    "D365_CLIENT_SECRET": "d365-s3cret",
    "D365_DEFAULT_LEGAL_ENTITY": "USMF",
}


def test_good_settings_are_normalized():
    settings = load_settings(GOOD)
    assert settings.coupa.base_url == "https://acme.coupahost.com"
    assert settings.d365.base_url == "https://contoso.operations.dynamics.com"  # audience: lowercase, no slash
    assert settings.d365.default_legal_entity == "usmf"
    assert settings.d365.authority_url == "https://login.microsoftonline.com"
    assert settings.sync.start_date == date(2026, 11, 1)
    assert "s3cret-value" not in repr(settings) and "d365-s3cret" not in str(settings)


def test_every_missing_required_variable_is_named_with_its_fix():
    with pytest.raises(ConfigError) as err:
        load_settings({})
    required = [name for name, (req, _) in ENV_VARS.items() if req]
    for name in required:
        assert f"{name} is not set" in str(err.value)
    assert len(err.value.problems) == len(required)


def test_invalid_values_are_explained():
    bad = dict(
        GOOD,
        D365_BASE_URL="https://contoso.operations.dynamics.com/data",
        COUPA_BASE_URL="acme",
        SYNC_START_DATE="01/02/2026",
        D365_DEFAULT_LEGAL_ENTITY="us-mf",
        COUPA_D365_MAPPING_FILE="/nope.yaml",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    text = str(err.value)
    assert "without a path" in text and "drop '/data'" in text
    assert "COUPA_BASE_URL='acme' is not an http(s) URL" in text
    assert "SYNC_START_DATE='01/02/2026' is not a date" in text
    assert "is not a dataAreaId" in text
    assert "/nope.yaml" in text and "does not exist" in text
    assert GOOD["COUPA_CLIENT_SECRET"] not in text


def test_dmf_threshold_defaults_accepts_zero_and_explains_a_bad_value():
    from coupa_d365_pipeline.settings import DEFAULT_D365_DMF_THRESHOLD, dmf_data_project, dmf_threshold

    assert dmf_threshold({}) == DEFAULT_D365_DMF_THRESHOLD == 500
    assert dmf_threshold({"D365_DMF_THRESHOLD": " 0 "}) == 0
    assert dmf_threshold({"D365_DMF_THRESHOLD": "1200"}) == 1200
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ConfigError, match=r"D365_DMF_THRESHOLD=.* is not a whole number >= 0.*default 500"):
            dmf_threshold({"D365_DMF_THRESHOLD": bad})
    assert dmf_data_project({}) == "Coupa documents"
    assert dmf_data_project({"D365_DMF_DATA_PROJECT": "AP import"}) == "AP import"
    assert "D365_DMF_THRESHOLD" in ENV_VARS and "D365_DMF_DATA_PROJECT" in ENV_VARS
