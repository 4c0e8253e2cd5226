"""celsync: Asterisk CEL to correct, idempotent CRM call records."""

__version__ = "0.1.0"
