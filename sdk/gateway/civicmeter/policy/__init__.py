"""Organisation policy: the file's model and loader, and the decision it makes for a request.

organization.py is the policy of an organisation and the file's loading; each block of the file
has its module (working_time, detectors, budgets, alert_routing, enforcement), read with the
line of every value through yaml_source; document.py holds the checks they share and
PolicyError. decision.py decides a request; compiled.py is the policy as the decision service
sends it to a gateway.

Shipped with the gateway SDK because a gateway decides locally with the same code the services
use; the services depend on it, never the reverse.
"""
