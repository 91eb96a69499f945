"""The embedding map: where the recent vectors of both sides lie, projected to two dimensions.

The article's advice is to look at the embeddings: collapsed vectors bunch into one point,
healthy ones spread into a cloud. Each call site keeps a bounded ring of its most recent rows
(``ROWS_PER_SIDE`` per argument, detached float32 copies) on the tensors' own device; they are
L2-normalised when projected, because cosine similarity only sees directions. Every ``EVERY`` steps at a site,
and at every step the script will stop at, the ring is projected onto its first two principal
components and only those coordinates cross the channel; and at the end of the run, every
site whose latest rows are in no map yet gets its map (``latest_maps``), so that the last map
on screen is the run's end, not the last one made while it ran. Vectors of one number (a
similarity over a dim of size 1) get a map too: their points lie on one axis, at ±1.

Beside each ring of rows is a ring of their labels (``-1`` where unknown), filled from the
labels the DataLoader's batch gave the vectors (see ``provenance``), so the map can colour
the points by class: a collapse then also shows whether the classes collapsed into each other.
The labels stay on the device with the rows and are read in the map's one transfer.

The PCA is ``torch.pca_lowrank``'s randomized range finder written out, because
``pca_lowrank`` draws its random probes from the global generator, which would change the
script's own random stream: here they are drawn once, from a private generator. Coordinates are multiplied by
√d so that a healthy cloud has a spread of about 1 whatever the width of the vectors (the
same unit as the ``collapse`` code's √d · std, which ``spread`` reports over all axes), and a
collapse is a dot well under 0.1.
Nothing here may raise into the script: a failure means no map for that step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cossim_tui.agent.tensors import reduced_dim
from cossim_tui.protocol import Projection

ROWS_PER_SIDE = 128
"""Rows kept per argument and call site: at most 256 points per map."""
ROWS_PER_CALL = 32
"""Rows one call adds per argument, so that a map spans at least four steps, not one batch."""
EVERY = 16
"""Steps between two maps of one site while the script runs on (a pause always gets one)."""
MAX_SITES = 64
"""Call sites with a ring; the least recently used one is dropped beyond this."""
PROBES = 6
"""Directions the range finder probes with: the 2 axes wanted and 4 to spare for accuracy."""
POWER_ITERATIONS = 2
DIGITS = 4
"""Decimals the coordinates keep on the wire (a healthy spread is about 1)."""


class _Ring:
    """The last rows of one argument at one site, and their labels, written in place."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.labels = torch.full((rows.shape[0],), -1, dtype=torch.int64, device=rows.device)
        """Each slot's row's label; -1 where unknown."""
        self.filled = 0
        self.next = 0
        self.steps = [0] * rows.shape[0]
        """The step each slot's row was written at."""
        self.labelled = [False] * rows.shape[0]
        """Whether each slot's row came with labels: known on the host, so that a site without
        any labels reads none back."""

    def add(self, rows: torch.Tensor, step: int, labels: torch.Tensor | None = None) -> None:
        """Write ``rows`` (and ``labels``, one per row, or none) after the last ones written."""
        capacity = self.rows.shape[0]
        rows = rows[-capacity:]
        labels = labels[-capacity:] if labels is not None else None
        count = rows.shape[0]
        end = self.next + count
        if end <= capacity:
            spans = [(self.next, end, 0, count)]
        else:
            split = capacity - self.next
            spans = [(self.next, capacity, 0, split), (0, count - split, split, count)]
        for start, stop, first, last in spans:
            self.rows[start:stop].copy_(rows[first:last])
            self.steps[start:stop] = [step] * (stop - start)
            if labels is not None:
                # The labels may be on the host while the rows are on a GPU (a model that moves
                # its input itself): queued without waiting, like the rows.
                self.labels[start:stop].copy_(labels[first:last], non_blocking=True)
            elif any(self.labelled[start:stop]):  # a script without labels launches nothing here
                self.labels[start:stop].fill_(-1)
            self.labelled[start:stop] = [labels is not None] * (stop - start)
        self.next = end % capacity
        self.filled = min(capacity, self.filled + count)


@dataclass
class _Site:
    rings: list[_Ring | None]
    last_map: int = -(1 << 62)


def _as_rows(x: torch.Tensor, dim: int, ndim: int) -> torch.Tensor | None:
    """``x`` as (rows, d) along the reduced dim (negative, relative to the broadcast shape)."""
    d = reduced_dim(dim, ndim)
    if x.dim() == 0 or -d > x.dim():
        return None
    moved = x.movedim(d, -1)
    return moved.reshape(-1, moved.shape[-1])


def _row_labels(x: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor | None, dim: int, ndim: int) -> torch.Tensor | None:
    """``labels`` when they name ``x``'s rows one to one: one per row, and ``x``'s leading axis
    (the batch the labels came with) is not the reduced one, so its rows are in batch order."""
    if labels is None or labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return None
    count = labels.shape[0]
    reduced = x.dim() + reduced_dim(dim, ndim)
    if reduced == 0 or x.shape[0] != count or rows.shape[0] != count:
        return None
    # Labels on another accelerator than the rows could only be copied by waiting for it.
    if labels.device != rows.device and labels.device.type != "cpu":
        return None
    return labels


class ProjectionMaps:
    """Per-site rings of recent rows, and their 2-D PCA when one is due."""

    def __init__(self, rows_per_side: int = ROWS_PER_SIDE, every: int = EVERY) -> None:
        self.rows_per_side = rows_per_side
        self.every = every
        self._sites: dict[str, _Site] = {}
        self._probes: dict[tuple[int, torch.device], torch.Tensor] = {}
        """Fixed random directions per width and device, drawn once from a private generator."""

    def observe(
        self,
        step: int,
        site: str,
        x1: Any,
        x2: Any,
        dim: int,
        *,
        force: bool = False,
        labels: Sequence[torch.Tensor | None] = (None, None),
    ) -> Projection | None:
        """Remember this call's rows, with the labels of each argument's rows where known (one
        per row of its leading axis: the batch's labels); the map of the site when one is due
        (or ``force``)."""
        try:
            with torch.no_grad():
                return self._observe(step, site, x1, x2, dim, force, labels)
        except Exception:  # noqa: BLE001 - a map is a picture: never worth breaking the script
            return None

    def _observe(
        self, step: int, site: str, x1: Any, x2: Any, dim: int, force: bool, labels: Sequence[torch.Tensor | None]
    ) -> Projection | None:
        if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)):
            return None
        ndim = max(x1.dim(), x2.dim())
        if not -max(ndim, 1) <= dim < max(ndim, 1):
            return None
        rows = [_as_rows(x, dim, ndim) for x in (x1, x2)]
        usable = [
            r
            for r in rows
            if r is not None
            and r.layout == torch.strided
            and not r.is_meta
            and r.numel() > 0
            and (r.is_floating_point() or r.is_complex())
        ]
        if len(usable) != 2 or usable[0].shape[-1] != usable[1].shape[-1] or usable[0].device != usable[1].device:
            return None
        width, device = usable[0].shape[-1], usable[0].device
        per_call = min(self.rows_per_side, ROWS_PER_CALL)
        entry = self._sites.pop(site, None)  # re-inserted: the dict's order is least recently used first
        if entry is None or any(r is None or r.rows.shape[1] != width or r.rows.device != device for r in entry.rings):
            entry = _Site([None, None])
        while len(self._sites) >= MAX_SITES:
            del self._sites[next(iter(self._sites))]
        self._sites[site] = entry
        for side, (x, r, side_labels) in enumerate(zip((x1, x2), usable, labels)):
            ring = entry.rings[side]
            if ring is None:
                ring = entry.rings[side] = _Ring(torch.empty(self.rows_per_side, width, device=device, dtype=torch.float32))
            data = r.detach()[:per_call]
            row_labels = _row_labels(x, r, side_labels, dim, ndim)
            ring.add(data.abs() if data.is_complex() else data, step, row_labels[:per_call] if row_labels is not None else None)
        if not force and step - entry.last_map < self.every:
            return None
        entry.last_map = step
        return self._project(step, entry, width)

    def map_now(self, step: int, site: str) -> Projection | None:
        """The map of ``site`` as its rows are now (this step's fed already), at ``step``: for a
        step the script stops at after its rows were fed without a map being due."""
        entry = self._sites.get(site)
        if entry is None:
            return None
        rings = [r for r in entry.rings if r is not None and r.filled]
        if len(rings) != 2:
            return None
        try:
            with torch.no_grad():
                projection = self._project(step, entry, rings[0].rows.shape[1])
        except Exception:  # noqa: BLE001 - a map is a picture: never worth breaking the script
            return None
        if projection is not None:
            entry.last_map = max(entry.last_map, step)
        return projection

    def latest_maps(self) -> list[Projection]:
        """For the end of the run: the map of every site whose latest rows are in no map made
        yet (the script ran on after its last one), each at the last step whose rows it holds."""
        maps = []
        for entry in self._sites.values():
            rings = [r for r in entry.rings if r is not None and r.filled]
            if len(rings) != 2:
                continue
            last = max(max(r.steps[: r.filled]) for r in rings)
            if entry.last_map >= last:
                continue
            try:
                with torch.no_grad():
                    projection = self._project(last, entry, rings[0].rows.shape[1])
            except Exception:  # noqa: BLE001 - a map is a picture: never worth breaking the script's end
                continue
            if projection is not None:
                entry.last_map = last
                maps.append(projection)
        return maps

    def _project(self, step: int, entry: _Site, width: int) -> Projection | None:
        rings = [r for r in entry.rings if r is not None]
        points = torch.cat([r.rows[: r.filled] for r in rings])
        sides = [side for side, r in enumerate(rings) for _ in range(r.filled)]
        labelled = any(any(r.labelled[: r.filled]) for r in rings)
        oldest = min(min(r.steps[: r.filled]) for r in rings)
        probed = max(width, 2)
        omega = self._probes.get((probed, points.device))
        if omega is None:
            generator = torch.Generator(device=points.device).manual_seed(0)
            omega = torch.randn(probed, PROBES, generator=generator, device=points.device)
            self._probes[(probed, points.device)] = omega
        with torch.autocast(points.device.type, enabled=False):
            points = torch.nn.functional.normalize(points, dim=-1)
            if width == 1:
                # Vectors of one number (a similarity over a dim of size 1) are ±1 once
                # normalised: one axis, and a second one without variance, for the PCA below.
                points = torch.cat([points, torch.zeros_like(points)], dim=-1)
            centred = points - points.mean(dim=0)
            n = centred.shape[0]
            # A randomized range finder (what pca_lowrank does), probed with our own fixed
            # vectors: a few thin products instead of an eigendecomposition of n×n or d×d.
            basis = centred @ omega[:, : min(PROBES, n)]
            for _ in range(POWER_ITERATIONS):
                basis = centred @ (centred.T @ torch.linalg.qr(basis).Q)
            basis = torch.linalg.qr(basis).Q
            small = basis.T @ centred
            values, vectors = torch.linalg.eigh(small @ small.T)
            coords = basis @ vectors[:, -2:].flip(-1) * values[-2:].flip(-1).clamp_min(0).sqrt()
            total = centred.square().sum()
            explained = coords.square().sum(dim=0) / total.clamp_min(1e-30)
            # An eigenvector's sign is arbitrary: point each axis at its farthest point, so
            # maps of consecutive steps do not flip for no reason.
            far = coords.abs().argmax(dim=0)
            signs = torch.sign(coords.gather(0, far[None]))
            coords = coords * torch.where(signs == 0, torch.ones_like(signs), signs)
            coords = coords * math.sqrt(width)
            # RMS distance from the mean = √d · RMS per-channel std: the collapse code's measure.
            spread = (total / max(n, 1)).sqrt()
            summary = torch.cat([explained, spread[None], coords.abs().max()[None]])
            parts = [coords.T.reshape(-1).double().round(decimals=DIGITS), summary.double()]
            if labelled:
                # In the same transfer as the coordinates (exact as doubles below 2**53).
                parts.append(torch.cat([r.labels[: r.filled] for r in rings]).double())
            # Rounded here, not in Python: the host only copies the numbers it sends.
            fetched = torch.cat(parts).tolist()
        xs, ys = fetched[:n], fetched[n : 2 * n]
        ex0, ex1, spread_v, extent = fetched[2 * n : 2 * n + 4]
        if not all(math.isfinite(v) for v in (ex0, ex1, spread_v, extent)):
            return None
        # A negative label is no class (-1 for unlabelled data, -100 for ignored targets).
        label = [int(v) if v >= 0 else -1 for v in fetched[2 * n + 4 :]] if labelled else []
        return Projection(
            step=step,
            first_step=oldest,
            x=xs,
            y=ys,
            side=sides,
            explained=[ex0, ex1],
            spread=spread_v,
            extent=extent,
            dim_size=width,
            label=label if any(v >= 0 for v in label) else None,
        )
