"""The adapters register what they add to the core (agent classes, importer conversions);
the core imports no adapter by name and no framework until an object of it is given."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from muxi_isolation import registry
from muxi_isolation.adapters import langchain as lc_adapter
from muxi_isolation.adapters import llamaindex as li_adapter

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_as_agent_loads_the_adapter_of_the_objects_framework_only() -> None:
    out = run(
        "import sys\n"
        "from llama_index.core.llms import MockLLM\n"
        "from muxi_isolation.agent import as_agent\n"
        "before = [m for m in sys.modules if m.startswith('muxi_isolation.adapters.')]\n"
        "agent = as_agent(MockLLM())\n"
        "print(type(agent).__module__, before,\n"
        "      'muxi_isolation.adapters.langchain' in sys.modules)\n"
    )
    assert out == "muxi_isolation.adapters.llamaindex._agent [] False"


def test_an_import_source_gets_its_conversion_from_the_adapter() -> None:
    out = run(
        "import sys\n"
        "from muxi_isolation.migrate.sources import LlamaIndexSimpleChat\n"
        "assert 'muxi_isolation.adapters.llamaindex' not in sys.modules\n"
        "from muxi_isolation.migrate.sources._adapters import llamaindex_to_message\n"
        "convert = llamaindex_to_message()\n"
        "print(convert.__module__)\n"
    )
    assert out == "muxi_isolation.adapters.llamaindex._messages"
    assert registry.conversion(registry.LLAMAINDEX, "to_message") is li_adapter.to_message
    assert registry.conversion(registry.LANGCHAIN, "to_record") is lc_adapter.to_record


@pytest.mark.parametrize(
    ("name", "adapter"),
    [("LangChainAgent", lc_adapter), ("LlamaIndexAgent", li_adapter)],
)
def test_the_agent_classes_moved_with_a_warning(name: str, adapter: object) -> None:
    import muxi_isolation.agent as core

    with pytest.warns(DeprecationWarning, match=f"{name} moved"):
        moved = getattr(core, name)
    assert moved is getattr(adapter, name)
    assert name not in core.__all__


def test_the_core_imports_no_adapter_by_name() -> None:
    by_name = re.compile(r"import_module\(\s*f?[\"']muxi_isolation\.adapters")
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "muxi_isolation").rglob("*.py"))
        if by_name.search(path.read_text(encoding="utf-8"))
        or "from muxi_isolation.adapters" in path.read_text(encoding="utf-8")
    ]
    assert found == []
