"""The finding codes of CONTRACT.md, with what each means and how to fix it.

One catalogue, read by the judges (severity), by ``check`` (the report) and by the TUI
(explanation and fix). No torch, so the TUI can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cossim_tui.protocol.records import SEVERITY_RANK, Severity


@dataclass(frozen=True)
class CodeInfo:
    code: str
    severity: Severity
    title: str
    explanation: str
    fix: str


_ENTRIES = [
    CodeInfo(
        "same-object",
        "error",
        "Both arguments are the same tensor",
        "The two arguments are one and the same Python object, so the similarity is exactly 1 "
        "(or undefined for zero vectors) whatever the model does. In a siamese loop this "
        "usually means the partner was assigned from the anchor (`vector2 = vector1`) on the "
        "first batch or on every batch.",
        "Compute the partner from its own input in this step: `vector2 = model(image2)` with "
        "`image2` drawn independently of `image1` (a second loader, a shuffled index, or the "
        "pairs your dataset defines). Never assign one side from the other.",
    ),
    CodeInfo(
        "shared-storage",
        "error",
        "The arguments are views of the same memory",
        "One argument is a view of the other: a `.detach()`, `.view()`, `.reshape()` without "
        "copy, a slice or `.data`. They are different tensor objects, but they read the same "
        "numbers, so any overlapping rows compare a vector with itself.",
        "Make the partner its own tensor: compute it from its own input instead of deriving it "
        "from the anchor. `.detach()` only cuts the gradient; it does not copy the values.",
    ),
    CodeInfo(
        "identical-values",
        "error",
        "The arguments hold identical values",
        "The two tensors live in different memory but are equal element by element, so every "
        "similarity is 1. Typical causes: the same input fed twice through a deterministic "
        "model (eval mode, no dropout or augmentation), or a `.clone()` of the anchor.",
        "Feed the two sides different inputs (a positive pair needs two different views or "
        "samples), or apply the random augmentation separately to each side. A `.clone()` "
        "copies the values; it does not make a new sample.",
    ),
    CodeInfo(
        "identical-inputs",
        "error",
        "Both vectors come from identical inputs",
        "The two vectors were produced by the same module from inputs with equal values, so "
        "the model had no chance to make them differ.",
        "Check how the pair is built: the second input should be a different image or a "
        "differently augmented view, not the first input again.",
    ),
    CodeInfo(
        "stale-partner",
        "error",
        "An argument is a tensor from an earlier step",
        "One argument is (the same memory as, or equal to) a tensor that was an argument at an "
        "earlier step: the partner was recycled from a previous batch, typically with "
        "`vector2 = vector1.detach()` at the end of the loop. The model is then compared with "
        "its own past output, which after a few updates is nearly the same vector.",
        "Recompute the partner from its own input in this step instead of carrying the previous "
        "batch's vector over. Do not recycle `.detach()`ed tensors as partners. If a memory bank "
        "of earlier embeddings is deliberate (MoCo-style), mute this code with "
        "`--ignore stale-partner`.",
    ),
    CodeInfo(
        "degenerate-dim",
        "error",
        "The similarity is taken over a dimension of size 1",
        "The reduced dimension has a single element, so each 'vector' is one number and the "
        "similarity can only be +1, -1 (or 0 for zeros). Usually `dim` points at the batch or a "
        "singleton dimension instead of the feature dimension.",
        "Take the similarity over the feature dimension: `dim=-1` for (batch, features) "
        "embeddings, or flatten the embeddings to (batch, features) first.",
    ),
    CodeInfo(
        "zero-norm",
        "error",
        "Some vectors have (almost) zero norm",
        "Vectors with norm at or below `eps` make the similarity about 0 by construction; "
        "the model produced dead (all-zero) embeddings, often after a final ReLU.",
        "Find why the embedding is zero: a ReLU before the output, a dead layer, or inputs "
        "that are all zero. Remove the final ReLU or add a normalisation layer.",
    ),
    CodeInfo(
        "non-finite",
        "error",
        "NaN or infinity in the arguments or the result",
        "A NaN or an infinity in either argument poisons the similarity of its row, and then "
        "the loss and the gradients.",
        "Find where the NaN first appears (a diverging loss, a log of 0, a division by 0, an "
        "overflow in float16); lower the learning rate or clip gradients; compute in float32.",
    ),
    CodeInfo(
        "collapse",
        "error",
        "The embeddings have collapsed to one direction",
        "The vectors of different samples all point the same way: √d times the mean "
        "per-channel standard deviation of the L2-normalised vectors is far below 1 (healthy "
        "is about 1). Every pair then has similarity close to 1, whatever the inputs.",
        "Look at the model and the loss: a loss with only positive pairs collapses (add "
        "negatives, or a stop-gradient and predictor as in SimSiam); check that preprocessing "
        "keeps the differences between inputs; lower the learning rate.",
    ),
    CodeInfo(
        "precision-loss",
        "warning",  # an error where the result is off by 0.1 or more (judge.PRECISION_WRONG)
        "The similarity is off from its float64 value",
        "Recomputed in float64, the similarity differs by more than 1e-3: float16 or bfloat16 "
        "rounding, or squared norms overflowing float32. From a difference of 0.1 on it is an "
        "error: the answer is wrong, not just imprecise.",
        "Compute the similarity in float32 or float64 (`F.cosine_similarity(a.float(), "
        "b.float())`), or scale the vectors down before comparing them.",
    ),
    CodeInfo(
        "nonnegative-features",
        "warning",
        "Both arguments are entirely non-negative",
        "Post-ReLU or softmax features are all ≥ 0, so their similarity is confined to [0, 1] "
        "with a high baseline: unrelated samples already look similar.",
        "Take the embedding before the final ReLU/softmax, or centre the features (subtract "
        "the batch mean) before comparing them.",
    ),
    CodeInfo(
        "common-mode",
        # Info, not a warning: standard healthy recipes carry the same offset as the buggy ones
        # (README, "Finding codes"), so it is a property worth knowing, not a defect to act on.
        "info",
        "A shared offset dominates the vectors",
        "All vectors share a large common component; the mean similarity between different "
        "rows drops by more than 0.3 once the batch mean is subtracted (beyond what chance explains "
        "in a small batch).",
        "Centre the embeddings (subtract the batch or running mean), or add a normalisation "
        "layer (BatchNorm/LayerNorm) before the similarity.",
    ),
    CodeInfo(
        "saturated",
        "warning",
        "The similarity is pinned at 1",
        "Every row has similarity ≥ 0.9999 at this call site for several consecutive steps, and "
        "no error explains it.",
        "Step through the loop and compare the two sides: are they built from different inputs? "
        "Project the embeddings (PCA) to see whether they bunch together; try float64.",
    ),
    CodeInfo(
        "constant-similarity",
        "warning",
        "The similarity does not change",
        "The similarity at this call site has not changed (within 1e-7) for several consecutive "
        "steps: the inputs or the model are not changing between steps.",
        "Check that the data loader yields new batches, that the optimizer steps (loss has a "
        "gradient, learning rate > 0), and that the tensors compared are recomputed each step.",
    ),
    CodeInfo(
        "detached-partner",
        "info",
        "Gradients flow through one side only",
        "One argument carries autograd history and the other does not, so the loss trains only "
        "one branch. That is deliberate in SimSiam/BYOL (stop-gradient on the target), and a "
        "bug when the partner was meant to be trained.",
        "If both branches should learn, compute the partner without `.detach()` or "
        "`torch.no_grad()`; if the stop-gradient is deliberate, nothing to do.",
    ),
    CodeInfo(
        "broadcast",
        "info",
        "The argument shapes differ and were broadcast",
        "The two shapes differ and torch broadcast them. That is right for a similarity matrix "
        "(`z[:, None]` against `z[None, :]`) and a silent bug when a (1, d) vector is compared "
        "against a whole batch by accident.",
        "Check that the broadcast shape is the one you meant.",
    ),
    CodeInfo(
        "same-batch-across-ranks",
        "error",
        "Two ranks compare the same vectors",
        "At the same step and call site, two ranks of the job hold equal vectors: every rank "
        "trains on the same batch. The data is not split between the ranks (no "
        "`DistributedSampler`, or the same seed and shuffle order on every rank), so the job "
        "does the work of one rank N times, and negatives gathered from the other ranks are "
        "copies of this rank's own samples, which pushes similarities towards 1.",
        "Give the loader a `DistributedSampler(dataset)` (and call `sampler.set_epoch(epoch)` "
        "every epoch), or seed each rank's shuffling differently (`seed + rank`). Lightning "
        "and accelerate add the sampler themselves unless it is turned off.",
    ),
    CodeInfo(
        "gathered-without-grad",
        "warning",
        "A side comes from all_gather, which carries no gradient",
        "One argument (or rows of it) was gathered from the other ranks with "
        "`torch.distributed.all_gather`, which returns plain tensors without autograd history. "
        "The other ranks' samples then act as constants in this rank's loss: their encoders "
        "get no gradient from it, and only the local rows train.",
        "Gather with `torch.distributed.nn.functional.all_gather(z)`, which passes gradients "
        "back to every rank, or put the local tensor back in its slot after the gather "
        "(`gathered[rank] = z`) if only the local rows should train.",
    ),
]

_ENTRIES += [
    CodeInfo(
        "duplicate-rows",
        "error",
        "A side of the similarity matrix has two equal rows",
        "The same vector (equal values) appears in two rows of one side of a similarity matrix. "
        "In a contrastive loss one of them is then a \"negative\" that is really the positive: "
        "the loss pushes a sample away from itself. Typical causes: a sample drawn twice into the "
        "batch (sampling with replacement, a repeated index), or a padded or duplicated row.",
        "Make every row of a batch a different sample: sample without replacement (or drop "
        "repeated indices), and mask duplicates out of the negatives if repeats are deliberate.",
    ),
    CodeInfo(
        "negatives-like-positives",
        "error",
        "Negatives are as similar as positives",
        "The mean similarity of the negatives in the similarity matrix is within 0.05 of the "
        "positives' for several steps at this call site: the contrastive signal is gone. This "
        "is collapse seen in the matrix: every row looks like every other.",
        "Look for what made the embeddings collapse: a temperature too high or too low, a "
        "learning rate too high, positives built from the same view, or an encoder whose output "
        "no longer depends on its input. Check the labels too, if they mark the positives.",
    ),
]

CATALOG: dict[str, CodeInfo] = {entry.code: entry for entry in _ENTRIES}
SEVERITIES: tuple[Severity, ...] = tuple(sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__, reverse=True))  # type: ignore[assignment]
"""Most severe first: ``error``, ``warning``, ``info``."""
