"""The distribution: the core imports without any agent framework, the top-level
``adapters/`` folder imports as ``muxi_isolation.adapters`` from an editable install and from
a built wheel alike, and the wheel ships the OpenAPI document the server serves."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from _examples import user_env

from muxi_isolation._openapi import openapi_document

ROOT = Path(__file__).resolve().parents[1]

BLOCK_FRAMEWORKS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"langchain_core", "langchain", "llama_index", "langgraph"}:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
"""


def run(code: str, cwd: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_core_imports_without_frameworks(tmp_path: Path) -> None:
    out = run(
        BLOCK_FRAMEWORKS
        + "import pkgutil, importlib, muxi_isolation\n"
        + "for m in pkgutil.walk_packages(muxi_isolation.__path__, 'muxi_isolation.'):\n"
        + "    if '.adapters' not in m.name: importlib.import_module(m.name)\n"
        + "iso = muxi_isolation.Isolation()\n"
        + "s = iso.create_session('tenant_a:user_1')\n"
        + "loaded = [k for k in sys.modules if k.startswith(('langchain', 'llama'))]\n"
        + "print(s.user_id, sorted(loaded))\n",
        cwd=tmp_path,
    )
    assert out.strip() == "tenant_a:user_1 []"


def test_editable_install_maps_adapters(tmp_path: Path) -> None:
    out = run("import muxi_isolation.adapters as a; print(a.__file__)", cwd=tmp_path)
    assert Path(out.strip()).resolve() == ROOT / "adapters" / "__init__.py"


def test_the_wheel_ships_the_adapters_inside_the_package_and_the_openapi_document(
    tmp_path: Path,
) -> None:
    # one test: a wheel build costs seconds of CPU, and xdist could split a shared fixture
    build = ["build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)]
    subprocess.run(  # the build runs none of our code: untraced (user_env)
        [sys.executable, "-m", *build], env=user_env(), check=True, capture_output=True
    )
    [wheel] = tmp_path.glob("muxi_isolation-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (ROOT / "adapters").glob("*.py"):
        assert f"muxi_isolation/adapters/{source.name}" in names
    assert not any(n.startswith("adapters/") for n in names)
    assert "muxi_isolation/openapi.yaml" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    out = run(
        "import json, muxi_isolation.adapters as a, muxi_isolation.server as s\n"
        "print(a.__file__)\n"
        "print(s.__file__)\n"
        "print(json.dumps(s.openapi_document(), sort_keys=True))\n",
        cwd=tmp_path,
        PYTHONPATH=str(unpacked),
        PYTHONNOUSERSITE="1",
    )
    adapters, server, served = out.splitlines()
    for where in (adapters, server):
        assert Path(where).resolve().is_relative_to(unpacked.resolve())
    assert json.loads(served) == openapi_document()
