"""The LlamaIndex adapter's public names, and its error when LlamaIndex is not installed."""

from __future__ import annotations

import subprocess
import sys

import muxi_isolation.adapters.llamaindex as adapter


def test_public_names_are_pinned() -> None:
    assert sorted(adapter.__all__) == [
        "HashingEmbedding",
        "LlamaIndexAgent",
        "MuxiChatStore",
        "MuxiDBChatStore",
        "MuxiVectorStore",
        "ScopedRetriever",
        "ScopedVectorStore",
        "stamp_nodes",
        "to_chat_message",
        "to_filter",
        "to_message",
    ]
    assert all(hasattr(adapter, name) for name in adapter.__all__)


def test_missing_llamaindex_names_the_extra_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = None\n"
        "sys.modules['llama_index.core'] = None\n"
        "from muxi_isolation import AdapterUnavailable\n"
        "try:\n"
        "    import muxi_isolation.adapters.llamaindex\n"
        "except AdapterUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == (
        "llama-index-core is not installed: pip install 'muxi-isolation[llamaindex]'"
    )


def test_the_core_does_not_import_llamaindex() -> None:
    code = (
        "import sys, muxi_isolation, muxi_isolation.stores\n"
        "print(any(m.startswith('llama_index') for m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
