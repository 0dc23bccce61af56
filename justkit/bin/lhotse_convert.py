"""Convert a Kaldi/justkit data dir (and its stored features) to lhotse manifests, or lhotse manifests back.

  to_lhotse DATA_DIR OUT_DIR: writes OUT_DIR/<prefix>_{recordings,supervisions,cuts}_<part>.jsonl.gz
      (icefall's names; <part>: the data dir's name) and, with features, <prefix>_fbank_<part>.yaml;
      the features stay in their ark files (the manifests point into them).
  from_lhotse MANIFEST_DIR DATA_DIR: reads the same names (or --recordings/--supervisions/--cuts) and
      writes wav.scp, text, utt2spk, spk2utt, utt2lang, utt2dur (+ segments, feats.scp, utt2num_frames,
      feat_dim, conf/fbank.yaml when the manifests have them).
lhotse is an optional dependency (pip install lhotse); only this command imports it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.lhotse_convert")
PROG = "python -m justkit.bin.lhotse_convert"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, epilog=f"Example: {PROG} to_lhotse dump/fbank/test_pl data/lhotse\n"
                                         f"         {PROG} from_lhotse --part test_pl data/lhotse data/test_pl_back")
    p.add_argument("direction", choices=["to_lhotse", "from_lhotse"])
    p.add_argument("src", type=Path, help="to_lhotse: the data dir; from_lhotse: the manifests' dir")
    p.add_argument("dst", type=Path, help="to_lhotse: the manifests' dir; from_lhotse: the data dir to write")
    p.add_argument("--prefix", default="justkit", help="manifest names: <prefix>_<kind>_<part>.jsonl.gz")
    p.add_argument("--part", default="", help="manifest names' part (default: to_lhotse: the data dir's name; "
                                              "from_lhotse: the output dir's name)")
    p.add_argument("--recordings", type=Path, default=None, help="from_lhotse: this RecordingSet instead")
    p.add_argument("--supervisions", type=Path, default=None, help="from_lhotse: this SupervisionSet instead")
    p.add_argument("--cuts", type=Path, default=None,
                   help="from_lhotse: this CutSet (its features) instead; 'none': convert no features")
    p.add_argument("--fbank_config", type=Path, default=None,
                   help="from_lhotse: the features' fbank config, copied to conf/fbank.yaml (default: "
                        "<prefix>_fbank_<part>.yaml beside the manifests, if there)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.datadir.lhotse_io import ManifestPaths, from_lhotse, to_lhotse
    from justkit.datadir.tables import DataDirError

    setup_logging()
    if a.direction == "to_lhotse":
        to_lhotse(a.src, ManifestPaths(a.dst, a.prefix, a.part or a.src.resolve().name))
        return 0
    m = ManifestPaths(a.src, a.prefix, a.part or a.dst.resolve().name)
    recs, sups = a.recordings or m.recordings, a.supervisions or m.supervisions
    for f in (recs, sups):
        if not f.is_file():
            raise DataDirError(f"{f}: manifest not found (give --part, or --recordings/--supervisions)")
    cuts = None if str(a.cuts) == "none" else (a.cuts or (m.cuts if m.cuts.is_file() else None))
    from_lhotse(recs, sups, a.dst, cuts, a.fbank_config or m.fbank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
