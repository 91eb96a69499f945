"""The step's batch is the one the training step consumes. A loader read ahead (accelerate's
``DataLoaderShard``, the HF Trainer) yields batch k+1 from the DataLoader before the loop gets
batch k: the batch index, the labels of the vectors and ``from_loader`` follow the batch the
model is fed, not the one fetched last. A plain loop reads as before, a stale batch fed again
does not take the step back, and a loop that feeds no module keeps the latest batch yielded.

The context and provenance are installed in this process as the agent installs them; the
patched torch entry points are put back after each test.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cossim_tui.agent.context import TrainingContext
from cossim_tui.agent.transfer import HostTransfer
from fixtures.prefetching_loader import PrefetchingLoader  # accelerate's DataLoaderShard, as the run's fixture has it


def snapshot(context: TrainingContext) -> dict[str, float]:
    """The context as an intercepted call reads it."""
    transfer = HostTransfer()
    finish = context.queue_snapshot(transfer)
    transfer.fetch()
    return finish()


def data(batches: int = 4, size: int = 4) -> TensorDataset:
    return TensorDataset(torch.randn(batches * size, 6), torch.randint(0, 3, (batches * size,)))


def test_a_loader_read_one_batch_ahead_gives_the_batch_the_model_consumes(watched):
    model, context = nn.Linear(6, 2), watched.context
    seen, labelled, recognised = [], [], []
    loader = PrefetchingLoader(data(), batch_size=4)
    for _ in range(2):
        for features, labels in loader:
            made = watched.provenance.made_by(model(features))
            seen.append((context.epoch, context.batch))
            labelled.append(made is not None and made.labels is labels)
            recognised.append(context.from_loader(features) and context.labels_of(features) is labels)
    assert seen == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert labelled == [True] * 8, "the vectors carry their own batch's labels"
    assert recognised == [True] * 8, "the consumed batch is the loader's"


def test_a_plain_loop_reads_each_batch_and_a_stale_batch_does_not_take_it_back(watched):
    model, context = nn.Linear(6, 2), watched.context
    seen, previous = [], None
    for features, _ in DataLoader(data(), batch_size=4):
        model(features)
        if previous is not None:
            model(previous)  # the last step's batch again: a bug to find, not the step's batch
        seen.append(context.batch)
        previous = features
    assert seen == [0, 1, 2, 3]


def test_a_loop_that_feeds_no_module_keeps_the_latest_batch(watched):
    """Its steps compare the batch's own tensors: a cosine call is all that happens per batch."""
    seen = []
    for _ in DataLoader(data(), batch_size=4):
        seen.append(snapshot(watched.context)["batch"])
    assert seen == [0, 1, 2, 3]


def test_a_loader_read_ahead_whose_batches_are_copied_to_the_device_still_counts_right(watched):
    """On a GPU the model is fed a copy of the batch (accelerate's ``send_to_device``), never
    the batch itself: the read-ahead is seen from the second batch being fetched before anything
    was done with the first."""
    model, context = nn.Linear(6, 2), watched.context
    seen = []
    loader = PrefetchingLoader(data(), batch_size=4)
    for _ in range(2):
        for features, _ in loader:
            model(features.clone())  # what .to("cuda") hands the model: other memory
            seen.append(snapshot(context)["batch"])
    assert seen == [0, 1, 2, 3] * 2


def test_another_loaders_batches_are_not_taken_for_a_read_ahead(watched):
    """An eval loader between two training batches: a training batch fed afterwards is a batch
    of that loader, and says nothing of the eval loader's step."""
    model, context = nn.Linear(6, 2), watched.context
    train = iter(DataLoader(data(), batch_size=4))
    features, _ = next(train)
    for evaluated, _ in DataLoader(data(batches=2), batch_size=4):
        model(evaluated)
    model(features)
    assert context.batch == 1, "the eval loader's last batch"
