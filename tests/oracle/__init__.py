"""Test oracle: an independent, scalar Python port of Prosper202's PHP attribution engine.

See ``tests/oracle/php_engine.py`` (imported by the tests as ``oracle.php_engine``: pytest puts
``tests/`` on ``sys.path``). Nothing in this package imports ``attribution_pipeline``.
"""
