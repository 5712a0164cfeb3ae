"""One module per measurement; each exposes ``NAME``, ``TITLE`` and ``run(settings)``."""
