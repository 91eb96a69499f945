"""The Textual screen of cossim-tui: shows each intercepted call and sends the user's commands back.

Nothing here imports torch or numpy: everything on screen arrives already measured in
``protocol.StepCaptured``; this package only lays it out and formats it.
"""
