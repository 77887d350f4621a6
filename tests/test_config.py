from __future__ import annotations

from pathlib import Path

import pytest

from muxi_isolation import ConfigError, MissingSecret, load_config
from muxi_isolation.config import DEFAULT_SQLITE_URL, resolve_secrets

SEED_YAML = """\
memory:
  persistent:
    enabled: true
    provider: postgresql
    connection_string: ${{ secrets.POSTGRES_URI }}
    user_isolation: true
  session_timeout: 3600 # 1 hour
"""


def test_seed_yaml_loads_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "muxi.yaml"
    path.write_text(SEED_YAML)
    for source in (path, str(path), SEED_YAML):
        config = load_config(source, secrets={"POSTGRES_URI": "postgresql://db/x"})
        assert config.memory.persistent.provider == "postgresql"
        assert config.memory.persistent.url == "postgresql://db/x"
        assert config.memory.session_timeout == 3600


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_URI", "postgresql://env/db")
    assert load_config(SEED_YAML).memory.persistent.connection_string == "postgresql://env/db"


def test_mapping_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", "env")
    assert resolve_secrets({"a": ["${{secrets.X}}-${{ secrets.X }}"]}, {"X": "map"}) == {
        "a": ["map-map"]
    }
    assert resolve_secrets(3) == 3


def test_missing_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTGRES_URI", raising=False)
    with pytest.raises(MissingSecret, match="POSTGRES_URI") as info:
        load_config(SEED_YAML)
    assert info.value.name == "POSTGRES_URI"


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("memory:\n  persistant: {}\n", "memory.persistant"),
        ("memory:\n  session_timeout: -5\n", "memory.session_timeout"),
        ("memory:\n  persistent:\n    provider: redis\n", "memory.persistent.provider"),
        ("memory:\n  persistent:\n    user_isolation: false\n", "always isolates"),
        ("nonsense: 1\n", "nonsense"),
        ("- a list\n", "mapping"),
        ("memory: [unclosed\n", "not valid YAML"),
        ('auth:\n  admin_impersonation: "yes"\n', "auth.admin_impersonation"),
        ("auth:\n  admin_impersonation: 1\n", "auth.admin_impersonation"),
    ],
)
def test_invalid_config_names_the_problem(yaml_text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(yaml_text)


def test_defaults_and_urls() -> None:
    config = load_config(None)
    assert config.memory.persistent.url == DEFAULT_SQLITE_URL
    assert (
        load_config({"memory": {"persistent": {"enabled": False}}}).memory.persistent.url
        == "memory://"
    )
    assert (
        load_config({"memory": {"persistent": {"provider": "memory"}}}).memory.persistent.url
        == "memory://"
    )
    with pytest.raises(ConfigError, match="connection_string"):
        _ = load_config(
            {"memory": {"persistent": {"provider": "postgresql"}}}
        ).memory.persistent.url


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.yaml"))


def test_auth_section() -> None:
    config = load_config(
        "auth:\n  client_keys:\n    - tenant: tenant_a\n      key: ${{ secrets.K }}\n"
        "  admin_keys:\n    - sha256: " + "ab" * 32 + "\n",
        secrets={"K": "fmc_x"},
    )
    assert config.auth.client_keys[0].key == "fmc_x"
    assert config.auth.admin_keys[0].sha256 == "ab" * 32
    assert config.auth.admin_impersonation is False  # an admin key acts as no user by default


def test_admin_impersonation_is_an_explicit_yaml_true() -> None:
    config = load_config("auth:\n  admin_impersonation: true\n")
    assert config.auth.admin_impersonation is True
