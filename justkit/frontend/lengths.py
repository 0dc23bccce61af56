"""Frame-count arithmetic of the model's convolutional subsampling: pure integer functions.

They sit in the front-end layer so that data packing and the loader (which drop utterances too
short for the model) and the model itself (``justkit.nn.subsampling``) share one definition
without the data layer importing the network's.
"""
from __future__ import annotations

from typing import TypeVar

N = TypeVar("N")  # an int or a tensor of lengths


def conv_out_len(n: N, kernel: int, stride: int = 2) -> N:
    """Output length of an unpadded convolution: floor((n - kernel) / stride) + 1."""
    return (n - kernel) // stride + 1


def subsampled_len(n: N, kernel: int = 3) -> N:
    """Encoder frames from ``n`` input frames through two stride-2 convolutions of ``kernel``."""
    return conv_out_len(conv_out_len(n, kernel), kernel)


def min_input_frames(kernel: int = 3) -> int:
    """Shortest input (frames) that yields one encoder frame through the two convolutions."""
    return 2 * (kernel - 1) + kernel
