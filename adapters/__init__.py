"""Framework adapters, imported as ``muxi_isolation.adapters.<framework>``.

Each imports its framework lazily and, when it is missing, raises ``AdapterUnavailable``
with the ``pip install 'muxi-isolation[extra]'`` line that fixes it.
"""
