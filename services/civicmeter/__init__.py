"""civicmeter: AI-usage metering and governance for public organisations."""

__version__ = "0.1.0"
