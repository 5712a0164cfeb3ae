"""Checked by mypy (the lint session), not run by pytest: public signatures are precise."""
