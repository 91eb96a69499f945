"""Screens pushed over the inspector (help)."""
