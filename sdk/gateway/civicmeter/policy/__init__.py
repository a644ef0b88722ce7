"""Organisation policy: the file's model and loader, and the decision it makes for a request.

Shipped with the gateway SDK because a gateway decides locally with the same code the services
use; the services depend on it, never the reverse.
"""
