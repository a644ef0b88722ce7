"""Billing: seats, budgets, re-rating and reconciliation over the stored ledger."""
