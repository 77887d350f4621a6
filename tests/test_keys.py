from __future__ import annotations

import pytest

from muxi_isolation import (
    AccessDenied,
    AccessLevel,
    ConfigError,
    Forbidden,
    KeyRing,
    Scope,
    load_config,
)
from muxi_isolation.keys import hash_key


def test_client_key_is_bound_to_its_tenant() -> None:
    ring = KeyRing()
    key = ring.add_client_key("tenant_a")
    assert key.startswith("fmc_") and len(key) > 40
    assert ring.authorize(key, Scope.parse("tenant_a:user_1")).tenant_id == "tenant_a"
    assert ring.authorize(key, Scope.parse("tenant_a:anyone")).level is AccessLevel.CLIENT
    with pytest.raises(Forbidden):
        ring.authorize(key, Scope.parse("tenant_b:user_1"))
    with pytest.raises(Forbidden):
        ring.authorize(key, Scope.parse("user_1"))  # the default tenant is another tenant
    with pytest.raises(Forbidden):
        ring.require_admin(key)


def test_default_tenant_key() -> None:
    ring = KeyRing()
    key = ring.add_client_key("default")
    assert ring.authorize(key, Scope.parse("user_123")).tenant_id == "default"
    assert ring.authorize(key, Scope.parse(None)).tenant_id == "default"


def test_an_admin_key_is_for_admin_calls_only() -> None:
    ring = KeyRing()
    admin = ring.add_admin_key()
    assert admin.startswith("fma_")
    assert ring.require_admin(admin).level is AccessLevel.ADMIN
    for user in ("tenant_b:x", "x", None):
        with pytest.raises(Forbidden, match="admin_impersonation"):
            ring.authorize(admin, Scope.parse(user))


def test_an_impersonating_admin_key_may_act_anywhere() -> None:
    ring = KeyRing()
    admin = ring.add_admin_key(impersonate=True)
    assert ring.authorize(admin, Scope.parse("tenant_b:x")).level is AccessLevel.ADMIN
    assert ring.require_admin(admin).impersonate


def test_grants_name_their_key_by_a_digest_prefix_never_the_key() -> None:
    ring = KeyRing()
    admin = ring.add_admin_key()
    client = ring.add_client_key("tenant_a")
    assert ring.identify(admin).key_id == "sha256:" + hash_key(admin)[:12]
    assert ring.identify(client).key_id == "sha256:" + hash_key(client)[:12]
    assert admin not in repr(ring.identify(admin))


@pytest.mark.parametrize("key", [None, "", "fmc_wrong", "x" * 10_000])
def test_missing_or_wrong_key(key: str | None) -> None:
    ring = KeyRing()
    ring.add_client_key("tenant_a", "fmc_right")
    with pytest.raises(AccessDenied) as info:
        ring.authorize(key, Scope.parse("tenant_a:u"))
    assert not isinstance(info.value, Forbidden)


def test_only_hashes_are_kept() -> None:
    ring = KeyRing()
    ring.add_client_key("tenant_a", "fmc_secret_value")
    assert b"fmc_secret_value" not in repr(vars(ring)).encode()
    assert len(ring) == 1


def test_from_config() -> None:
    config = load_config(
        {
            "auth": {
                "client_keys": [{"tenant": "tenant_a", "key": "fmc_a"}],
                "admin_keys": [{"sha256": hash_key("fma_admin").upper()}],
            }
        }
    )
    ring = KeyRing.from_config(config.auth)
    assert ring.identify("fmc_a").tenant_id == "tenant_a"
    assert ring.identify("fma_admin").level is AccessLevel.ADMIN
    assert not ring.identify("fma_admin").impersonate  # off unless the config says so


def test_admin_impersonation_comes_from_the_config() -> None:
    auth = {"admin_keys": [{"key": "fma_admin"}], "admin_impersonation": True}
    ring = KeyRing.from_config(load_config({"auth": auth}).auth)
    assert ring.authorize("fma_admin", Scope.parse("tenant_b:x")).impersonate


@pytest.mark.parametrize(
    "entry",
    [
        {"tenant": "t"},
        {"tenant": "t", "key": "k", "sha256": "ab" * 32},
        {"tenant": "t", "sha256": "zz"},
        {"tenant": "t", "sha256": "ab"},
        {"tenant": "a:b", "key": "k"},
    ],
)
def test_bad_key_config(entry: dict[str, str]) -> None:
    config = load_config({"auth": {"client_keys": [entry]}})
    with pytest.raises(ConfigError if "a:b" not in entry["tenant"] else ValueError):
        KeyRing.from_config(config.auth)
