"""The tutorial notebooks, run by nbval (see conftest.py).

This file makes ``notebooks/`` a package only so that pytest imports ``notebooks/conftest.py``
as ``notebooks.conftest``: a second top-level module named ``conftest`` would replace
``tests/conftest.py`` in ``sys.modules`` and break the tests' ``from conftest import ...``.
"""
