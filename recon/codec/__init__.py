"""Learned image codec: a sparse autoencoder (latent channels chosen by group-sparse AdaBreg), an exact
integer synthesis, integer probability tables and constriction's range coder, in a validated
``.rcz`` container. Lossless, near-lossless (``|error| <= delta``) and latent-only lossy modes."""

from recon.codec.codec import Quality, bit_depth, compress, decompress, psnr
from recon.codec.container import Header, read_header
from recon.codec.model import CodecModel, load_codec, save_codec
from recon.codec.network import CodecNet

__all__ = [
    "CodecModel",
    "CodecNet",
    "Header",
    "Quality",
    "bit_depth",
    "compress",
    "decompress",
    "load_codec",
    "psnr",
    "read_header",
    "save_codec",
]
