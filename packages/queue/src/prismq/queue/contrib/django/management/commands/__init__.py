"""``manage.py prismq_worker``."""
