"""Signal front end: audio I/O, resampling, Kaldi fbank, CMVN, and the stage 2/3 shard jobs."""
