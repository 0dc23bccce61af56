"""justkit: a toolkit to reproduce and extend JUST (joint unsupervised and supervised training) for multilingual ASR."""

__version__ = "0.1.0"
