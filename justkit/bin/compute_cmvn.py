"""Stage 3: global CMVN stats of a data dir's feats.scp, in Kaldi layout (python -m justkit.bin.compute_cmvn DIR OUT)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from justkit.data.cmvn import CmvnError, compute_cmvn_stats, stats_to_mean_std, write_cmvn
from justkit.data.datadir import DataDirError
from justkit.log import setup_logging

log = logging.getLogger("compute_cmvn")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data_dir", type=Path, help="dir with feats.scp (dump/fbank/train)")
    p.add_argument("out", type=Path, help="stats file (dump/fbank/train/cmvn.ark): 2 x (D+1) float64 matrix")
    a = p.parse_args(argv)
    setup_logging()
    scp = a.data_dir / "feats.scp"
    try:
        stats = compute_cmvn_stats(scp)
        write_cmvn(a.out, stats)
    except (CmvnError, DataDirError) as e:
        log.error("%s", e)
        return 1
    mean, std = stats_to_mean_std(stats)
    log.info("%s: %d frames, dim %d, mean in [%.2f, %.2f], std in [%.2f, %.2f] -> %s",
             scp, int(stats[0, -1]), len(mean), mean.min(), mean.max(), std.min(), std.max(), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
