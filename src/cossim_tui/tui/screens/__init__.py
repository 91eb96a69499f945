"""Screens pushed over the inspector (help, the findings summary)."""
