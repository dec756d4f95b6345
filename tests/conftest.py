"""Fixtures shared by the command-line tests."""

import pytest


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An exported 2D one-channel N2S model small enough for a subprocess test (depth 1, 4 filters)."""
    from n2s_tf.export import export_model
    from n2s_tf.networks import build_network

    network = build_network("unet", depth=1, base_filters=4)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2s", "network": "unet", "steps": 0}
    return export_model(network, meta, str(tmp_path_factory.mktemp("export")))
