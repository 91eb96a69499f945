"""The channel between the training script and the screen: message types, one codec, framing.

``messages`` holds the messages (msgspec Structs, a union tagged by ``kind``) and ``records``
what a step carries; ``codec`` turns them into the one JSON body that travels and that a trace
records; ``framing`` puts bodies on a stream. Everything either side needs is importable from here. No torch, no textual.
"""

from __future__ import annotations

from cossim_tui.protocol.codec import (
    MAX_FRAME,
    Decoder,
    ProtocolError,
    convert,
    decode_message,
    encode,
    encode_body,
    encode_for_tools,
    finite_or_none,
    to_builtins,
)
from cossim_tui.protocol.framing import Connection, FrameDecoder
from cossim_tui.protocol.messages import (
    COMMAND_KINDS,
    CONFIG_ENV,
    CONNECT_ENV,
    FD_ENV,
    MESSAGE_TYPES,
    PICTURE_INTERVAL,
    RANKED,
    TOKEN_ENV,
    AgentConfig,
    AgentMessage,
    BreakChanged,
    Command,
    Hello,
    Message,
    Mute,
    Pause,
    Resume,
    ScriptEnded,
    SetBreak,
    Start,
    StepCaptured,
    TorchHooked,
)
from cossim_tui.protocol.records import (
    SEVERITY_RANK,
    CallSite,
    Finding,
    HardNegative,
    MatrixFigures,
    ModuleCall,
    Projection,
    Relation,
    Severity,
    Similarity,
    Spread,
    StorageInfo,
    TensorSummary,
    Thumbnail,
    ValueStats,
)

__all__ = [
    "COMMAND_KINDS", "CONFIG_ENV", "CONNECT_ENV", "FD_ENV", "MAX_FRAME", "MESSAGE_TYPES", "PICTURE_INTERVAL", "RANKED", "SEVERITY_RANK", "TOKEN_ENV",
    "AgentConfig", "AgentMessage", "BreakChanged", "CallSite", "Command", "Connection", "Decoder", "Finding",
    "FrameDecoder", "Hello", "Message", "ModuleCall", "Mute", "Pause", "Projection", "ProtocolError", "Relation",
    "Resume", "ScriptEnded", "SetBreak", "Severity", "Similarity", "Spread", "Start", "StepCaptured", "StorageInfo",
    "TensorSummary", "Thumbnail", "TorchHooked", "ValueStats", "convert", "decode_message", "encode", "encode_body", "encode_for_tools",
    "finite_or_none", "to_builtins",
]
__all__ += ["HardNegative", "MatrixFigures"]
