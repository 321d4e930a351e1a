"""The code location loads, and its assets materialize against the sandboxes."""

import dagster as dg

from coupa_d365_pipeline import defs as package_defs
from coupa_d365_pipeline.definitions import defs


def test_defs_is_exposed_and_loadable():
    assert package_defs is defs
    dg.Definitions.validate_loadable(defs)
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"coupa/suppliers", "coupa/invoices", "coupa/purchase_orders", "d365/legal_entities"} <= keys


def test_resources_are_configured_by_env_var_names_not_values():
    resources = defs.resources
    assert isinstance(resources["coupa"].client_secret, dg.EnvVar)
    assert resources["coupa"].client_secret.env_var_name == "COUPA_CLIENT_SECRET"
    assert resources["d365"].client_secret.env_var_name == "D365_CLIENT_SECRET"
