"""Wraps torch's cosine entry points, and nothing else, the moment the script imports torch.

Only the named functions are replaced (no ``__torch_function__`` mode, no per-op dispatch),
so every other op runs at full speed. The wrappers call the original first; its return
value or exception passes through untouched, and the capture happens after it, guarded so
that nothing in cossim-tui can raise into the script. Calls from DataLoader workers or other
forked processes, and calls made while cossim-tui itself is computing, go straight through.

torch is patched from a post-import hook rather than imported up front, so a script that
sets ``OMP_NUM_THREADS`` or ``CUDA_VISIBLE_DEVICES`` before ``import torch`` still works.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from cossim_tui.agent import library
from cossim_tui.agent.call import Intercepted
from cossim_tui.agent.hooks import as_builtin, scriptable, when_imported

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CallSink(Protocol):
    pid: int

    def on_call(self, seen: Intercepted) -> None: ...

    def torch_hooked(self, version: str, intercepted: list[str]) -> None: ...


_state = threading.local()
_sink: CallSink | None = None
_internal_dirs: tuple[str, ...] = (_HERE + os.sep, "<eval_with_key>")

# Modules whose forward() calls the functional form: the user called the module, so we say so.
_MODULE_FORWARDS = {
    ("distance.py", "forward"): "nn.CosineSimilarity",
    ("loss.py", "forward"): "nn.CosineEmbeddingLoss",
}


def user_frame(frame: types.FrameType | None) -> tuple[types.FrameType | None, str | None]:
    """The first frame outside torch and cossim-tui (and torch.fx's generated code), and the
    torch module it went through."""
    via = None
    while frame is not None and frame.f_code.co_filename.startswith(_internal_dirs):
        code = frame.f_code
        via = _MODULE_FORWARDS.get((os.path.basename(code.co_filename), code.co_name), via)
        frame = frame.f_back
    return frame, via


Parsed = tuple[Any, Any, Any, Any]
"""x1, x2, dim, eps of one call, as the function itself would read its arguments."""


def _cosine_similarity_args(args: tuple, kwargs: dict) -> Parsed:
    x1 = args[0] if len(args) > 0 else kwargs.get("x1")
    x2 = args[1] if len(args) > 1 else kwargs.get("x2")
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 1)
    eps = args[3] if len(args) > 3 else kwargs.get("eps", 1e-8)
    return x1, x2, dim, eps


def _embedding_loss_args(args: tuple, kwargs: dict) -> Parsed:
    x1 = args[0] if len(args) > 0 else kwargs.get("input1")
    x2 = args[1] if len(args) > 1 else kwargs.get("input2")
    # torch's cosine_embedding_loss reduces over the last dim with this epsilon.
    return x1, x2, -1, 1e-12


def _wrap(
    original: Callable[..., Any],
    function: str,
    names: tuple[str, str],
    parse: Callable[[tuple, dict], Parsed],
    similarity: Callable[[Any, Any, Any, Any], Any] | None = None,
) -> Callable[..., Any]:
    """A drop-in for ``original`` that reports each call from the script's main process."""

    def run_and_report(*args: Any, **kwargs: Any) -> Any:
        sink = _sink
        if sink is None or getattr(_state, "busy", False) or os.getpid() != sink.pid:
            return original(*args, **kwargs)
        _state.busy = True
        try:
            try:
                result = original(*args, **kwargs)
            except BaseException as exc:
                _report(sink, function, names, parse, args, kwargs, None, exc, None)
                raise
            _report(sink, function, names, parse, args, kwargs, result, None, similarity)
            return result
        finally:
            _state.busy = False

    agent = sys.modules[__name__]  # (a closure variable: ``scriptable`` gives the wrapper other globals)

    def intercepted(*args: Any, **kwargs: Any) -> Any:
        if agent._is_compiling():
            # torch.compile is tracing (with fake tensors): nothing real to report. With the
            # eager backends the traced graph calls us again at run time, with real tensors.
            agent._say_compiled_once()
            return original(*args, **kwargs)
        return run_and_report(*args, **kwargs)

    if inspect.isfunction(original):
        # A Python function of torch's (F.cosine_embedding_loss) or of the user's (--watch).
        return scriptable(intercepted, original)
    functools.update_wrapper(intercepted, original)
    intercepted.__cossim_tui_original__ = original  # type: ignore[attr-defined]
    return intercepted


def _not_compiling() -> bool:
    return False


_said_compiled: list[bool] = []


def _say_compiled_once() -> None:
    if not _said_compiled:
        _said_compiled.append(True)
        print(
            "cossim-tui: torch.compile traced a cosine call; with the default (inductor) backend such "
            "calls run compiled and are not intercepted — use torch.compile(backend=\"eager\") to see them",
            file=sys.stderr,
        )


_is_compiling: Callable[[], bool] = _not_compiling
"""``torch.compiler.is_compiling`` once torch is loaded: a constant True while dynamo traces."""


def _report(
    sink: CallSink,
    function: str,
    names: tuple[str, str],
    parse: Callable[[tuple, dict], Parsed],
    args: tuple,
    kwargs: dict,
    result: Any,
    error: BaseException | None,
    similarity: Callable[[Any, Any, Any, Any], Any] | None,
) -> None:
    frame, via = user_frame(sys._getframe(2))
    x1, x2, dim, eps = parse(args, kwargs)
    frame, passage = library.past_libraries(frame, _is_internal, x1, x2)
    if similarity is not None and error is None:
        try:
            result = similarity(x1, x2, dim, result)
        except Exception:  # noqa: BLE001 - the loss went through; we just cannot show a similarity
            result = None
    sink.on_call(Intercepted(via or function, names, x1, x2, dim, eps, result, error, frame, passage=passage))


def _is_internal(filename: str) -> bool:
    return filename.startswith(_internal_dirs)


def _patch(torch: types.ModuleType, sink: CallSink) -> None:
    global _internal_dirs, _is_compiling
    import torch.nn.functional as F

    _is_compiling = torch.compiler.is_compiling
    _internal_dirs = (_HERE + os.sep, os.path.dirname(os.path.abspath(torch.__file__)) + os.sep, "<eval_with_key>")
    cosine = getattr(F.cosine_similarity, "__cossim_tui_original__", F.cosine_similarity)
    loss = getattr(F.cosine_embedding_loss, "__cossim_tui_original__", F.cosine_embedding_loss)

    def loss_similarity(x1: Any, x2: Any, dim: Any, _result: Any) -> Any:
        with torch.no_grad():
            return cosine(x1.detach(), x2.detach(), dim=-1)

    wrapped_cosine = as_builtin(_wrap(cosine, "cosine_similarity", ("x1", "x2"), _cosine_similarity_args))
    F.cosine_similarity = wrapped_cosine
    torch.cosine_similarity = wrapped_cosine
    F.cosine_embedding_loss = _wrap(
        loss, "cosine_embedding_loss", ("input1", "input2"), _embedding_loss_args, loss_similarity
    )
    from cossim_tui.agent import intercept_matrix

    matrices = intercept_matrix.patch(torch)
    sink.torch_hooked(
        str(torch.__version__),
        [
            "torch.nn.functional.cosine_similarity",
            "torch.cosine_similarity",
            "torch.nn.CosineSimilarity",
            "torch.nn.functional.cosine_embedding_loss",
            "torch.nn.CosineEmbeddingLoss",
            *matrices,
        ],
    )


WATCH_KINDS = ("similarity", "distance", "loss")
"""What a watched function returns (``--watch MODULE:FUNCTION=KIND``): only a similarity is read
as the step's cosine; without a kind, or with another, the arguments are judged and the result
is not read (a distance ``2 - 2·cos`` or a loss would look like a saturated, imprecise cosine)."""


def parse_watch(spec: str) -> tuple[str, str, str | None]:
    """``MODULE:FUNCTION[=KIND]`` as (module, function, kind or None)."""
    target, _, kind = spec.partition("=")
    module, _, function = target.partition(":")
    return module, function, kind or None


def _watch_args(skip: int) -> Callable[[tuple, dict], Parsed]:
    """The pair of a watched function: its first two arguments after ``self`` (``skip``)."""

    def parse(args: tuple, kwargs: dict) -> Parsed:
        positional = args[skip:]
        values = list(positional[:2]) + list(kwargs.values())[: max(0, 2 - len(positional))]
        values += [None] * (2 - len(values))
        return values[0], values[1], -1, 1e-8

    return parse


_watches: dict[str, str] = {}
"""Each ``--watch`` spec and where it stands: ``waiting`` for its module, ``wrapped``, or
``said`` (a problem with it has been told to the user)."""


def _say(spec: str, problem: str) -> None:
    if _watches.get(spec) != "said":
        _watches[spec] = "said"
        print(f"cossim-tui: --watch {spec}: {problem}", file=sys.stderr)


def unloaded_watches() -> None:
    """Say, once, each ``--watch`` target whose module the script never imported: nothing of it
    was intercepted. Called when the script ends."""
    for spec, state in list(_watches.items()):
        if state == "waiting":
            module = parse_watch(spec)[0]
            _say(spec, f"{module} was never imported, so nothing was intercepted")


def _watch(spec: str, sink: CallSink) -> Callable[[types.ModuleType], None]:
    """``MODULE:FUNCTION[=KIND]`` (``FUNCTION`` may be ``Class.method``): wrap it like a cosine
    call."""
    _, qualname, kind = parse_watch(spec)
    function = f"watch {spec.partition('=')[0]}"
    _watches.setdefault(spec, "waiting")

    def patch(module: types.ModuleType) -> None:
        owner: Any = module
        *path, name = qualname.split(".")
        try:
            for part in path:
                owner = getattr(owner, part)
            found = getattr(owner, name)
        except AttributeError:
            _say(spec, f"{module.__name__} has no {qualname}")
            return
        # Looked up on the class itself: a plain function there is called with ``self`` first,
        # a staticmethod without it, a classmethod with the class.
        raw = inspect.getattr_static(owner, name, found) if isinstance(owner, type) else found
        if isinstance(raw, (staticmethod, classmethod)):
            original, skip = raw.__func__, int(isinstance(raw, classmethod))
        else:
            original, skip = found, int(isinstance(owner, type) and inspect.isfunction(found))
        original = getattr(original, "__cossim_tui_original__", original)
        try:
            parameters = list(inspect.signature(original).parameters)[skip:]
        except (TypeError, ValueError):
            parameters = []
        names = (parameters + ["arg0", "arg1"])[:2]
        similarity = _watched_result if kind == "similarity" else _not_a_similarity
        wrapped: Any = _wrap(original, function, (names[0], names[1]), _watch_args(skip), similarity)
        if isinstance(raw, staticmethod):
            wrapped = staticmethod(wrapped)
        elif isinstance(raw, classmethod):
            wrapped = classmethod(wrapped)
        setattr(owner, name, wrapped)
        _watches[spec] = "wrapped"

    return patch


def _watched_result(x1: Any, x2: Any, dim: Any, result: Any) -> Any:
    # The user said the function returns a similarity: shown as the step's cosine.
    return result if _is_tensor(result) else None


def _not_a_similarity(x1: Any, x2: Any, dim: Any, result: Any) -> Any:
    return None


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def probe(a: Any, b: Any, dim: int, label: str | None, frame: types.FrameType | None) -> None:
    """An explicit ``cossim_tui.probe(a, b)`` from the script: a step like any other."""
    sink = _sink
    if sink is None or getattr(_state, "busy", False) or os.getpid() != sink.pid:
        return
    import torch.nn.functional as F

    cosine = getattr(F.cosine_similarity, "__cossim_tui_original__", F.cosine_similarity)
    _state.busy = True
    try:
        result, error = None, None
        try:
            with torch_no_grad():
                result = cosine(a.detach(), b.detach(), dim=dim)
        except Exception as exc:  # noqa: BLE001 - shown with the step; the script is not affected
            error = exc
        sink.on_call(Intercepted("probe", ("a", "b"), a, b, dim, 1e-8, result, error, frame, label))
    finally:
        _state.busy = False


def agent_thread() -> None:
    """The calling thread is the agent's own: nothing it calls is a step. (Its torch calls
    through a function the user watches would otherwise be reported, and wait for themselves.)"""
    _state.busy = True


@contextlib.contextmanager
def agent_calls() -> Iterator[None]:
    """Within it, the calling thread's calls are the agent's own, as on ``agent_thread``."""
    was = getattr(_state, "busy", False)
    _state.busy = True
    try:
        yield
    finally:
        _state.busy = was


def before_graph_capture(wait: Callable[[], None]) -> None:
    """Call ``wait`` before any CUDA graph capture begins (``torch.cuda.CUDAGraph.capture_begin``,
    which ``torch.cuda.graph`` and ``torch.compile``'s CUDA graphs use). A capture in torch's
    default mode fails if another thread touches the device meanwhile, as the agent's own thread
    does while it waits for a copy: the script waits for it first."""
    import torch

    graph = getattr(torch.cuda, "CUDAGraph", None)
    begin = getattr(graph, "capture_begin", None)
    if begin is None or hasattr(begin, "__cossim_tui_original__"):
        return

    @functools.wraps(begin)
    def capture_begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        wait()
        return begin(self, *args, **kwargs)

    capture_begin.__cossim_tui_original__ = begin  # type: ignore[attr-defined]
    graph.capture_begin = capture_begin  # type: ignore[union-attr]


def torch_no_grad() -> Any:
    import torch

    return torch.no_grad()


def install(sink: CallSink, watch: list[str] | tuple[str, ...] = ()) -> None:
    """Patch torch now if the script already has it, else as soon as it is imported; the same
    for each ``--watch`` target's module."""

    def patch_torch(torch: types.ModuleType) -> None:
        try:
            _patch(torch, sink)
        except Exception as exc:  # noqa: BLE001 - the script must still get its torch
            print(f"cossim-tui: could not intercept torch: {type(exc).__name__}: {exc}", file=sys.stderr)

    global _sink
    _sink = sink
    when_imported("torch", patch_torch)
    for spec in watch:
        when_imported(parse_watch(spec)[0], _watch(spec, sink))
