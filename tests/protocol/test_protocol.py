"""The wire between the training script and the screen: every message arrives as it was sent,
frames survive any split of the byte stream, and a malformed or hostile frame can only ever
raise ``ProtocolError`` (the launcher/TUI catch exactly that and show a broken channel; any
other exception would crash the reader instead of reaching the screen)."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cossim_tui import protocol
from cossim_tui.protocol import (
    MAX_FRAME,
    AgentConfig,
    CallSite,
    Connection,
    Finding,
    FrameDecoder,
    Hello,
    ModuleCall,
    Mute,
    Pause,
    ProtocolError,
    Relation,
    Resume,
    ScriptEnded,
    Similarity,
    Spread,
    StepCaptured,
    StorageInfo,
    TensorSummary,
    TorchHooked,
    ValueStats,
    decode_message,
    encode,
    convert,
    to_builtins,
)

# --------------------------------------------------------------------------------------
# Realistic messages
# --------------------------------------------------------------------------------------


def _summary(expr: str, grad_fn: str | None, ptr: int, made_by: ModuleCall | None) -> TensorSummary:
    return TensorSummary(
        expr=expr,
        shape=[1, 32],
        dtype="float32",
        device="cpu",
        layout="strided",
        numel=32,
        requires_grad=grad_fn is not None,
        grad_fn=grad_fn,
        is_leaf=grad_fn is None,
        norm=Spread(min=3.125, mean=3.125, max=3.125),
        rows=1,
        stats=ValueStats(min=-1.5, max=2.25, mean=0.0625, std=0.75),
        nan=0,
        inf=0,
        preview=[0.5, -1.5, 2.25, 0.0, 1e-07, -3.0],
        storage=StorageInfo(ptr=ptr, offset=32, strides=[32, 1], element_size=4, span=[ptr + 128, ptr + 256]),
        sampled=False,
        made_by=made_by,
        note=None,
    )


def _step() -> StepCaptured:
    return StepCaptured(
        step=16,
        function="cosine_similarity",
        site=CallSite(
            path="train.py",
            line=42,
            function="train_epoch",
            first_line=39,
            lines=["    for batch in loader:", "        z = model(batch)", "", "        sim = F.cosine_similarity(", "            vector1, vector2, dim=-1", "        )"],
            call_start=42,
            call_end=44,
        ),
        args=[
            _summary("vector1", "AddmmBackward0", 140_000_000_000, ModuleCall(module="VGG", call=17, step=16)),
            _summary("vector2", None, 140_000_004_096, None),
        ],
        relation=Relation(
            same_object=False,
            shares_storage=False,
            equal_values=True,
            max_abs_diff=0.0,
            dim=-1,
            dim_size=32,
            broadcast_shape=None,
        ),
        cos=Similarity(
            count=1,
            min=1.0,
            mean=1.0,
            max=1.0,
            first=[1.0],
            angle_deg=Spread(min=0.0, mean=0.0, max=0.0),
            nan=0,
        ),
        error=None,
        findings=[
            Finding(
                code="stale-partner",
                severity="error",
                message="vector2 is step 0's vector1 (same memory)",
                site="train.py:42",
                step=16,
                evidence=["args.1.storage.ptr", "relation.equal_values"],
                muted=False,
            ),
            Finding(code="detached-partner", severity="info", message="only vector1 carries grad", site="train.py:42", step=16, muted=True),
        ],
        context={"epoch": 0.0, "batch": 16.0, "loss": 0.69, "lr": 0.01},
        paused=True,
        label="epoch 0 · batch 16",
        wall_time=1722.5,
    )


def _broadcast_step() -> StepCaptured:
    """The optional branches the first message leaves empty: a broadcast, a failed call."""
    message = _step()
    message.relation = Relation(
        same_object=False, shares_storage=True, equal_values=None, max_abs_diff=None, dim=-1, dim_size=3, broadcast_shape=[5, 5, 3]
    )
    message.args[1].note = "sparse_coo tensor: values not summarised"
    message.args[1].stats = None
    message.args[1].norm = None
    message.args[1].storage = None
    message.args[1].sampled = True
    message.cos = None
    message.error = "RuntimeError: expected common dtype to be floating point, yet common dtype is Long"
    message.findings = []
    message.context = {}
    message.label = None
    return message


MESSAGES = [
    Hello(pid=4242, python="3.11.9", target="train.py", argv=["train.py", "--epochs", "1", "ünïcode ✓"]),
    TorchHooked(version="2.4.1+cu121", intercepted=["torch.nn.functional.cosine_similarity", "torch.nn.CosineSimilarity"]),
    _step(),
    _broadcast_step(),
    ScriptEnded(status="error", exit_code=1, exception="ValueError: loss is nan"),
    ScriptEnded(status="finished", exit_code=0, exception=None),
    Resume(mode="continue"),
    Pause(),
    Mute(code="stale-partner", site="*"),
    protocol.SetBreak(condition="cos.mean > 0.999"),
    protocol.BreakChanged(condition="", error="cos.mean > 0.999: RuntimeError: boom (turned off)", step=12),
    protocol.Start(config=protocol.AgentConfig()),
    protocol.Start(config=protocol.AgentConfig(mode="run", break_on=["never"], ignore=["collapse"], max_steps=3, watch=["m:f"], pictures="none")),
]


def _body(message: protocol.Message) -> bytes:
    frame = encode(message)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    return frame[4:]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{type(m).__name__}")
def test_every_message_round_trips(message: protocol.Message) -> None:
    decoded = decode_message(_body(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_every_message_type_is_covered_by_the_round_trip() -> None:
    assert {type(m) for m in MESSAGES} == set(protocol.MESSAGE_TYPES.values())


def test_step_details_survive_the_wire() -> None:
    decoded = decode_message(_body(_step()))
    assert isinstance(decoded, StepCaptured)
    assert decoded.site.label == "train.py:42"
    assert decoded.args[0].grad_fn == "AddmmBackward0"
    assert decoded.args[0].made_by == ModuleCall(module="VGG", call=17, step=16)
    assert decoded.args[1].storage is not None and decoded.args[1].storage.ptr == 140_000_004_096
    assert decoded.findings[0].evidence == ["args.1.storage.ptr", "relation.equal_values"]
    assert decoded.findings[1].muted is True
    assert isinstance(decoded.cos, Similarity) and isinstance(decoded.cos.angle_deg, Spread)


def test_integers_are_accepted_where_floats_are_expected() -> None:
    # json.dumps writes 1.0 as 1.0, but another producer may write 1: the value is the same.
    body = json.loads(_body(_step()))
    body["cos"]["max"] = 1
    body["wall_time"] = 17
    decoded = decode_message(json.dumps(body))
    assert isinstance(decoded, StepCaptured)
    assert decoded.cos is not None and decoded.cos.max == 1.0 and isinstance(decoded.cos.max, float)
    assert decoded.wall_time == 17.0 and isinstance(decoded.wall_time, float)


def test_agent_config_round_trips_through_json() -> None:
    config = AgentConfig(mode="continue", break_on=["warning", "stale-partner"], ignore=["broadcast"], max_steps=17, watch=["model:score"])
    text = json.dumps(to_builtins(config))
    assert convert(json.loads(text), AgentConfig) == config
    assert convert({}, AgentConfig) == AgentConfig()


# --------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------


def test_frames_split_at_every_byte_boundary() -> None:
    stream = b"".join(encode(m) for m in MESSAGES[:3])
    expected = [_body(m) for m in MESSAGES[:3]]
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        bodies = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert bodies == expected, f"split at byte {cut}"
        assert decoder.pending == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    for i in range(len(stream)):
        bodies += decoder.feed(stream[i : i + 1])
    assert [decode_message(b) for b in bodies] == MESSAGES


def test_several_frames_in_one_chunk() -> None:
    decoder = FrameDecoder()
    bodies = decoder.feed(b"".join(encode(m) for m in MESSAGES) + encode(Pause())[:6])
    assert [decode_message(b) for b in bodies] == MESSAGES
    assert decoder.pending == 6
    assert [decode_message(b) for b in decoder.feed(encode(Pause())[6:])] == [Pause()]


def test_length_prefix_above_max_frame_is_refused() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(struct.pack(">I", MAX_FRAME + 1) + b"{}")


def test_length_prefix_of_exactly_max_frame_waits_for_the_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", MAX_FRAME) + b"{") == []


def test_encoding_a_message_above_max_frame_is_refused() -> None:
    with pytest.raises(ProtocolError):
        encode(Hello(pid=1, python="3.11", target="t.py", argv=["x" * (MAX_FRAME + 1)]))


# --------------------------------------------------------------------------------------
# Validation: only ProtocolError ever escapes
# --------------------------------------------------------------------------------------


def _valid_hello() -> dict:
    return {"kind": "hello", "pid": 7, "python": "3.11", "target": "train.py", "argv": ["train.py"]}


def _with(**changes: object) -> str:
    body = _valid_hello()
    body.update(changes)
    return json.dumps(body)


def test_valid_hello_decodes() -> None:
    assert decode_message(json.dumps(_valid_hello())) == Hello(pid=7, python="3.11", target="train.py", argv=["train.py"])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not json at all", id="non-json"),
        pytest.param(b"\xff\xfe\x00garbage", id="invalid-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"kind": "hello", "pid": 7', id="truncated"),
        pytest.param(b"[1, 2, 3]", id="array"),
        pytest.param(b'"hello"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'{"kind": "launch-missiles"}', id="unknown-kind"),
        pytest.param(b'{"kind": 3}', id="kind-not-a-string"),
        pytest.param(b'{"pid": 7}', id="no-kind"),
        pytest.param(json.dumps({k: v for k, v in _valid_hello().items() if k != "pid"}).encode(), id="missing-field"),
        pytest.param(_with(pid="7").encode(), id="string-for-int"),
        pytest.param(_with(pid=True).encode(), id="bool-for-int"),
        pytest.param(_with(pid=7.0).encode(), id="float-for-int"),
        pytest.param(_with(pid=None).encode(), id="null-for-int"),
        pytest.param(_with(argv="train.py").encode(), id="string-for-list"),
        pytest.param(_with(argv=["train.py", 3]).encode(), id="int-in-list-of-str"),
        pytest.param(json.dumps({"kind": "resume", "mode": "fast"}).encode(), id="literal-not-allowed"),
        pytest.param(json.dumps({"kind": "resume", "mode": ["step"]}).encode(), id="literal-unhashable"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"kind": "hello", "argv": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep-nesting-in-field"),
        pytest.param(_with().replace('"pid": 7', '"pid": ' + "9" * 5000).encode(), id="huge-integer"),
    ],
)
def test_malformed_bodies_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(data)


def _step_body() -> dict:
    return json.loads(_body(_step()))


@pytest.mark.parametrize(
    "path, value",
    [
        pytest.param(("wall_time",), True, id="bool-for-float"),
        pytest.param(("cos", "mean"), "1.0", id="string-for-float"),
        pytest.param(("args", 0, "shape"), [1, 32.0], id="float-in-shape"),
        pytest.param(("args", 0, "requires_grad"), 1, id="int-for-bool"),
        pytest.param(("args", 1, "norm"), [1.0, 2.0, 3.0], id="list-for-object"),
        pytest.param(("relation", "equal_values"), "yes", id="string-for-optional-bool"),
        pytest.param(("findings", 0, "severity"), "fatal", id="unknown-severity"),
        pytest.param(("context",), [["loss", 0.5]], id="list-for-dict"),
        pytest.param(("context", "loss"), None, id="null-in-dict-of-float"),
        pytest.param(("site",), None, id="null-for-required-object"),
    ],
)
def test_nested_type_errors_raise_protocol_error(path: tuple, value: object) -> None:
    body = _step_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError):
        decode_message(json.dumps(body))


def test_missing_nested_field_raises_protocol_error() -> None:
    body = _step_body()
    del body["args"][1]["storage"]["ptr"]
    with pytest.raises(ProtocolError, match="ptr"):
        decode_message(json.dumps(body))


def test_huge_integer_in_a_float_field_raises_protocol_error() -> None:
    body = _step_body()
    body["context"]["loss"] = 10**400  # json.dumps writes all 401 digits; json.loads reads them back
    with pytest.raises(ProtocolError):
        decode_message(json.dumps(body))


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    # Integers beyond float range too: they must become ProtocolError, never OverflowError.
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_protocol_error(data: bytes | str) -> None:
    try:
        decode_message(data)
    except ProtocolError:
        pass


@FUZZ
@given(JSON_VALUES)
def test_fuzz_arbitrary_json_values(value: object) -> None:
    _decode_or_protocol_error(json.dumps(value))


@FUZZ
@given(st.sampled_from(sorted(protocol.MESSAGE_TYPES)), st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=8))
def test_fuzz_objects_of_a_known_kind(kind: str, fields: dict) -> None:
    fields["kind"] = kind
    _decode_or_protocol_error(json.dumps(fields))


def _leaf_paths(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaf_paths(v, path + (k,))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaf_paths(v, path + (i,))]
    return [path]


_STEP_PATHS = [p for p in _leaf_paths(json.loads(_body(_step()))) if p and p != ("kind",)]


@FUZZ
@given(st.sampled_from(_STEP_PATHS), JSON_VALUES)
def test_fuzz_one_field_of_a_real_step_replaced(path: tuple, value: object) -> None:
    body = _step_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _decode_or_protocol_error(json.dumps(body))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decode_or_protocol_error(data)


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_frame_decoder_never_raises_anything_but_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder()
    try:
        for body in decoder.feed(data):
            _decode_or_protocol_error(body)
    except ProtocolError:
        pass


# --------------------------------------------------------------------------------------
# Connection over a real socket
# --------------------------------------------------------------------------------------


@pytest.fixture
def socket_pair():
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    yield Connection(left), Connection(right)
    left.close()
    right.close()


def test_connection_carries_messages_both_ways(socket_pair) -> None:
    agent, launcher = socket_pair
    for message in MESSAGES:
        agent.send(message)
    launcher.send(Resume(mode="step"))
    received = [launcher.receive() for _ in MESSAGES]
    assert received == MESSAGES
    assert agent.receive() == Resume(mode="step")


def test_connection_returns_none_at_end_of_stream(socket_pair) -> None:
    agent, launcher = socket_pair
    agent.send(Mute(code="saturated", site="train.py:42"))
    agent.sock.shutdown(socket.SHUT_WR)
    assert launcher.receive() == Mute(code="saturated", site="train.py:42")
    assert launcher.receive() is None


def test_connection_stream_ending_inside_a_frame_is_a_protocol_error(socket_pair) -> None:
    agent, launcher = socket_pair
    agent.sock.sendall(encode(Pause())[:-2])
    agent.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError):
        launcher.receive()


def test_connection_big_message_from_several_threads_arrives_whole(socket_pair) -> None:
    agent, launcher = socket_pair
    big = _step()
    big.site.lines = ["x" * 1000] * 300  # ~300 kB: far more than one recv()
    senders = [threading.Thread(target=agent.send, args=(big,)) for _ in range(4)]
    for thread in senders:
        thread.start()
    received = [launcher.receive() for _ in senders]
    for thread in senders:
        thread.join()
    assert received == [big] * 4
