"""Denoise images: `python test_single.py --input=x.mrc --output=y.mrc` (see n2s_tf/cli/denoise.py)."""

from n2s_tf.cli.denoise import run

if __name__ == "__main__":
    run()
