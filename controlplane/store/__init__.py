"""The state store: SQLAlchemy tables and the repository functions (the only SQL)."""
