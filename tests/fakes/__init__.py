"""Fake CRM servers and call-record builders for the CRM sink tests and the backlog benchmark."""
