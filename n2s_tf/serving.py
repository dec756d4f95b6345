"""Denoise with a model running in TF Serving (see docs/serving.md).

The exported `serving_default` signature standardizes, pads and restores the scale
inside the graph, so a client only sends raw pixels and gets denoised pixels back.
`predict_rest` needs nothing beyond the standard library and numpy; `predict_grpc`
needs `pip install n2s_tf[serving]` and is the one to use for large images (JSON
text is about five times heavier than the raw float32 bytes gRPC sends).

    python -m n2s_tf.serving --url=http://localhost:8501 --input=noisy.png --output=denoised.tif
    python -m n2s_tf.serving --grpc=localhost:8500 --input=mic.mrc --output=mic_dn.mrc
"""

import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np

from n2s_tf.errors import ConfigError

SIGNATURE = "serving_default"
INPUT_KEY = "images"
OUTPUT_KEY = "denoised"
GRPC_EXTRA = "pip install n2s_tf[serving]"


class ServingError(RuntimeError):
    """TF Serving answered with an error, or could not be reached; the message is one line."""


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _as_batch(image):
    """float32 (N, *spatial, C) from (H, W), (H, W, C) or a batch (N, H, W, C) /
    (N, D, H, W, C), and a function that gives the result the input's shape."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        return array[None, ..., None], lambda out: out[0, ..., 0]
    if array.ndim == 3:
        return array[None], lambda out: out[0]
    if array.ndim in (4, 5):
        return array, lambda out: out
    raise ValueError(f"expected an (H, W) or (H, W, C) image or an (N, H, W, C) or (N, D, H, W, C) "
                     f"batch, got shape {array.shape}")


def _checked(out, batch, source) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    if out.shape != batch.shape:
        raise ServingError(f"{source} returned shape {out.shape} for input shape {batch.shape}")
    return out


def rest_endpoint(url: str, model_name: str = "denoiser", version: int = None) -> str:
    """TF Serving's REST predict address, e.g. http://host:8501/v1/models/denoiser:predict."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the TF Serving URL must start with http:// or https://, got {url!r}")
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version is not None else "")
    return url.rstrip("/") + path + ":predict"


def _post_json(endpoint: str, payload: bytes, timeout: float) -> dict:
    request = urllib.request.Request(endpoint, data=payload, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            text = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            pass  # not TF Serving's {"error": ...}: report the body itself
        raise ServingError(f"TF Serving at {endpoint} answered HTTP {error.code}: {_one_line(text)[:500]}") from None
    except (urllib.error.URLError, OSError) as error:  # refused, unknown host, timeout
        reason = getattr(error, "reason", error)
        raise ServingError(f"cannot reach TF Serving at {endpoint}: {_one_line(reason)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ServingError(f"TF Serving at {endpoint} sent a reply that is not JSON") from None


def predict_rest(url: str, image, model_name: str = "denoiser", version: int = None,
                 timeout: float = 600) -> np.ndarray:
    """Denoise `image` with TF Serving's REST API at `url` (e.g. http://localhost:8501).

    image: (H, W), (H, W, C), or a batch (N, H, W, C); a volume goes as (1, D, H, W, C).
    Returns float32 with the input's shape. Raises ServingError for server errors
    and unreachable hosts, ValueError for a bad URL or image shape.
    """
    batch, restore = _as_batch(image)
    endpoint = rest_endpoint(url, model_name, version)
    payload = json.dumps({"signature_name": SIGNATURE, "inputs": {INPUT_KEY: batch.tolist()}}).encode()
    reply = _post_json(endpoint, payload, timeout)
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if isinstance(outputs, dict):  # TF Serving names the outputs only for multi-output signatures
        outputs = outputs.get(OUTPUT_KEY)
    if outputs is None:
        raise ServingError(f"TF Serving at {endpoint} sent no '{OUTPUT_KEY}' outputs")
    return restore(_checked(outputs, batch, f"TF Serving at {endpoint}"))


def predict_grpc(target: str, image, model_name: str = "denoiser", version: int = None,
                 timeout: float = 600) -> np.ndarray:
    """Like `predict_rest`, over gRPC at `target` (e.g. localhost:8500): the tensor
    travels as raw float32 bytes. Needs tensorflow-serving-api (n2s_tf[serving])."""
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError:
        raise ImportError(f"predict_grpc needs tensorflow-serving-api: {GRPC_EXTRA}") from None
    import tensorflow as tf

    batch, restore = _as_batch(image)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.float32))
    # gRPC's default 4 MB message limit is far below one 4k x 4k float32 image (64 MB).
    unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=unlimited) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(f"TF Serving at {target} (gRPC): {error.code().name}: "
                               f"{_one_line(error.details())[:500]}") from None
    if OUTPUT_KEY not in response.outputs:
        raise ServingError(f"TF Serving at {target} (gRPC) sent no '{OUTPUT_KEY}' output")
    return restore(_checked(tf.make_ndarray(response.outputs[OUTPUT_KEY]), batch, f"TF Serving at {target}"))


# ----------------------------------------------------------------------------- command line


def _define_flags():
    """Flags exist only when run as a program, so importing this module defines none."""
    from absl import flags

    flags.DEFINE_string("url", "http://localhost:8501", "TF Serving REST address")
    flags.DEFINE_string("grpc", None, "TF Serving gRPC address (host:port); used instead of --url")
    flags.DEFINE_string("input", None, "image file to denoise (PNG, JPEG, TIFF, NPY, MRC)", required=True)
    flags.DEFINE_string("output", None, "output file; its extension picks the format", required=True)
    flags.DEFINE_string("model_name", "denoiser", "model name in TF Serving")
    flags.DEFINE_integer("version", None, "model version (default: the newest TF Serving loaded)")
    flags.DEFINE_boolean("overwrite", False, "replace an existing output file")


def main(argv):
    from absl import flags

    from n2s_tf import io

    FLAGS = flags.FLAGS
    image = io.read_image(FLAGS.input)
    if os.path.exists(FLAGS.output) and not FLAGS.overwrite:  # say so before the server works
        raise ConfigError(f"{FLAGS.output} exists; pass --overwrite to replace it")
    # A volume is one 3D item; a stack is already a batch of 2D images.
    batch = image.data[None] if image.kind == "volume" else image.data
    try:
        if FLAGS.grpc:
            denoised = predict_grpc(FLAGS.grpc, batch, FLAGS.model_name, FLAGS.version)
        else:
            denoised = predict_rest(FLAGS.url, batch, FLAGS.model_name, FLAGS.version)
    except (ServingError, ImportError) as error:
        # A missing package is the user's to fix (2, like bad flags); a server failure is not (1).
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ImportError) else 1)
    io.write_image(FLAGS.output, denoised[0] if image.kind == "volume" else denoised,
                   like=image, overwrite=FLAGS.overwrite)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    from n2s_tf.cli.common import run_main

    _define_flags()
    run_main(main)
