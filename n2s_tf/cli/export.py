"""`n2s-export`: write an exported model in another ecosystem's format.

    n2s-export --format=bioimageio --output=general.zip      # the shipped general model
    n2s-export --format=bioimageio --model=runs/cryo --test_image=mic.mrc --output=cryo.zip \\
        --authors='Ada Lovelace,Alan Turing' --name='cryo-EM denoiser'

bioimageio: a bioimage.io model package (rdf.yaml, TensorFlow SavedModel weights, test input
and output, cover, README) for Fiji/deepImageJ, ilastik and bioimageio.core; it needs the
extra `pip install 'n2s_tf[bioimageio]'` and takes about a minute (one prediction of the
test image, zipping and validating the package). See docs/bioimageio.md.
"""

import os

from absl import flags

from n2s_tf.cli.common import run_main

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", "bioimageio", ["bioimageio"], "what to write: bioimageio = a bioimage.io model package")
flags.DEFINE_string("model", None, "exported model or training directory (default: the shipped general model)")
flags.DEFINE_string("output", None, "the package file to write (.zip)", required=True)
flags.DEFINE_string("test_image", None, "image the package's test input is cut from (default: the shipped "
                                        "example image, for 2D grayscale models)")
flags.DEFINE_integer("test_size", None, "largest side of the test input, in pixels "
                                        "(default: 256 in 2D, the smallest valid size in 3D)")
flags.DEFINE_string("name", None, "the model's name on bioimage.io (letters, digits, spaces, _+-(); "
                                  "default: from the model folder)")
flags.DEFINE_string("description", None, "one or two sentences (default: method, network and steps)")
flags.DEFINE_string("authors", "n2s_tf authors", "comma-separated names of the people who made the model")
flags.DEFINE_string("license", "BSD-3-Clause", "SPDX licence identifier of the weights")
flags.DEFINE_boolean("overwrite", False, "replace an existing --output file")


def main(argv):
    from n2s_tf import api
    from n2s_tf.bioimageio_package import export_bioimageio
    from n2s_tf.errors import ConfigError

    if FLAGS.test_size is not None and FLAGS.test_size < 1:
        raise ConfigError(f"--test_size={FLAGS.test_size} must be a positive number of pixels")
    if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
        raise ConfigError(f"{FLAGS.output} exists; pass --overwrite to replace it")
    model = api.load_model(FLAGS.model)
    # The library names its arguments as these flags are named.
    path = export_bioimageio(model, FLAGS.output, test_image=FLAGS.test_image, test_size=FLAGS.test_size,
                             name=FLAGS.name, description=FLAGS.description, authors=FLAGS.authors.split(","),
                             license=FLAGS.license, overwrite=FLAGS.overwrite)
    print(f"wrote {path} (bioimage.io model package of {model.path})")


def run():
    run_main(main)


if __name__ == "__main__":
    run()
