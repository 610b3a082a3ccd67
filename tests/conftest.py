"""Shared test settings: the suite writes only under pytest's tmp_path, so hypothesis keeps no
example database in the checkout (pytest.ini turns pytest's own cache off for the same reason)."""
from hypothesis import settings

settings.register_profile("no-database", database=None)
settings.load_profile("no-database")
