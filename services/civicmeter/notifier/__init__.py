"""notifier: delivers newly opened alerts to the webhooks their organisation's policy names."""
