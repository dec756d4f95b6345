"""One configuration record for a training run.

Command-line flags map one to one onto `TrainConfig`; the method it names is a row of
`methods.METHODS`. `validate` refuses unknown values and impossible combinations.
"""

import dataclasses
import json
import math
from typing import Optional

from n2s_tf.errors import ConfigError
from n2s_tf.methods import METHODS, Method

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "float16", "bfloat16")
WHITEN = ("off", "auto", "on")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved with checkpoints and exports."""

    model: str = "n2sp"
    steps: int = 8000
    pro_steps: int = 500  # n2sp: the last pro_steps steps use the learned noise level
    network: str = "unet"
    network_args: dict = dataclasses.field(default_factory=dict)
    ndim: int = 2
    data: Optional[str] = None  # file, folder or glob; None = built-in demo set
    target: Optional[str] = None  # folder of paired images (n2n: other half, n2t: clean)
    clean: Optional[str] = None  # folder of clean references for validation PSNR
    # n2t: (low, high) std of Gaussian noise added on the fly to clean --data, as fractions of
    # each image's std, drawn log-uniformly per patch; () = --data is noisy (or --target pairs).
    noise: tuple = ()
    patch_size: tuple = (64, 64)
    batch_size: int = 16
    lr: float = 4e-4
    lr_decay_steps: int = 5000  # the reference halves the rate every 5000 steps
    lmbd: float = 2.0
    masking: Optional[str] = None  # None = the method's default
    mask_fraction: float = 0.005
    # structN2V: also hide the pixels within mask_span of each masked one (correlated noise).
    mask_span: int = 0
    augment: bool = True
    # Train on each image whitened with its own noise spectrum (n2s_tf.whitening), as the
    # model will then denoise: a blind-spot method on correlated noise (a tomogram, no halves).
    # "auto" whitens the images whose noise n2s_tf.noise finds correlated, as inference does.
    whiten: str = "off"  # off, auto or on
    model_dir: str = "runs/n2s"
    # An exported model (or training dir) whose weights start the run instead of random ones:
    # fine-tuning a shipped model on new data; its network must be the one the flags build
    # (empty network_args take its own).
    init: Optional[str] = None
    checkpoint_every: int = 500
    resume: bool = False
    seed: int = 0
    strategy: str = "auto"
    cpu_devices: int = 0  # split the CPU into N logical devices (tests, CPU users)
    mixed_precision: str = "float32"
    jit_compile: bool = False  # XLA was slower on 2-core CPUs here; measure first

    @property
    def method(self) -> Method:
        return METHODS[self.model]

    @property
    def masking_method(self) -> str:
        return self.masking or self.method.default_masking

    @property
    def switch_step(self) -> int:
        """First step that uses the learned noise level (n2sp; a run shorter than
        pro_steps is all N2SP); never for other methods."""
        if not self.method.learns_noise_level:
            return self.steps + 1
        return max(self.steps - self.pro_steps, 0)

    def validate(self, stride: Optional[int] = None) -> "TrainConfig":
        """Raise ConfigError for unknown values and impossible combinations."""
        from n2s_tf.masking import MASKING_METHODS
        from n2s_tf.networks import NETWORKS

        _one_of("model", self.model, METHODS)
        _one_of("network", self.network, NETWORKS)
        if self.method.masked:
            _one_of("masking", self.masking_method, MASKING_METHODS)
        _one_of("strategy", self.strategy, STRATEGIES)
        _one_of("mixed_precision", self.mixed_precision, PRECISIONS)
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.pro_steps < 0:
            raise ConfigError(f"--pro_steps must not be negative, got {self.pro_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be at least 1, got {self.batch_size}")
        # Written so that NaN fails them too (every comparison with NaN is False).
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.lmbd < math.inf:
            raise ConfigError(f"--lmbd must be a number >= 0, got {self.lmbd}")
        if not 0 < self.mask_fraction < 1:
            raise ConfigError(f"--mask_fraction must lie in (0, 1), got {self.mask_fraction}")
        if self.mask_span < 0 or (self.mask_span and not self.method.masked):
            raise ConfigError(f"--mask_span must be >= 0 and needs a blind-spot --model, got {self.mask_span}")
        if self.lr_decay_steps < 1:
            raise ConfigError(f"--lr_decay_steps must be at least 1, got {self.lr_decay_steps}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint_every must be at least 1, got {self.checkpoint_every}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must lie in [0, 2^32), got {self.seed}")
        if self.cpu_devices < 0:
            raise ConfigError(f"--cpu_devices must not be negative, got {self.cpu_devices}")
        if self.ndim not in (2, 3) or len(self.patch_size) != self.ndim:
            raise ConfigError(
                f"--patch_size {','.join(map(str, self.patch_size))} does not fit {self.ndim}D data"
            )
        if self.noise:
            if self.method.target != "clean":
                raise ConfigError(f"--noise trains on clean images with synthetic noise: it needs --model=n2t, "
                                  f"not --model={self.model}")
            if len(self.noise) != 2 or not 0 < self.noise[0] <= self.noise[1] < math.inf:
                raise ConfigError(f"--noise needs two positive fractions low,high with low <= high, got "
                                  f"{','.join(map(str, self.noise))}")
            if self.target or self.clean:
                raise ConfigError("--noise makes the noisy inputs from clean --data: drop --target and --clean")
        elif self.method.target and not self.target and self.data is not None:
            kind = "second noisy half" if self.method.target == "noisy" else "clean target"
            raise ConfigError(f"--model={self.model} needs --target (a folder with the {kind} of each --data file)")
        if self.method.masked and self.network_args.get("residual"):
            raise ConfigError(f"residual=true needs an unmasked method (n2t, n2n), not --model={self.model}: a "
                              f"network that adds its input to its output would pass the masked pixels through")
        _one_of("whiten", self.whiten, WHITEN)
        if self.whiten != "off" and (not self.method.masked or self.data is None):
            raise ConfigError(f"--whiten trains a blind-spot method (n2s, n2sp, n2v, n2v2) on --data with correlated "
                              f"noise, not --model={self.model}" + (" on the demo set" if self.data is None else ""))
        if self.target and not self.method.target:
            raise ConfigError(f"--target is only used by n2n and n2t, not --model={self.model}")
        if stride is not None:
            bad = [p for p in self.patch_size if p % stride or p < stride]
            if bad:
                raise ConfigError(
                    f"--patch_size {','.join(map(str, self.patch_size))} must be a multiple of the "
                    f"network's stride {stride} (and at least {stride})"
                )
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        values = json.loads(text)
        values["patch_size"] = tuple(values["patch_size"])
        values["noise"] = tuple(values.get("noise", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _one_of(flag, value, valid):
    if value not in valid:
        raise ConfigError(f"--{flag}={value!r} is not one of: {', '.join(valid)}")
