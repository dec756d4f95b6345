"""--init: start a run from an exported model's weights (fine-tuning a shipped model).

Without --network_args the run takes the exported network's options; given, they must build the
same network, or the same one with more base filters or an added attention block: then the
trained filters are copied into the grown network (`networks.widen`).
"""

import keras

from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError


def init_network_args(config: TrainConfig) -> dict:
    """The network options of the --init model, for a run that gives no --network_args: a
    fine-tuning run continues the network it starts from ({} if it is another kind of network,
    which `load_initial_weights` then refuses)."""
    from n2s_tf.export import LoadedModel

    try:
        trained = LoadedModel(config.init)
    except FileNotFoundError as error:
        raise ConfigError(f"--init: {error}") from None
    if trained.metadata["network"] != config.network:
        return {}
    return trained.keras_network().network_args


def load_initial_weights(network: keras.Model, config: TrainConfig) -> None:
    """--init: copy the weights of an exported model into the freshly built network, which
    must be the same network (kind and options; the layer names may differ), or the same with
    more base_filters: then the trained filters are copied into the wider network, which starts
    out computing what the exported one computes (`networks.widen`)."""
    from n2s_tf.export import LoadedModel
    from n2s_tf.networks.widen import copy_into_wider

    try:
        trained = LoadedModel(config.init)
    except FileNotFoundError as error:
        raise ConfigError(f"--init: {error}") from None

    def options(network_config):  # what fixes the shapes and the meaning of the weights
        return {k: v for k, v in sorted(network_config.items()) if k not in ("name", "trainable", "dtype")}

    kind = trained.metadata["network"]
    # The loaded network's own config, not the metadata's: options added since the export
    # was made take their defaults there, as they did then.
    source = trained.keras_network()
    built, wanted = options(source.get_config()), options(network.get_config())
    # What a grown network may change: more base filters, and an attention block added.
    growth = {"base_filters": 0} if built.get("nonlocal_window") else {
        "base_filters": 0, "nonlocal_window": 0, "nonlocal_level": 0}
    same_but_growth = {**built, **growth} == {**wanted, **growth}
    if kind != config.network or not (same_but_growth and built["base_filters"] <= wanted["base_filters"]):
        raise ConfigError(f"--init: {config.init} holds a {kind} network {built}, the flags build a "
                          f"{config.network} network {wanted}: pass its --network and --network_args "
                          f"(base_filters may be larger, a nonlocal_window may be added)")
    copy_into_wider(source, network)  # at equal widths, a plain copy
