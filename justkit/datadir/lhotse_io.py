"""Kaldi/justkit data dirs <-> lhotse manifests (RecordingSet, SupervisionSet, CutSet), for icefall and lhotse users.

lhotse is optional: only this module imports it, inside its functions (``pip install lhotse``).

A data dir maps as lhotse's own Kaldi import does (``lhotse.kaldi.load_kaldi_data_dir``), with the
language a field of each segment: ``wav.scp`` -> one ``Recording`` per entry (sampling rate, exact
sample count from the audio header; Ogg/Opus decoded, whose header length is not exact); ``segments``
(if any) or the whole recording -> one ``SupervisionSegment`` per utterance with ``text``, ``speaker``
(utt2spk), ``language`` (utt2lang), ``gender`` (spk2gender); any other per-utterance table whose ids
are the utterances' (``cs_sources``, ...) -> ``custom[<file name>]``. Stored features (``feats.scp``)
become lhotse ``Features`` that point into the same ark files (``storage_type`` ``kaldiio``,
``storage_path`` ``<absolute ark>:<offset>``: nothing is copied; lhotse reads them with
``kaldi_native_io``), with frame shift and sample rate from the dir's ``conf/fbank.yaml``, which is
also saved beside the manifests. Back, the same tables are written (paths below the current dir relative to it, as the stages write
them); features in any other lhotse
storage (lilcom, numpy, ...) are read and stored in a kaldiio ark. Derived tables (``spk2utt``,
``utt2dur``, ``utt2num_frames``, ``feat_dim``) are recomputed.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from justkit.datadir.tables import DataDir, DataDirError, read_table, utt2spk_to_spk2utt, write_table
from justkit.errors import JustkitError

log = logging.getLogger(__name__)

# Tables the conversion maps to lhotse fields or recomputes; every other top-level table keyed by the
# utterance ids travels in SupervisionSegment.custom.
KNOWN = {"wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2lang", "spk2gender", "utt2dur", "feats.scp",
         "utt2num_frames", "feat_dim", "reco2dur", "bad_utts.txt", "cmvn.ark"}


class LhotseMissing(JustkitError, ImportError):
    """lhotse is not installed."""


def import_lhotse():
    try:
        import lhotse  # noqa: F401
    except ImportError as e:
        raise LhotseMissing(f"the lhotse conversion needs lhotse, an optional dependency: pip install lhotse "
                            f"(and kaldi_native_io for lhotse to read Kaldi features) ({e})") from None
    return lhotse


@dataclass
class ManifestPaths:
    """Where one data dir's manifests go: ``<dir>/<prefix>_{recordings,supervisions,cuts}_<part>.jsonl.gz``
    (icefall's naming) and ``<prefix>_fbank_<part>.yaml`` (the features' config, when there are features)."""

    dir: Path
    prefix: str
    part: str

    def path(self, kind: str, ext: str = "jsonl.gz") -> Path:
        return self.dir / f"{self.prefix}_{kind}_{self.part}.{ext}"

    @property
    def recordings(self) -> Path:
        return self.path("recordings")

    @property
    def supervisions(self) -> Path:
        return self.path("supervisions")

    @property
    def cuts(self) -> Path:
        return self.path("cuts")

    @property
    def fbank(self) -> Path:
        return self.path("fbank", "yaml")


def _exact_length(path: str, utt: str):
    """(samples, sample rate, channels) of an audio file: the header's count, Ogg decoded (inexact header)."""
    from justkit.frontend.audio import audio_info, load_audio

    n, sr, ch = audio_info(path, utt)
    if Path(path).suffix.lower() in (".opus", ".ogg", ".oga"):
        x, sr = load_audio(path, utt)
        n = len(x)
    return n, sr, ch


def _extra_tables(d: DataDir, utts: set) -> Dict[str, Dict[str, str]]:
    out = {}
    for f in sorted(d.path.iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.name in KNOWN:
            continue
        try:
            table = read_table(f, allow_empty_value=True)
        except (DataDirError, UnicodeDecodeError):
            log.info("%s: not a per-utterance table: not converted", f)
            continue
        if table and set(table) <= utts:
            out[f.name] = table
        else:
            log.info("%s: keys are not the utterance ids: not converted", f)
    return out


def to_lhotse(data_dir: str | Path, out: ManifestPaths) -> Dict[str, int]:
    """Write the manifests of ``data_dir`` (see the module docstring); returns counts."""
    import_lhotse()
    from lhotse import (AudioSource, CutSet, Features, FeatureSet, Recording, RecordingSet, SupervisionSegment,
                        SupervisionSet)
    from lhotse.utils import fastcopy

    d = DataDir(Path(data_dir))
    if not d.has("wav.scp"):
        raise DataDirError(f"{d.path}/wav.scp: missing or not a regular file (lhotse recordings need the audio)")
    wav = d.read("wav.scp")
    recordings = []
    for rec, src in wav.items():
        if src.rstrip().endswith("|"):
            raise DataDirError(f"{d.path}/wav.scp: recording {rec}: piped commands are not converted; give a file path")
        n, sr, ch = _exact_length(src, rec)
        recordings.append(Recording(id=rec, sources=[AudioSource(type="file", channels=list(range(ch)),
                                                                 source=os.path.abspath(src))],
                                    sampling_rate=sr, num_samples=n, duration=n / sr))
    recs = RecordingSet.from_recordings(recordings)
    if d.has("segments"):
        seg = {u: v.split() for u, v in d.read("segments").items()}
        bad = next((u for u, v in seg.items() if len(v) != 3 or v[0] not in wav), None)
        if bad is not None:
            raise DataDirError(f"{d.path}/segments: utterance {bad}: expected '<recording> <start> <end>' of a "
                               f"recording in wav.scp, got {' '.join(seg[bad])!r}")
        spans = {u: (r, float(s), (float(e) if e != "-1" else recs[r].duration) - float(s)) for u, (r, s, e) in seg.items()}
    else:
        spans = {u: (u, 0.0, recs[u].duration) for u in wav}
    text = d.read("text", allow_empty_value=True) if d.has("text") else {}
    spk = d.read("utt2spk") if d.has("utt2spk") else {}
    lang = d.read("utt2lang") if d.has("utt2lang") else {}
    gender = d.read("spk2gender") if d.has("spk2gender") else {}
    extra = _extra_tables(d, set(spans))
    sups = SupervisionSet.from_segments(
        SupervisionSegment(id=u, recording_id=r, start=s, duration=dur, channel=0, text=text.get(u),
                           speaker=spk.get(u), language=lang.get(u), gender=gender.get(spk.get(u, "")),
                           custom={k: t[u] for k, t in extra.items() if u in t} or None)
        for u, (r, s, dur) in spans.items())
    feats = None
    if d.has("feats.scp"):
        from justkit.frontend.fbank import load_fbank_config

        conf = d.path / "conf" / "fbank.yaml"
        if not conf.is_file():
            raise DataDirError(f"{conf}: not found: the features' frame shift and sample rate come from it")
        cfg = load_fbank_config(conf)
        frames = d.read("utt2num_frames")
        dim = int((d.path / "feat_dim").read_text().split()[0]) if d.has("feat_dim") else cfg.dim
        rows = []
        for u, loc in d.read("feats.scp").items():
            ark, _, offset = loc.rpartition(":")
            if u not in spans or u not in frames or not offset.isdigit():
                raise DataDirError(f"{d.path}/feats.scp: utterance {u}: expected '<ark>:<offset>' of an "
                                   f"utterance in wav.scp and utt2num_frames, got {loc!r}")
            r, s, _ = spans[u]
            rows.append(Features(type="kaldi-fbank", num_frames=int(frames[u]), num_features=dim,
                                 frame_shift=cfg.frame_shift_ms / 1000, sampling_rate=int(cfg.sample_frequency),
                                 start=s, duration=int(frames[u]) * cfg.frame_shift_ms / 1000,
                                 storage_type="kaldiio", storage_path=f"{os.path.abspath(ark)}:{offset}",
                                 storage_key=u, recording_id=r, channels=0))
        feats = FeatureSet.from_features(rows)
        out.dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(conf, out.fbank)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    if d.has("segments"):  # one cut per utterance, as justkit's examples are
        cuts = cuts.trim_to_supervisions(keep_overlapping=False)
    if feats is not None:  # each utterance's cut gets its stored features (by utterance: storage_key)
        by_utt = {f.storage_key: f for f in feats}
        cuts = CutSet.from_cuts(fastcopy(c, features=by_utt.get(c.supervisions[0].id)) for c in cuts)
    cuts = CutSet.from_cuts(fastcopy(c, id=c.supervisions[0].id) for c in cuts)  # cut id = utterance id
    out.dir.mkdir(parents=True, exist_ok=True)
    recs.to_file(out.recordings)
    sups.to_file(out.supervisions)
    cuts.to_file(out.cuts)
    log.info("%s -> %s, %s, %s (%d recordings, %d supervisions, %s)", d.path, out.recordings, out.supervisions,
             out.cuts, len(recs), len(sups), f"{len(feats)} features in place" if feats is not None else "no features")
    return {"recordings": len(recs), "supervisions": len(sups), "features": len(feats) if feats is not None else 0}


def local_path(path: str) -> str:
    """``path`` relative to the current dir when it lies below it (as the stages write paths, relative to
    the recipe dir), else as it is (manifests hold absolute paths)."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd())) if p.is_absolute() else path
    except ValueError:
        return path


def _wav_entry(rec) -> str:
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        kinds = ", ".join(s.type for s in rec.sources)
        raise DataDirError(f"recording {rec.id}: only single file sources convert to wav.scp, got {kinds}")
    if rec.transforms:
        raise DataDirError(f"recording {rec.id}: has lhotse transforms (speed/volume/resampling): not representable "
                           f"in wav.scp; save the transformed audio first")
    return local_path(rec.sources[0].source)


def from_lhotse(recordings: str | Path, supervisions: str | Path, data_dir: str | Path,
                cuts: Optional[str | Path] = None, fbank_config: Optional[str | Path] = None) -> Dict[str, int]:
    """Write a Kaldi/justkit data dir from lhotse manifests (cuts: only for their features)."""
    import_lhotse()
    from lhotse import CutSet, RecordingSet, SupervisionSet

    recs = {r.id: r for r in RecordingSet.from_file(recordings)}
    sups = list(SupervisionSet.from_file(supervisions))
    d = DataDir(Path(data_dir))
    d.path.mkdir(parents=True, exist_ok=True)
    whole = all(s.start == 0 and abs(s.duration - recs[s.recording_id].duration) < 1e-6 and s.id == s.recording_id
                for s in sups)
    tables: Dict[str, Dict[str, str]] = {n: {} for n in ("text", "utt2spk", "utt2lang", "utt2dur")}
    extra: Dict[str, Dict[str, str]] = {}
    gender: Dict[str, str] = {}
    segments: Dict[str, str] = {}
    for s in sups:
        if s.recording_id not in recs:
            raise DataDirError(f"{supervisions}: supervision {s.id}: recording {s.recording_id} not in {recordings}")
        if s.text is not None:
            tables["text"][s.id] = s.text
        tables["utt2spk"][s.id] = s.speaker if s.speaker is not None else s.id
        if s.language is not None:
            tables["utt2lang"][s.id] = s.language
        if s.gender is not None:
            gender[tables["utt2spk"][s.id]] = s.gender
        tables["utt2dur"][s.id] = f"{s.duration:.4f}"
        for k, v in (s.custom or {}).items():
            extra.setdefault(k, {})[s.id] = str(v)
        if not whole:
            segments[s.id] = f"{s.recording_id} {s.start:.4f} {s.end:.4f}"
    wav = {r.id: _wav_entry(r) for r in recs.values() if not whole or r.id in tables["utt2spk"]}
    write_table(d.path / "wav.scp", wav)
    if segments:
        write_table(d.path / "segments", segments)
    for name, t in list(tables.items()) + sorted(extra.items()):
        if t:
            write_table(d.path / name, t)
    write_table(d.path / "spk2utt", utt2spk_to_spk2utt(tables["utt2spk"]))
    if gender:
        write_table(d.path / "spk2gender", gender)
    n_feats = 0
    if cuts is not None:
        n_feats = _features_from_cuts(CutSet.from_file(cuts), d, fbank_config)
    log.info("%s, %s -> %s (%d utterances, %d recordings%s)", recordings, supervisions, d.path, len(sups),
             len(wav), f", {n_feats} features" if n_feats else "")
    return {"utterances": len(sups), "recordings": len(wav), "features": n_feats}


def _features_from_cuts(cuts, d: DataDir, fbank_config: Optional[str | Path]) -> int:
    import kaldiio

    scp: Dict[str, str] = {}
    frames: Dict[str, str] = {}
    dims: set = set()
    to_copy: List = []
    for c in cuts:
        if not c.has_features:
            continue
        utt = c.supervisions[0].id if len(c.supervisions) == 1 else c.id  # one utterance a cut, as written
        f = c.features
        dims.add(f.num_features)
        frames[utt] = str(f.num_frames)
        path, _, off = f.storage_path.rpartition(":")
        if f.storage_type == "kaldiio" and off.isdigit() and c.start == f.start:
            scp[utt] = f"{local_path(path)}:{off}"  # the ark the features already live in
        else:
            to_copy.append((utt, c))
    if to_copy:  # lilcom, numpy, hdf5 ...: read through lhotse, stored in one kaldiio ark
        ark = d.path / "data" / "feats.ark"
        ark.parent.mkdir(parents=True, exist_ok=True)
        with kaldiio.WriteHelper(f"ark,scp:{ark},{d.path / 'data' / 'feats.ark.scp'}") as w:
            for utt, c in to_copy:
                m = c.load_features()
                frames[utt] = str(m.shape[0])
                w(utt, m)
        scp.update(read_table(d.path / "data" / "feats.ark.scp"))
    if not scp:
        return 0
    if len(dims) != 1:
        raise DataDirError(f"{d.path}: the cuts' features have different dimensions {sorted(dims)}")
    write_table(d.path / "feats.scp", scp)
    write_table(d.path / "utt2num_frames", frames)
    (d.path / "feat_dim").write_text(f"{dims.pop()}\n")
    if fbank_config is not None and Path(fbank_config).is_file():
        (d.path / "conf").mkdir(exist_ok=True)
        shutil.copyfile(fbank_config, d.path / "conf" / "fbank.yaml")
    return len(scp)
