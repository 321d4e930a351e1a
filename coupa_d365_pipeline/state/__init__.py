"""The connector's own durable state (SQLAlchemy; SQLite by default, PostgreSQL in production)."""
