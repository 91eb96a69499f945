"""Pure judgement: captured summaries and agent evidence in, findings out. No torch, no textual."""
