"""What several test modules share and none of them tests: the reference
helper's fake kernel (reference).

Imported as ``tests.support.NAME``: pytest puts the repository on sys.path
(pyproject.toml, ``pythonpath``)."""
