"""Batch sampler: temperature language sampling, length buckets, dynamic batches by total frames."""
from __future__ import annotations

import logging
import zlib
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from justkit.lang import balanced_draw, language_probs

logger = logging.getLogger(__name__)


class IndexBatch(list):
    """A list of dataset indices plus ``seed``: the RNG seed of this batch's augmentation.

    The seed depends only on (sampler seed, epoch, batch number), so SpecAugment masks
    are the same whatever the number of workers and after a resume.
    """

    def __init__(self, indices: Sequence[int], seed: int = 0) -> None:
        super().__init__(indices)
        self.seed = seed


def _greedy_cuts_py(order: np.ndarray, lengths: np.ndarray, max_frames: int) -> np.ndarray:
    cuts = []
    cur = cur_max = 0
    for j, i in enumerate(order):
        n = int(lengths[i])
        new_max = max(cur_max, n)
        if cur and (cur + 1) * new_max > max_frames:
            cuts.append(j)
            cur, new_max = 0, n
        cur += 1
        cur_max = new_max
    return np.asarray(cuts, dtype=np.int64)


_CUTS = None


def greedy_cuts(order: np.ndarray, lengths: np.ndarray, max_frames: int) -> np.ndarray:
    """Positions in ``order`` where a new batch starts (0 excluded), cutting greedily so that each
    batch's padded size (count * max length) <= max_frames; a longer item gets a batch of its own.

    One pass in numba (an 11M-utterance epoch in well under a second, where the Python loop
    took ~10 s); below a few thousand items, or without numba, the same loop in Python.
    """
    global _CUTS
    order = np.asarray(order)
    if len(order) < 4096:
        return _greedy_cuts_py(order, lengths, max_frames)
    if _CUTS is None:
        import numba  # lazy: ~0.4 s to import, and only plans of 4096+ utterances compile this kernel

        @numba.njit(cache=True, nogil=True)
        def cuts_nb(order, lengths, max_frames):  # pragma: no cover (compiled)
            out = np.empty(len(order), np.int64)
            k = 0
            cur = 0
            cur_max = 0
            for j in range(len(order)):
                n = np.int64(lengths[order[j]])
                new_max = max(cur_max, n)
                if cur > 0 and (cur + 1) * new_max > max_frames:
                    out[k] = j
                    k += 1
                    cur = 0
                    new_max = n
                cur += 1
                cur_max = new_max
            return out[:k]

        _CUTS = cuts_nb
    return _CUTS(order, lengths, np.int64(max_frames))


def greedy_batches(order: Sequence[int], lengths: np.ndarray, max_frames: int) -> List[List[int]]:
    """Cut ``order`` into consecutive batches whose padded size (count * max length) <= max_frames."""
    order = np.asarray(order, dtype=np.int64)
    if not len(order):
        return []
    return [b.tolist() for b in np.split(order, greedy_cuts(order, np.asarray(lengths), max_frames))]


def padding_fraction(batches: Sequence[Sequence[int]], lengths: np.ndarray) -> float:
    """Share of padded frames in the batches: 1 - real frames / (sum of count * max length)."""
    if isinstance(batches, BatchPlan):
        return batches.padding_fraction()
    real = padded = 0
    for b in batches:
        ls = lengths[np.asarray(b, dtype=np.int64)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(b)
    return 0.0 if padded == 0 else 1.0 - real / padded


def length_histogram(lengths: np.ndarray, max_length: Optional[int] = None) -> np.ndarray:
    """Counts of each length (0 .. the longest <= ``max_length``), read in chunks: no copy of
    the lengths (an 11M-utterance index's column stays as it is)."""
    lengths = np.asarray(lengths)
    top = int(lengths.max()) if len(lengths) else 0
    if max_length is not None:
        top = min(top, int(max_length))
    if len(lengths) and int(lengths.min()) < 0:
        raise ValueError("utterance lengths must be >= 0")
    hist = np.zeros(top + 1, np.int64)
    for s in range(0, len(lengths), 1 << 20):
        c = np.bincount(lengths[s:s + (1 << 20)])
        hist += c[: top + 1] if len(c) > top + 1 else np.pad(c, (0, top + 1 - len(c)))
    return hist


def quantiles_from_histogram(hist: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(values, qs)`` (linear interpolation, numpy's arithmetic) of the integers whose
    counts are ``hist``."""
    cum = np.cumsum(hist)
    n = int(cum[-1]) if len(cum) else 0
    if n == 0:
        raise ValueError("no lengths to take quantiles of")
    pos = np.asarray(qs, dtype=np.float64) * (n - 1)
    lo = np.floor(pos)
    t = pos - lo
    a = np.searchsorted(cum, lo, side="right").astype(np.float64)  # the lo-th smallest value
    b = np.searchsorted(cum, np.minimum(lo + 1, n - 1), side="right").astype(np.float64)
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # numpy's _lerp


class BatchPlan(Sequence):
    """The batches of an epoch as flat arrays: batch k is ``order[start[k]:end[k]]``.

    Indexing gives an :class:`IndexBatch` (made on demand, with its augmentation seed from the
    batch's number in the whole epoch); a slice or :meth:`take` gives another plan sharing
    ``order``. An 11M-utterance epoch is ~100 MB of arrays instead of ~1 GB of Python lists.
    """

    def __init__(self, order: np.ndarray, start: np.ndarray, end: np.ndarray, number: np.ndarray,
                 real: np.ndarray, padded: np.ndarray, seed: int, epoch: int) -> None:
        self.order, self.start, self.end, self.number = order, start, end, number
        self.real, self.padded = real, padded  # frames per batch, without / with padding
        self.seed, self.epoch = seed, epoch

    @classmethod
    def from_cuts(cls, order: np.ndarray, bounds: np.ndarray, lengths: np.ndarray, seed: int,
                  epoch: int) -> "BatchPlan":
        """Batches ``order[bounds[k]:bounds[k+1]]`` (``bounds`` increasing, from 0 to len(order))."""
        start, end = bounds[:-1], bounds[1:]
        ls = np.asarray(lengths)[order]
        if len(start):
            real = np.add.reduceat(ls, start, dtype=np.int64)
            padded = np.maximum.reduceat(ls, start).astype(np.int64) * (end - start)
        else:
            real = padded = np.zeros(0, np.int64)
        return cls(order, start, end, np.arange(len(start)), real, padded, seed, epoch)

    def take(self, which) -> "BatchPlan":
        """The batches ``which`` (positions, a mask or a slice), in that order."""
        return BatchPlan(self.order, self.start[which], self.end[which], self.number[which],
                         self.real[which], self.padded[which], self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return self.take(k)
        s, e = int(self.start[k]), int(self.end[k])
        return IndexBatch(self.order[s:e].tolist(), seed=_batch_seed(self.seed, self.epoch, int(self.number[k])))

    def __iter__(self) -> Iterator[IndexBatch]:
        for k in range(len(self)):
            yield self[k]

    def sizes(self) -> np.ndarray:
        return self.end - self.start

    def padding_fraction(self) -> float:
        padded = int(self.padded.sum())
        return 0.0 if padded == 0 else 1.0 - int(self.real.sum()) / padded


class BucketBatchSampler:
    """Yields :class:`IndexBatch` lists of dataset indices, one epoch per ``iter()``.

    Training mode (``shuffle=True``), per epoch, all from ``np.random.default_rng((seed, epoch))``:
      1. language sampling: ``epoch_size`` utterances (0 = dataset size) split over languages
         with p_lang proportional to n_lang ** lang_alpha; within a language utterances are drawn
         from successive random permutations (a small language is repeated, a big one subsampled);
      2. each drawn utterance goes to one of ``num_buckets`` length buckets (quantiles of the
         whole set's lengths); inside a bucket the order is random and batches are cut greedily
         so that ``count * max_len <= max_frames`` (the budget counts padding);
      3. the batches of all buckets are shuffled, then dealt to DDP ranks round-robin after
         dropping the last ``len % world_size`` so that ranks get disjoint batches, equally many.
    With ``labelled_share`` > 0 (training), step 1 draws labelled and unlabelled utterances
    apart, so that labelled ones are that share of the epoch; ``epoch_size`` 0 then means one
    pass over the labelled utterances (plus as many unlabelled draws as the share asks for).
    Evaluation mode (``shuffle=False``): every utterance once, sorted by length, no language
    sampling, nothing dropped (rank batch counts may differ by one); an utterance over the
    budget gets a batch of its own instead of being skipped.

    In training mode an utterance longer than ``max_frames`` is skipped with a warning.
    ``state_dict()`` holds the epoch and the number of batches of it already consumed
    (``position``, advanced by the loader as it hands batches out), so that after
    ``load_state_dict`` the next ``iter()`` yields exactly the remaining batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        langs: Sequence[str],
        max_frames: int,
        num_buckets: int = 10,
        lang_alpha: float = 1.0,
        epoch_size: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        utts: Optional[Sequence[str]] = None,
        labelled: Optional[Sequence[bool]] = None,
        labelled_share: float = 0.0,
        lang_names: Optional[Sequence[str]] = None,
    ) -> None:
        if len(lengths) != len(langs):
            raise ValueError(f"lengths ({len(lengths)}) and langs ({len(langs)}) differ in size")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be > 0, got {max_frames}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        if not 0.0 <= labelled_share < 1.0:
            raise ValueError(f"labelled_share must be in [0, 1), got {labelled_share}")
        # Lengths and languages stay numpy arrays (an index's columns are used as they are):
        # no per-utterance Python object, so a rank's plan does not grow into gigabytes.
        self.lengths = np.asarray(lengths)
        if not np.issubdtype(self.lengths.dtype, np.integer):
            self.lengths = self.lengths.astype(np.int64)
        if lang_names is None:
            names, codes = np.unique(np.asarray(list(langs), dtype=str), return_inverse=True)
            self.lang_names = [str(n) for n in names]
            self.lang_codes = codes.reshape(-1)
        else:
            self.lang_names = list(lang_names)
            self.lang_codes = np.asarray(langs)
        self.max_frames = int(max_frames)
        self.num_buckets = int(num_buckets)
        self.lang_alpha = float(lang_alpha)
        self.epoch_size = int(epoch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, BatchPlan] | None = None

        too_long = np.nonzero(self.lengths > self.max_frames)[0]
        if len(too_long) and self.shuffle:
            names = [utts[i] if utts is not None else str(i) for i in too_long[:5]]
            logger.warning(
                "skipping %d utterance(s) longer than max_frames=%d, e.g. %s (%d frames); "
                "raise data.max_frames to keep them",
                len(too_long), self.max_frames, names[0], int(self.lengths[too_long[0]]),
            )
            if len(too_long) > 1:
                logger.warning("skipped utterances (first 5): %s", " ".join(names))
        keep = self.lengths <= self.max_frames if self.shuffle else np.ones(len(self.lengths), bool)
        itype = np.int32 if len(self.lengths) < 2**31 else np.int64
        self.by_lang: Dict[str, np.ndarray] = {}
        for code, name in enumerate(self.lang_names):  # one language at a time: small temporaries
            idx = np.flatnonzero((self.lang_codes == code) & keep)
            if len(idx):
                self.by_lang[name] = idx.astype(itype)
        self.num_kept = int(sum(len(v) for v in self.by_lang.values()))
        if self.num_kept == 0:
            from justkit.config import ConfigError

            shortest = int(self.lengths.min()) if len(self.lengths) else 0
            raise ConfigError(f"data.max_frames={self.max_frames}: no utterance fits in a batch (the shortest has "
                              f"{shortest} frames); raise data.max_frames")
        self.lang_probs = language_probs({l: len(v) for l, v in self.by_lang.items()}, self.lang_alpha)
        # labelled_share > 0: an epoch is drawn as two parts, labelled and unlabelled utterances,
        # each with language sampling, so that labelled ones are that share of the draws.
        self.labelled_share = float(labelled_share) if shuffle else 0.0
        self.lab_pools: Dict[str, np.ndarray] = {}
        self.unlab_pools: Dict[str, np.ndarray] = {}
        if self.labelled_share > 0:
            if labelled is None or len(labelled) != len(self.lengths):
                raise ValueError("labelled_share needs the labelled flag of every utterance")
            lab = np.asarray(labelled, dtype=bool)
            for lang, idx in self.by_lang.items():
                if lab[idx].any():
                    self.lab_pools[lang] = idx[lab[idx]]
                if (~lab[idx]).any():
                    self.unlab_pools[lang] = idx[~lab[idx]]
            if not self.lab_pools or not self.unlab_pools:
                logger.warning("labelled_share=%.2f ignored: the set has %s", self.labelled_share,
                               "no labelled utterance" if not self.lab_pools else "no unlabelled utterance")
                self.labelled_share = 0.0
        hist = length_histogram(self.lengths, self.max_frames if self.shuffle else None)
        qs = quantiles_from_histogram(hist, np.linspace(0, 1, self.num_buckets + 1)[1:-1])
        self.bucket_edges = np.unique(qs)  # bucket k holds lengths in (edge[k-1], edge[k]]
        # the bucket of every length up to the longest one kept, as a lookup table
        table = np.searchsorted(self.bucket_edges, np.arange(len(hist)), side="left")
        self._bucket_of_length = table.astype(np.uint8) if len(self.bucket_edges) < 255 else table

    @property
    def langs(self) -> List[str]:
        return [self.lang_names[int(c)] for c in self.lang_codes]

    # -- epoch plan ---------------------------------------------------------------------
    def _draw_epoch(self, rng: np.random.Generator) -> np.ndarray:
        if self.labelled_share <= 0:
            return balanced_draw(self.by_lang, self.lang_alpha, self.epoch_size or self.num_kept, rng)
        n_lab_pool = sum(len(v) for v in self.lab_pools.values())
        total = self.epoch_size or int(round(n_lab_pool / self.labelled_share))
        n_lab = int(round(total * self.labelled_share))
        return np.concatenate([balanced_draw(self.lab_pools, self.lang_alpha, n_lab, rng),
                               balanced_draw(self.unlab_pools, self.lang_alpha, total - n_lab, rng)])

    def all_batches(self, epoch: int) -> BatchPlan:
        """Every batch of ``epoch`` over all ranks (before the DDP split)."""
        rng = np.random.default_rng((self.seed, epoch))
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            cuts = greedy_cuts(order, self.lengths, self.max_frames)
            bounds = np.concatenate([[0], cuts, [len(order)]]).astype(np.int64)
            return BatchPlan.from_cuts(order, bounds, self.lengths, self.seed, epoch)
        drawn = self._draw_epoch(rng)
        bucket_of = self._bucket_of_length[self.lengths[drawn]]
        # Each bucket's draws (in draw order) are permuted with the epoch's RNG and cut into
        # batches, written one after the other into one array: a few bytes per utterance of
        # temporaries, and the same RNG calls in the same order as a list of batches per bucket.
        order = np.empty(len(drawn), dtype=drawn.dtype)
        bounds, base = [np.zeros(1, np.int64)], 0
        for b in range(len(self.bucket_edges) + 1):
            members = drawn[bucket_of == b]
            c = len(members)
            if c:
                order[base:base + c] = rng.permutation(members)
                cuts = greedy_cuts(order[base:base + c], self.lengths, self.max_frames)
                bounds.append(base + np.append(cuts, c))
                base += c
        del bucket_of
        plan = BatchPlan.from_cuts(order, np.concatenate(bounds), self.lengths, self.seed, epoch)
        shuffled = plan.take(rng.permutation(len(plan)))
        shuffled.number = np.arange(len(plan))  # batch numbers (augmentation seeds) follow the shuffle
        return shuffled

    def epoch_batches(self, epoch: Optional[int] = None) -> BatchPlan:
        """This rank's batches of ``epoch`` (default: the current one), all of them."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.all_batches(epoch)
        if self.world_size > 1:
            if self.shuffle:  # training: equal counts, so that DDP ranks step together
                batches = batches[: len(batches) // self.world_size * self.world_size]
            batches = batches[self.rank :: self.world_size]  # eval: every utterance, counts may differ by 1
        if self.shuffle and not len(batches):  # an empty epoch would make a training loop spin forever
            raise ValueError(
                f"epoch {epoch} has fewer batches than ranks ({self.world_size}): lower "
                f"data.max_frames ({self.max_frames}) or raise data.epoch_size"
            )
        self._cache = (epoch, batches)
        return batches

    def padding_fraction(self, epoch: Optional[int] = None) -> float:
        """Share of padded frames in this rank's batches of ``epoch``."""
        return self.epoch_batches(epoch).padding_fraction()

    # -- iteration and resume -------------------------------------------------------------
    def __iter__(self) -> Iterator[IndexBatch]:
        batches = self.epoch_batches()
        start = self.position
        if start == 0 and self.shuffle:  # a training epoch (an evaluation pass has no epochs)
            logger.info(
                "epoch %d: %d batches (rank %d/%d), padding %.1f%%",
                self.epoch, len(batches), self.rank, self.world_size, 100 * batches.padding_fraction(),
            )
        elif start == 0:
            logger.debug("evaluation pass: %d batches (rank %d/%d), padding %.1f%%",
                         len(batches), self.rank, self.world_size, 100 * batches.padding_fraction())
        return iter(batches[start:])

    def __len__(self) -> int:
        return max(0, len(self.epoch_batches()) - self.position)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        self.epoch, self.position = int(epoch), 0

    def advance(self, n: int = 1) -> None:
        """Record that ``n`` more batches of the current epoch were consumed."""
        self.position += n

    def end_epoch(self) -> None:
        """The current epoch was consumed to its end: move to the next one."""
        self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("world_size", self.world_size)) != self.world_size and int(state["position"]):
            raise ValueError(
                f"sampler state was saved with world_size={state['world_size']}, now "
                f"{self.world_size}: a mid-epoch resume needs the same number of ranks"
            )
        if int(state.get("seed", self.seed)) != self.seed:
            logger.warning("sampler state seed %s differs from config seed %s; using the saved one",
                           state["seed"], self.seed)
            self.seed = int(state["seed"])
            self._cache = None
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


def _batch_seed(seed: int, epoch: int, n: int) -> int:
    return zlib.crc32(f"{seed}/{epoch}/{n}".encode()) & 0x7FFFFFFF
