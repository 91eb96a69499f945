"""The panels of the inspector screen, one widget per file."""
