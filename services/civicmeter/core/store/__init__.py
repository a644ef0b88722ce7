"""Storage: every ClickHouse table civicmeter keeps, and the SQL that reads and writes them.

connection (clients, the embedded engine), migrations (the schema's history), rollups (the
registry of pre-aggregated tables), and one module per kind of record: alerts, seats, budgets.
"""
