"""``made_by`` as models are really written: outputs that are tuples, lists, dicts, dataclasses
or a ``ModelOutput``; models wrapped in ``DataParallel`` or compiled; a loss module called between
two forward passes. The vectors still name the module that made them (the wrapped one, by its
own class), call numbers count that module's calls only, and two calls on equal inputs are still
recognised (sentence-transformers feeds a dict and returns one).

The provenance is installed in this process as the agent installs it; the patched torch entry
points are put back after each test.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict, UserDict
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from cossim_tui import protocol
from cossim_tui.agent.provenance import MadeBy, PendingIdenticalInputs, Provenance
from cossim_tui.agent.thumbnail import Thumbnails
from cossim_tui.agent.transfer import HostTransfer


@pytest.fixture
def provenance(monkeypatch: pytest.MonkeyPatch) -> Provenance:
    monkeypatch.setattr(nn.Module, "__call__", nn.Module.__dict__["__call__"])  # put back at teardown
    watched = Provenance(lambda: 0)
    watched.install()
    return watched


class ModelOutput(OrderedDict):
    """What transformers' ``ModelOutput`` is to cossim-tui: a dict subclass read by key or attribute."""

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Embeddings:
    pooled: torch.Tensor
    tokens: torch.Tensor


class Encoder(nn.Module):
    """Returns its embedding in the container it is asked for."""

    def __init__(self, returns: str = "tensor") -> None:
        super().__init__()
        self.returns = returns
        self.linear = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor):
        z = self.linear(x)
        return {
            "tensor": lambda: z,
            "tuple": lambda: (z, z.relu()),
            "list": lambda: [z.relu(), z],
            "dict": lambda: {"hidden": (z.relu(),), "embedding": z},
            "dataclass": lambda: Embeddings(pooled=z, tokens=z.relu()),
            "model-output": lambda: ModelOutput(last_hidden_state=z.relu(), pooler_output=z),
        }[self.returns]()


def _embedding(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    if isinstance(output, list):
        return output[1]
    if isinstance(output, Embeddings):
        return output.pooled
    if isinstance(output, ModelOutput):
        return output.pooler_output
    return output["embedding"]


@pytest.mark.parametrize("returns", ["tensor", "tuple", "list", "dict", "dataclass", "model-output"])
def test_a_vector_inside_the_models_output_container_is_made_by_the_model(provenance, returns):
    model = Encoder(returns)
    x = torch.randn(3, 6)
    output = model(x)
    made = provenance.made_by(_embedding(output))
    assert made is not None, f"a {returns} output loses made_by"
    assert (made.call.module, made.call.call) == ("Encoder", 0)
    assert made.input is not None and made.input() is x


def test_the_wrapped_module_is_named_by_its_own_class(provenance):
    """DataParallel (DistributedDataParallel and FSDP hold it the same way, in ``.module``) and
    ``torch.compile``'s wrapper (in ``._orig_mod``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inner = Encoder().to(device)
    made = provenance.made_by(nn.DataParallel(inner)(torch.randn(3, 6, device=device)))
    assert made is not None and made.call.module == "Encoder"
    assert made.module() is inner
    compiled = torch.compile(Encoder("tuple"), backend="eager")
    try:
        made_compiled = provenance.made_by(compiled(torch.randn(3, 6))[0])
    finally:
        torch._dynamo.reset()
    assert made_compiled is not None and made_compiled.call.module == "Encoder"
    assert made_compiled.module() is compiled._orig_mod


def test_call_numbers_count_the_calls_of_each_module_instance(provenance):
    """The loss module called between two forward passes does not shift the model's numbers, and
    BYOL's online and target networks (one class, two instances) count their own calls."""
    online, target, loss = Encoder(), Encoder(), nn.MSELoss()
    numbers = []
    for _ in range(3):
        a, b = online(torch.randn(3, 6)), target(torch.randn(3, 6))
        loss(a, b)
        numbers.append((provenance.made_by(a).call.call, provenance.made_by(b).call.call))
    assert numbers == [(0, 0), (1, 1), (2, 2)]
    assert provenance.made_by(online(torch.randn(3, 6))).module() is online


def identical_inputs(first: MadeBy | None, second: MadeBy | None) -> str | None:
    """What the step says of the two vectors' inputs (as the agent asks it, on one transfer)."""
    transfer = HostTransfer()
    pending = PendingIdenticalInputs(first, second, transfer)
    transfer.fetch()
    return pending.finish(transfer)


class SentenceEncoder(nn.Module):
    """sentence-transformers' shape: a dict of features in, the dict with an embedding added out,
    dropout on in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.dropout = nn.Dropout(0.1)

    def forward(self, features: dict) -> dict:
        embedding = self.dropout(self.embed(features["input_ids"]).mean(1))
        return {**features, "sentence_embedding": embedding}


def test_the_same_sentence_on_both_sides_is_seen_through_dicts(provenance):
    # Seeded: two dropout masks over 32 values are equal about once in 600 draws, and the RNG's
    # state would otherwise be whatever the tests before this one left.
    torch.manual_seed(0)
    model = SentenceEncoder().train()
    ids = torch.randint(0, 50, (4, 5))
    first = model({"input_ids": ids.clone(), "attention_mask": torch.ones(4, 5)})["sentence_embedding"]
    second = model({"input_ids": ids.clone(), "attention_mask": torch.ones(4, 5)})["sentence_embedding"]
    assert not torch.equal(first, second), "dropout: the vectors differ, the inputs do not"
    made = [provenance.made_by(first), provenance.made_by(second)]
    assert [m.call.call if m is not None else None for m in made] == [0, 1]
    assert identical_inputs(*made) == "SentenceEncoder from inputs with equal values"
    other = model({"input_ids": torch.randint(0, 50, (4, 5))})["sentence_embedding"]
    assert identical_inputs(made[0], provenance.made_by(other)) is None


def test_two_modules_calls_with_the_same_number_keep_their_own_pictures():
    pictures = Thumbnails()
    dark, light = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    dark[0, :, 0, 0] = 1.0  # a picture with a range, so the two differ
    modules = [nn.Identity(), nn.Identity()]
    first = pictures.of(MadeBy(protocol.ModuleCall("Encoder", 0, 0), weakref.ref(modules[0]), weakref.ref(dark)))
    second = pictures.of(MadeBy(protocol.ModuleCall("Encoder", 0, 0), weakref.ref(modules[1]), weakref.ref(light)))
    assert first is not None and second is not None
    assert first.rows != second.rows


class BatchEncoding(UserDict):
    """transformers' tokenizer output, which sentence-transformers hands its model and returns:
    a mapping that is not a dict."""


LIBRARY_LOSS = '''
import torch


class PairLoss(torch.nn.Module):
    """sentence-transformers' CosineSimilarityLoss(model): the loss runs the model itself."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen = []

    def forward(self, features, labels):
        embeddings = [self.model(f)["sentence_embedding"] for f in features]
        self.seen = embeddings
        return ((torch.cosine_similarity(embeddings[0], embeddings[1]) - labels) ** 2).mean()
'''


def test_a_library_loss_that_runs_the_model_leaves_the_model_its_vectors(provenance, tmp_path, monkeypatch):
    """The script's only call is ``loss_fn(features, labels)``; the vectors the loss compares are
    still made by the model, from the features (a mapping that is not a dict), and the same
    sentences on both sides are still seen."""
    packages = tmp_path / "site-packages"
    packages.mkdir()
    (packages / "pairloss_for_made_by.py").write_text(LIBRARY_LOSS)
    monkeypatch.syspath_prepend(str(packages))
    from pairloss_for_made_by import PairLoss

    class Model(SentenceEncoder):
        def forward(self, features):
            return BatchEncoding(super().forward(dict(features)))

    model = Model().train()
    loss_fn = PairLoss(model)
    ids = torch.randint(0, 50, (4, 5))
    loss_fn([BatchEncoding(input_ids=ids.clone()), BatchEncoding(input_ids=ids.clone())], torch.ones(4))
    made = [provenance.made_by(vector) for vector in loss_fn.seen]
    assert [(m.call.module, m.call.call) if m is not None else None for m in made] == [("Model", 0), ("Model", 1)]
    assert identical_inputs(*made) == "Model from inputs with equal values"
    # A module of the user's own calling the model (not a library's loss) is still the outermost.
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Model()

        def forward(self, features):
            return self.inner(features)["sentence_embedding"]

    assert provenance.made_by(Wrapper()(BatchEncoding(input_ids=ids))).call.module == "Wrapper"
