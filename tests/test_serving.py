"""Tests of the TF Serving client against a local stand-in for TF Serving's REST API
that runs a real export's serving_default signature."""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from n2s_tf import io
from n2s_tf.export import LoadedModel, export_model
from n2s_tf.networks import build_network
from n2s_tf.serving import ServingError, predict_grpc, predict_rest, rest_endpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_REQUESTS = 20
PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    network = build_network("unet", ndim=2, channels=1, depth=1, base_filters=4)
    meta = {"ndim": 2, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
            "method": "n2s", "network": "unet", "steps": 0}
    return LoadedModel(export_model(network, meta, str(tmp_path_factory.mktemp("export"))))


class _PredictHandler(BaseHTTPRequestHandler):
    """TF Serving's POST /v1/models/<name>[/versions/<v>]:predict, columnar format, for
    one model "denoiser" at version 1; errors as TF Serving sends them: {"error": ...}."""

    def do_POST(self):
        self.server.handled += 1
        match = PREDICT_PATH.match(self.path)
        if not match or match.group(1) != "denoiser" or match.group(2) not in (None, "1"):
            name = match.group(1) if match else self.path
            return self._reply(404, {"error": f"Servable not found for request: Latest({name})"})
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if request.get("signature_name", "serving_default") != "serving_default":
            return self._reply(400, {"error": f"Serving signature name: \"{request['signature_name']}\" not found"})
        images = np.asarray(request["inputs"]["images"], np.float32)
        denoised = self.server.model.serve(images)
        # With one output TF Serving leaves out its name, unless asked to show names.
        outputs = {"denoised": denoised.tolist()} if self.server.named_outputs else denoised.tolist()
        self._reply(200, {"outputs": outputs})

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # keep test output clean


def _start_server(model, named_outputs=False):
    """A stand-in TF Serving on a free local port that answers at most MAX_REQUESTS."""
    server = HTTPServer(("127.0.0.1", 0), _PredictHandler)
    server.model, server.named_outputs, server.handled = model, named_outputs, 0
    server.timeout = 0.1  # handle_request returns this often to look at `stop`
    stop = threading.Event()

    def serve():
        while not stop.is_set() and server.handled < MAX_REQUESTS:
            server.handle_request()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def shutdown():
        stop.set()
        thread.join(timeout=10)
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}", shutdown


@pytest.fixture
def server(model):
    url, shutdown = _start_server(model)
    yield url
    shutdown()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_rest_endpoint():
    assert rest_endpoint("http://h:8501/") == "http://h:8501/v1/models/denoiser:predict"
    assert rest_endpoint("https://h", "m", 3) == "https://h/v1/models/m/versions/3:predict"
    with pytest.raises(ValueError, match="http://"):
        rest_endpoint("localhost:8501")


def test_predict_rest_equals_the_signature(model, server):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 15, (21, 34)).astype(np.float32)
    out = predict_rest(server, image)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, model.serve(image[None, ..., None])[0, ..., 0], rtol=0, atol=1e-5)
    batch = rng.normal(0, 1, (2, 9, 14, 1)).astype(np.float32)
    np.testing.assert_allclose(predict_rest(server, batch, version=1), model.serve(batch), rtol=0, atol=1e-5)


def test_predict_rest_reads_named_outputs(model):
    url, shutdown = _start_server(model, named_outputs=True)
    try:
        image = np.arange(6 * 8, dtype=np.float32).reshape(6, 8, 1)
        np.testing.assert_allclose(predict_rest(url, image), model.serve(image[None])[0], rtol=0, atol=1e-5)
    finally:
        shutdown()


def test_server_errors_are_one_line(server):
    with pytest.raises(ServingError, match=r"HTTP 404: Servable not found for request: Latest\(nope\)") as error:
        predict_rest(server, np.zeros((4, 4)), model_name="nope")
    assert "\n" not in str(error.value)
    with pytest.raises(ServingError, match="HTTP 404"):
        predict_rest(server, np.zeros((4, 4)), version=7)


def test_unreachable_server():
    with pytest.raises(ServingError, match="cannot reach TF Serving at http://127.0.0.1:.*refused"):
        predict_rest(f"http://127.0.0.1:{_free_port()}", np.zeros((4, 4)), timeout=5)


def test_bad_image_shape():
    with pytest.raises(ValueError, match="got shape \\(5,\\)"):
        predict_rest("http://127.0.0.1:1", np.zeros(5))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_serving") is not None,
                    reason="tensorflow-serving-api is installed; this tests the message for its absence")
def test_predict_grpc_without_the_serving_api():
    with pytest.raises(ImportError, match=re.escape("pip install n2s_tf[serving]")):
        predict_grpc("localhost:8500", np.zeros((4, 4)))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "n2s_tf.serving", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_png_to_tiff(model, server, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (24, 30), dtype=np.uint8)
    PILImage.fromarray(pixels).save(tmp_path / "noisy.png")
    output = tmp_path / "denoised.tif"
    done = _cli(f"--url={server}", f"--input={tmp_path / 'noisy.png'}", f"--output={output}")
    assert done.returncode == 0, done.stderr
    expected = model.serve(pixels[None, ..., None].astype(np.float32))[0, ..., 0]
    np.testing.assert_allclose(tifffile.imread(output), expected, rtol=0, atol=1e-4)
    assert io.read_image(output).dtype == "float32"


def test_cli_user_errors_exit_2_with_one_line(tmp_path):
    missing, existing = tmp_path / "missing.png", tmp_path / "existing.npy"
    np.save(existing, np.zeros((8, 8), np.float32))
    # Port 1 has no server: these must fail before any request.
    done = _cli("--url=http://127.0.0.1:1", f"--input={missing}", f"--output={tmp_path / 'o.tif'}")
    assert (done.returncode, done.stderr) == (2, f"error: cannot read '{missing}': no such file\n")
    assert not (tmp_path / "o.tif").exists()
    done = _cli("--url=http://127.0.0.1:1", f"--input={existing}", f"--output={existing}")
    assert (done.returncode, done.stderr) == (2, f"error: {existing} exists; pass --overwrite to replace it\n")


def test_cli_unreachable_server_exits_1(tmp_path):
    np.save(tmp_path / "noisy.npy", np.zeros((8, 8), np.float32))
    done = _cli(f"--url=http://127.0.0.1:{_free_port()}", f"--input={tmp_path / 'noisy.npy'}",
                f"--output={tmp_path / 'o.tif'}")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: cannot reach TF Serving")
