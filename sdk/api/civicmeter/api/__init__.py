"""civicmeter's API contract: the messages and gRPC stubs generated from proto/.

Each proto package civicmeter.<name>.v1 is the Python package civicmeter.api.<name>.v1; the
proto names themselves (civicmeter.query.v1.QueryService) are unchanged.
"""
