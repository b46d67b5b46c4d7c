"""Alerts: rules evaluated inside the coordinator on a fixed cadence, their state machine,
the windows they read, and the webhook notifier (also used by the outside monitor)."""
