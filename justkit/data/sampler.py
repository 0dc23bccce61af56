"""Batch sampler: temperature language sampling, length buckets, dynamic batches by total frames."""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
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


def greedy_batches(order: Sequence[int], lengths: np.ndarray, max_frames: int) -> List[List[int]]:
    """Cut ``order`` into consecutive batches whose padded size (count * max length) <= max_frames."""
    batches: List[List[int]] = []
    cur: List[int] = []
    cur_max = 0
    for i in order:
        n = int(lengths[i])
        new_max = max(cur_max, n)
        if cur and (len(cur) + 1) * new_max > max_frames:
            batches.append(cur)
            cur, new_max = [], n
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], lengths: np.ndarray) -> float:
    """Share of padded frames in the batches: 1 - real frames / (sum of count * max length)."""
    real = padded = 0
    for b in batches:
        ls = lengths[np.asarray(b, dtype=np.int64)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(b)
    return 0.0 if padded == 0 else 1.0 - real / padded


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
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.langs = list(langs)
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
        self._cache: tuple[int, List[IndexBatch]] | None = None

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
        self.by_lang: Dict[str, np.ndarray] = {}
        lang_arr = np.asarray(self.langs)
        for lang in sorted(set(self.langs)):
            idx = np.nonzero((lang_arr == lang) & keep)[0].astype(np.int64)
            if len(idx):
                self.by_lang[lang] = idx
        self.num_kept = int(sum(len(v) for v in self.by_lang.values()))
        if self.num_kept == 0:
            raise ValueError(f"no utterance fits max_frames={self.max_frames}")
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
        kept_lengths = self.lengths[np.concatenate(list(self.by_lang.values()))]
        qs = np.quantile(kept_lengths, np.linspace(0, 1, self.num_buckets + 1)[1:-1])
        self.bucket_edges = np.unique(qs)  # bucket k holds lengths in (edge[k-1], edge[k]]

    # -- epoch plan ---------------------------------------------------------------------
    def _draw_epoch(self, rng: np.random.Generator) -> np.ndarray:
        if self.labelled_share <= 0:
            return balanced_draw(self.by_lang, self.lang_alpha, self.epoch_size or self.num_kept, rng)
        n_lab_pool = sum(len(v) for v in self.lab_pools.values())
        total = self.epoch_size or int(round(n_lab_pool / self.labelled_share))
        n_lab = int(round(total * self.labelled_share))
        return np.concatenate([balanced_draw(self.lab_pools, self.lang_alpha, n_lab, rng),
                               balanced_draw(self.unlab_pools, self.lang_alpha, total - n_lab, rng)])

    def all_batches(self, epoch: int) -> List[IndexBatch]:
        """Every batch of ``epoch`` over all ranks (before the DDP split)."""
        rng = np.random.default_rng((self.seed, epoch))
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = greedy_batches(order, self.lengths, self.max_frames)
        else:
            drawn = self._draw_epoch(rng)
            bucket_of = np.searchsorted(self.bucket_edges, self.lengths[drawn], side="left")
            batches = []
            for b in range(len(self.bucket_edges) + 1):
                members = drawn[bucket_of == b]
                if len(members):
                    batches.extend(greedy_batches(rng.permutation(members), self.lengths, self.max_frames))
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return [IndexBatch(b, seed=_batch_seed(self.seed, epoch, n)) for n, b in enumerate(batches)]

    def epoch_batches(self, epoch: Optional[int] = None) -> List[IndexBatch]:
        """This rank's batches of ``epoch`` (default: the current one), all of them."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = self.all_batches(epoch)
        if self.world_size > 1:
            if self.shuffle:  # training: equal counts, so that DDP ranks step together
                batches = batches[: len(batches) // self.world_size * self.world_size]
            batches = batches[self.rank :: self.world_size]  # eval: every utterance, counts may differ by 1
        if self.shuffle and not batches:  # an empty epoch would make a training loop spin forever
            raise ValueError(
                f"epoch {epoch} has fewer batches than ranks ({self.world_size}): lower "
                f"data.max_frames ({self.max_frames}) or raise data.epoch_size"
            )
        self._cache = (epoch, batches)
        return batches

    def padding_fraction(self, epoch: Optional[int] = None) -> float:
        """Share of padded frames in this rank's batches of ``epoch``."""
        return padding_fraction(self.epoch_batches(epoch), self.lengths)

    # -- iteration and resume -------------------------------------------------------------
    def __iter__(self) -> Iterator[IndexBatch]:
        batches = self.epoch_batches()
        start = self.position
        if start == 0:
            logger.info(
                "epoch %d: %d batches (rank %d/%d), padding %.1f%%",
                self.epoch, len(batches), self.rank, self.world_size,
                100 * padding_fraction(batches, self.lengths),
            )
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
