"""Storage: the ClickHouse tables civicmeter keeps, and the SQL that reads and writes them.

connection (clients, the embedded engine, deadlines), timing (every call's duration),
migrations (the schema's history), rollups (the registry of pre-aggregated tables), ledger
(rated events and re-rating corrections), and one module per kind of record: alerts, seats,
budgets (spend), notifications. The sink's write path (sink/) alone writes the ledger and the
alert tables, through ClickHouse's own protobuf parsing (protobuf_schema).
"""
