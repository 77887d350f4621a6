"""The adapter's public names, and the error when LangChain is not installed."""

from __future__ import annotations

import subprocess
import sys

import muxi_isolation.adapters.langchain as adapter


def test_public_names() -> None:
    assert sorted(adapter.__all__) == [
        "FilterDialect",
        "HashingEmbeddings",
        "LangChainAgent",
        "MuxiChatMessageHistory",
        "MuxiHistoryFactory",
        "MuxiRetriever",
        "MuxiVectorStore",
        "ScopedVectorStore",
        "UnsupportedStore",
        "from_record",
        "history_factory_config",
        "register_filter_dialect",
        "scope_vectorstore",
        "to_record",
    ]
    assert all(hasattr(adapter, name) for name in adapter.__all__)


def test_missing_langchain_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "from muxi_isolation.errors import AdapterUnavailable\n"
        "try:\n"
        "    import muxi_isolation.adapters.langchain\n"
        "except AdapterUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == (
        "langchain-core is not installed: pip install 'muxi-isolation[langchain]'"
    )
