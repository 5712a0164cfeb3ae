"""Integrations with frameworks; each needs its framework installed (an extra)."""
