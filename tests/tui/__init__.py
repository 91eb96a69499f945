"""Tests of the Textual screen: Pilot-driven behaviour, the reader's batching, layout snapshots."""
