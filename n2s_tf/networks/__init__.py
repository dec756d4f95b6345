"""Denoising networks, registered by name and built for 2D or 3D from the same code.

    model = build_network("resunet", ndim=2, channels=1)

Every network maps (N, *spatial, channels) to the same shape with a linear float32 output, and
has the attributes `ndim`, `channels`, `stride` (spatial sizes must be multiples of it) and
`receptive_field` (width of the centred window, along one axis, holding every input pixel
that can influence one output pixel: tiled inference gives each tile half of it as context).
"""

NETWORKS = {}


def register(name):
    """Class decorator: make a network available to `build_network` under `name`."""

    def add(cls):
        NETWORKS[name] = cls
        return cls

    return add


def build_network(name, ndim=2, channels=1, **kwargs):
    """Build the network registered as `name`; `kwargs` go to its constructor."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](ndim=ndim, channels=channels, **kwargs)


# Imported last: these modules use `register` above to fill NETWORKS.
from n2s_tf.networks.encoder_decoder import EncoderDecoder  # noqa: E402
from n2s_tf.networks.resunet import ResUNet  # noqa: E402
from n2s_tf.networks.unet import UNet  # noqa: E402

__all__ = ["NETWORKS", "register", "build_network", "ResUNet", "UNet", "EncoderDecoder"]
