"""Write the clean images the shipped general model is trained on (no download).

    python bench/natural_training_set.py --out=runs/natural_clean             # a few seconds
    python bench/natural_training_set.py --textures=200 --out=runs/natural_tex  # and 200 textures
    python train.py --model=n2t --noise=0.05,3.0 --data=runs/natural_clean ...

Grayscale images that ship with scikit-image, matplotlib and PyWavelets (the test and bm3d
extras bring it), none of them one of bench/quality.py's eight benchmark images (nor
PyWavelets' copy of the camera man), as float32 TIFFs on the 0-255 scale; images of at least
400 px also at half scale (more structure per patch). The retina is halved first (it
would otherwise give a third of the patches). `gravel` is held out of training: it is the
texture image of bench/quality.py's texture row.

--textures=N adds N procedural textures (n2s_tf.synthetic_textures: gratings, warped stripes,
weaves, tiled motifs, occluded, half of them blended into a crop of a natural training image),
256 x 256, from a fixed seed: the periodic detail natural photographs rarely hold.
"""

import os
import sys

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402

# The card in trained_models/README.md lists which images each model version saw.
SKIMAGE = ("grass", "page", "text", "clock", "cell", "hubble_deep_field", "immunohistochemistry",
           "retina", "shepp_logan_phantom", "horse", "microaneurysms")
MATPLOTLIB = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
PYWAVELETS = ("aero", "ascent")

flags.DEFINE_string("out", "runs/natural_clean", "output folder")
flags.DEFINE_integer("textures", 0, "procedural texture images to add (n2s_tf.synthetic_textures)")
TEXTURE_SIDE = 256
TEXTURE_SEED = 2027
FLAGS = flags.FLAGS


def training_images():
    """{name: (H, W) float32 on the 0-255 scale}."""
    import skimage.transform

    from n2s_tf.data import sample_image

    images = {name: sample_image(name).astype(np.float64) for name in SKIMAGE}
    images["retina"] = skimage.transform.rescale(images["retina"], 0.5, anti_aliasing=True)
    images["motorcycle"] = sample_image("motorcycle")  # the right view is nearly the same picture
    for name in PYWAVELETS:
        images[name] = sample_image(f"pywt:{name}")
    images["mri"] = sample_image("matplotlib:s1045.ima.gz")
    for file in MATPLOTLIB:
        images[file.split(".")[0]] = sample_image(f"matplotlib:{file}")
    for name, image in list(images.items()):
        if min(image.shape) >= 400:
            images[f"{name}_half"] = skimage.transform.rescale(image, 0.5, anti_aliasing=True)
    return {name: image.astype(np.float32) for name, image in images.items()}


def texture_images(count, naturals):
    """{name: (256, 256) float32 0-255}: `count` procedural textures, every second one blended
    into a random crop of one of the `naturals` at least 256 px on each side."""
    from n2s_tf.synthetic_textures import texture_image

    rng = np.random.default_rng(TEXTURE_SEED)
    hosts = [image for image in naturals.values() if min(image.shape) >= TEXTURE_SIDE]
    images = {}
    for index in range(count):
        natural = None
        if index % 2 and hosts:
            host = hosts[rng.integers(len(hosts))]
            top = rng.integers(host.shape[0] - TEXTURE_SIDE + 1)
            left = rng.integers(host.shape[1] - TEXTURE_SIDE + 1)
            natural = host[top:top + TEXTURE_SIDE, left:left + TEXTURE_SIDE]
        images[f"texture_{index:04d}"] = texture_image(rng, (TEXTURE_SIDE, TEXTURE_SIDE), natural=natural)
    return images


def main(argv):
    import tifffile

    images = training_images()
    images.update(texture_images(FLAGS.textures, images))
    os.makedirs(FLAGS.out, exist_ok=True)
    for name, image in images.items():
        path = os.path.join(FLAGS.out, f"{name}.tif")
        tifffile.imwrite(path + ".tmp", image, photometric="minisblack")
        os.replace(path + ".tmp", path)
    pixels = sum(image.size for image in images.values())
    print(f"wrote {len(images)} images ({pixels / 1e6:.1f} megapixels) to {FLAGS.out}")


if __name__ == "__main__":
    run_main(main)
