"""Key decisions that mutation testing (bench/mutation.py) found unchecked.

Kills mutants of ``muxi_isolation/keys.py`` that ``tests/test_keys.py`` let through.
"""

from __future__ import annotations

import pytest

from muxi_isolation import AccessLevel, ConfigError, Forbidden, InvalidIdentifier, KeyRing, Scope
from muxi_isolation.config import AdminKeyConfig, AuthConfig, ClientKeyConfig


def test_config_client_key_is_a_client_grant_bound_to_its_tenant() -> None:
    # a client key read from the config must carry the CLIENT level: a grant of no known
    # level passed every tenant check
    ring = KeyRing.from_config(AuthConfig(client_keys=[ClientKeyConfig(tenant="a", key="ka")]))
    grant = ring.authorize("ka", Scope("a", "u"))
    assert grant.level is AccessLevel.CLIENT
    assert grant.tenant_id == "a"
    with pytest.raises(Forbidden):
        ring.authorize("ka", Scope("b", "u"))
    with pytest.raises(Forbidden):
        ring.require_admin("ka")


def test_config_admin_key_stays_off_user_routes_unless_impersonating() -> None:
    ring = KeyRing.from_config(AuthConfig(admin_keys=[AdminKeyConfig(key="adm")]))
    assert ring.require_admin("adm").level is AccessLevel.ADMIN
    with pytest.raises(Forbidden):
        ring.authorize("adm", Scope("a", "u"))


def test_generated_keys_hold_256_random_bits() -> None:
    ring = KeyRing()
    # "fmc_" / "fma_" and 32 random bytes in URL-safe base64 (43 characters)
    assert len(ring.add_client_key("a")) == 4 + 43
    assert len(ring.add_admin_key()) == 4 + 43


def test_config_key_that_is_no_valid_id_names_the_key_field() -> None:
    auth = AuthConfig(client_keys=[ClientKeyConfig(tenant="a", key=" padded")])
    with pytest.raises(InvalidIdentifier) as caught:
        KeyRing.from_config(auth)
    assert caught.value.field == "key"


def test_config_needs_exactly_one_of_key_or_sha256() -> None:
    for entry in (ClientKeyConfig(tenant="a"), ClientKeyConfig(tenant="a", key="k", sha256="0")):
        with pytest.raises(ConfigError, match="exactly one"):
            KeyRing.from_config(AuthConfig(client_keys=[entry]))
