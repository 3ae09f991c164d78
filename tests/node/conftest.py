"""The throwaway PostgreSQL cluster (tests/pg.py) for these tests."""

from tests.pg import postgres, postgres_url  # noqa: F401
