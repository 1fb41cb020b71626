"""Integration tests use ``local_stack`` and ``clean_stack`` from tests/conftest.py.

They are defined at the top level so that tests/e2e shares the same session stack: one moto
server and one redis-server for the whole run.
"""
