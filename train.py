"""Train a denoiser: `python train.py --model=n2sp --steps=8000` (see n2s_tf/cli/train.py)."""

from n2s_tf.cli.train import run

if __name__ == "__main__":
    run()
