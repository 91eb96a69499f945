"""What runs inside the training script: interception, capture, evidence and stepping control.

Nothing here imports textual or rich, and nothing here formats for a screen.
"""
