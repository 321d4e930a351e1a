import copy
from pathlib import Path

import pytest
import yaml

from coupa_d365_pipeline.d365.schema import entity_set
from coupa_d365_pipeline.mapping.config import (
    MappingConfig,
    MappingError,
    example_mapping_path,
    load_mapping,
    parse_mapping,
)


@pytest.fixture(scope="module")
def example_data() -> dict:
    return yaml.safe_load(example_mapping_path().read_text("utf-8"))


def _with(data: dict, **changes) -> dict:
    d = copy.deepcopy(data)
    d.update(changes)
    return d


def _error(data) -> str:
    with pytest.raises(MappingError) as exc:
        parse_mapping(data, "test.yaml")
    return str(exc.value)


def test_example_file_loads():
    cfg = load_mapping(None)
    assert isinstance(cfg, MappingConfig)
    assert cfg.legal_entities == {"US Manufacturing": "usmf", "DE Manufacturing": "demf", "UK Manufacturing": "gbsi"}
    assert cfg.default_legal_entity == "usmf"
    assert cfg.vendor_account.source == "supplier_number"
    assert cfg.dimensions.order == ["BusinessUnit", "CostCenter", "Department"]
    assert cfg.dimensions.delimiter == "-"
    assert cfg.vendor_defaults["demf"] == {"VendorGroupId": "10", "CurrencyCode": "EUR"}
    assert load_mapping(example_mapping_path()) == cfg
    assert load_mapping(str(example_mapping_path())) == cfg


def test_example_vendor_defaults_are_vendorsv2_properties():
    props = entity_set("VendorsV2").properties
    for fields in load_mapping().vendor_defaults.values():
        assert set(fields) <= set(props)


def test_legal_entities_lowercased_and_lookup(example_data):
    cfg = parse_mapping(
        _with(
            example_data,
            legal_entities={"US Manufacturing": "USMF"},
            default_legal_entity="USMF",
            vendor_defaults={"usmf": {"VendorGroupId": 10}},
        )
    )
    assert cfg.legal_entities == {"US Manufacturing": "usmf"}
    assert cfg.default_legal_entity == "usmf"
    assert cfg.vendor_defaults == {"usmf": {"VendorGroupId": "10"}}  # Edm.String coerced
    assert cfg.legal_entity("US Manufacturing") == "usmf"
    assert cfg.legal_entity("us  manufacturing") == "usmf"
    assert cfg.legal_entity("CA Plant") is None
    assert cfg.legal_entity(None) is None


def test_bad_segment_names_key_and_fix(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["segments"]["CostCenter"] = "segmnt-3"
    msg = _error(d)
    assert (
        "dimensions.segments.CostCenter: 'segmnt-3' is not a Coupa account segment; use segment-1 … segment-20" in msg
    )
    assert "test.yaml" in msg


def test_bad_main_account_segment(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["main_account_segment"] = "segment-21"
    msg = _error(d)
    assert "dimensions.main_account_segment" in msg and "use segment-1 … segment-20" in msg


def test_segment_for_dimension_not_in_order(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["segments"]["Project"] = "segment-5"
    msg = _error(d)
    assert "dimensions.segments.Project" in msg and "not in dimensions.order" in msg


def test_main_account_segment_reused_as_dimension(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["segments"]["BusinessUnit"] = "segment-1"
    assert "dimensions.segments.BusinessUnit: segment-1 is already the main_account_segment" in _error(d)


def test_bad_data_area_id(example_data):
    d = _with(
        example_data,
        legal_entities={"US Manufacturing": "US-MF", "DE Manufacturing": "demf", "UK Manufacturing": "gbsi"},
    )
    msg = _error(d)
    assert "legal_entities.'US Manufacturing': 'US-MF' is not a dataAreaId (1-4 letters/digits)" in msg
    assert "e.g. usmf" in msg


def test_too_long_data_area_id(example_data):
    d = _with(example_data, legal_entities={"US Manufacturing": "usmfx"}, default_legal_entity=None, vendor_defaults={})
    assert "legal_entities.'US Manufacturing': 'usmfx' is not a dataAreaId" in _error(d)


def test_unknown_top_level_key_lists_allowed_keys(example_data):
    d = _with(example_data, legal_entitys={"x": "usmf"})
    msg = _error(d)
    assert "legal_entitys: unknown top-level key" in msg
    for key in (
        "legal_entities",
        "default_legal_entity",
        "vendor_account",
        "vendor_defaults",
        "payment_terms",
        "dimensions",
        "items",
        "procurement_category",
    ):
        assert key in msg


def test_unknown_nested_key(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["delimeter"] = "-"
    msg = _error(d)
    assert "dimensions.delimeter: unknown key" in msg and "delimiter" in msg


def test_vendor_account_source_must_be_known(example_data):
    msg = _error(_with(example_data, vendor_account={"source": "supplier_id"}))
    assert (
        "vendor_account.source: 'supplier_id' is not a vendor account source; use supplier_number or prefix_id" in msg
    )


def test_prefix_required_for_prefix_id(example_data):
    msg = _error(_with(example_data, vendor_account={"source": "prefix_id"}))
    assert "vendor_account.prefix: is required when source is prefix_id" in msg
    cfg = parse_mapping(_with(example_data, vendor_account={"source": "prefix_id", "prefix": "CP-"}))
    assert cfg.vendor_account.prefix == "CP-"


def test_prefix_without_prefix_id_rejected(example_data):
    msg = _error(_with(example_data, vendor_account={"source": "supplier_number", "prefix": "CP-"}))
    assert "vendor_account.prefix" in msg and "prefix_id" in msg


def test_default_legal_entity_must_be_mapped(example_data):
    msg = _error(_with(example_data, default_legal_entity="frrt"))
    assert "default_legal_entity: 'frrt' is not one of the mapped legal entities" in msg
    assert "demf, gbsi, usmf" in msg


def test_vendor_defaults_key_must_be_mapped_le(example_data):
    d = copy.deepcopy(example_data)
    d["vendor_defaults"]["frrt"] = {"VendorGroupId": "10"}
    msg = _error(d)
    assert "vendor_defaults.frrt: 'frrt' is not a mapped legal entity; use one of demf, gbsi, usmf" in msg


def test_vendor_defaults_fields_must_be_vendorsv2_properties(example_data):
    d = copy.deepcopy(example_data)
    d["vendor_defaults"]["usmf"]["VendorName"] = "x"
    d["vendor_defaults"]["demf"]["vendorgroupid"] = "10"
    msg = _error(d)
    assert "vendor_defaults.usmf.VendorName: 'VendorName' is not a VendorsV2 property" in msg
    assert "vendor_defaults.demf.vendorgroupid" in msg and "did you mean VendorGroupId?" in msg


def test_vendor_defaults_enum_checked(example_data):
    d = copy.deepcopy(example_data)
    d["vendor_defaults"]["usmf"]["OnHoldStatus"] = "Blocked"
    msg = _error(d)
    assert "vendor_defaults.usmf.OnHoldStatus: 'Blocked' is not a OnHoldStatus value" in msg and "All" in msg


def test_vendor_defaults_cannot_set_account(example_data):
    d = copy.deepcopy(example_data)
    d["vendor_defaults"]["usmf"]["VendorAccountNumber"] = "V1"
    assert "vendor_defaults.usmf.VendorAccountNumber: is set by the connector" in _error(d)


def test_missing_required_key(example_data):
    d = copy.deepcopy(example_data)
    del d["dimensions"]
    assert "dimensions: Field required; add it" in _error(d)


def test_wrong_type_names_key(example_data):
    msg = _error(_with(example_data, items=["M-1000"]))
    assert "items:" in msg


def test_all_problems_reported_at_once(example_data):
    d = copy.deepcopy(example_data)
    d["dimensions"]["segments"]["CostCenter"] = "segmnt-3"
    d["default_legal_entity"] = "frrt"
    msg = _error(d)
    assert "dimensions.segments.CostCenter" in msg and "default_legal_entity" in msg


def test_file_errors(tmp_path: Path):
    with pytest.raises(MappingError, match="not found"):
        load_mapping(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("legal_entities: [unclosed\n")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(MappingError, match="empty"):
        load_mapping(empty)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n")
    with pytest.raises(MappingError, match="top level must be a mapping"):
        load_mapping(lst)


def test_mapping_error_is_value_error():
    assert issubclass(MappingError, ValueError)


def test_non_string_key_reported(example_data):
    msg = _error(_with(example_data, payment_terms={30: "Net30"}))
    assert "payment_terms.30: the key 30 must be a string; quote it" in msg


def test_coupa_custom_fields_must_name_a_known_d365_value(tmp_path):
    import yaml

    from coupa_d365_pipeline.mapping.config import MappingError, example_mapping_path, load_mapping

    assert load_mapping(None).coupa_custom_fields == {"d365_voucher": "cf-erp-voucher"}
    data = yaml.safe_load(example_mapping_path().read_text())
    data["coupa_custom_fields"] = {"d365_ledger_balance": "cf-x"}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MappingError, match="coupa_custom_fields.d365_ledger_balance: unknown D365 value"):
        load_mapping(path)
