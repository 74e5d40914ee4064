"""DESOM models: an autoencoder with a SOM layer in its latent space (paper sections 3.3-3.6).

DESOM-1 is a convolutional autoencoder for 1x32x32 cutouts with a 25x25 map; DESOM-2 a dense
autoencoder for 625-bin histo-vectors with a 20x20 map. ``DESOMConfig`` holds every
hyper-parameter (paper defaults where the paper gives one) and round-trips through a dict so it
can travel inside a checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from desom.som import SCHEDULES, SOMLayer

KINDS = ("desom1", "desom2")
PROTOTYPE_INITS = ("samples", "pca")
SOM_LOSSES = ("sum", "mean")


@dataclass
class DESOMConfig:
    kind: str = "desom1"
    input_shape: tuple = (1, 32, 32)
    latent_dim: int = 160
    map_rows: int = 25
    map_cols: int = 25
    t_max: float = 10.0
    t_min: float = 0.5
    schedule: str = "exponential"
    gamma: float = 0.0075
    iterations: int = 100_000
    batch_size: int = 256
    lr: float = 1e-3
    pretrain_iterations: int = 0
    seed: int = 0
    prototype_lr: float | None = None     # Adam lr of the prototypes (None: same as lr)
    lr_decay_iterations: int = 0          # last N joint iterations: both lrs fall linearly to 0
    # How the prototypes start: "samples", the encodings of K random samples (the paper's code);
    # "pca", a grid over the encodings' first two principal axes, ordered from the start.
    prototype_init: str = "samples"
    # The SOM term: "sum", sum_k w_ik ||z_i - m_k||^2 (the paper's); "mean", the same divided by
    # sum_k w_ik, so its size no longer grows with the neighbourhood (at T = 10 on a 9x9 map every
    # node weighs nearly 1, and the sum outweighs the reconstruction term: bench_desom2_collapse).
    som_loss: str = "sum"
    # First N joint iterations: gamma rises linearly from gamma/N to gamma, so the SOM term does
    # not squeeze the codes together before the reconstruction term has shaped them (0: off).
    gamma_warmup_iterations: int = 0
    # architecture
    conv_filters: tuple = (32, 64, 128)   # desom1 encoder convolutions (3x3, ReLU, 2x2 max-pool)
    dense_units: int = 512                # desom1 dense layer between the convolutions and latent
    hidden_dims: tuple = (450, 300)       # desom2 hidden layers between input and latent
    latent_activation: str = "linear"     # "linear" | "relu"
    output_activation: str = "sigmoid"    # "sigmoid" | "linear"
    # bookkeeping
    log_every: int = 100                  # iterations between history records
    checkpoint_every: int = 0             # 0: checkpoint only at the end (when a path is given)
    normaliser_method: str = "minmax"     # desom2: HistoNormaliser method fitted on its data
    extra: dict = field(default_factory=dict)

    @classmethod
    def desom1(cls, **overrides) -> "DESOMConfig":
        """Conv autoencoder for 1x32x32 cutouts in [0, 1], latent 160, 25x25 map (paper 3.4)."""
        base = dict(kind="desom1", input_shape=(1, 32, 32), latent_dim=160, map_rows=25,
                    map_cols=25, lr=1e-3, latent_activation="linear", output_activation="sigmoid")
        base.update(overrides)
        return cls(**base).validate()

    @classmethod
    def desom2(cls, **overrides) -> "DESOMConfig":
        """Dense autoencoder 625-450-300-100 for normalised histo-vectors, 20x20 map (paper 3.6)."""
        base = dict(kind="desom2", input_shape=(625,), latent_dim=100, map_rows=20, map_cols=20,
                    lr=2e-3, hidden_dims=(450, 300), latent_activation="relu",
                    output_activation="linear")
        base.update(overrides)
        return cls(**base).validate()

    @property
    def n_nodes(self) -> int:
        return self.map_rows * self.map_cols

    @property
    def map_shape(self) -> tuple[int, int]:
        return (self.map_rows, self.map_cols)

    def validate(self) -> "DESOMConfig":
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.conv_filters = tuple(int(f) for f in self.conv_filters)
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.kind not in KINDS:
            raise ValueError(f"unknown DESOM kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "desom1":
            if len(self.input_shape) != 3 or self.input_shape[0] != 1:
                raise ValueError(f"desom1 input_shape must be (1, H, W), got {self.input_shape}")
            h, w = self.input_shape[1:]
            step = 2 ** len(self.conv_filters)
            if h % step or w % step:
                raise ValueError(f"desom1 input {h}x{w} must be divisible by {step} "
                                 f"({len(self.conv_filters)} 2x2 poolings)")
        elif len(self.input_shape) != 1:
            raise ValueError(f"desom2 input_shape must be (n_bins,), got {self.input_shape}")
        for name in ("latent_dim", "map_rows", "map_cols", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iterations < 0 or self.pretrain_iterations < 0:
            raise ValueError("iterations and pretrain_iterations must be >= 0")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only at the end), got {self.checkpoint_every}")
        if self.gamma_warmup_iterations < 0:
            raise ValueError(f"gamma_warmup_iterations must be >= 0, got {self.gamma_warmup_iterations}")
        if self.lr_decay_iterations < 0:
            raise ValueError(f"lr_decay_iterations must be >= 0, got {self.lr_decay_iterations}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if not (self.t_max > 0 and self.t_min > 0):
            raise ValueError(f"temperatures must be positive (t_max={self.t_max}, t_min={self.t_min})")
        if self.prototype_lr is not None and self.prototype_lr <= 0:
            raise ValueError(f"prototype_lr must be positive, got {self.prototype_lr}")
        if self.gamma < 0 or self.lr <= 0:
            raise ValueError(f"need gamma >= 0 and lr > 0 (gamma={self.gamma}, lr={self.lr})")
        if self.som_loss not in SOM_LOSSES:
            raise ValueError(f"som_loss must be one of {SOM_LOSSES}, got {self.som_loss!r}")
        if self.prototype_init not in PROTOTYPE_INITS:
            raise ValueError(f"prototype_init must be one of {PROTOTYPE_INITS}, got {self.prototype_init!r}")
        if self.latent_activation not in ("linear", "relu"):
            raise ValueError(f"latent_activation must be 'linear' or 'relu', got {self.latent_activation!r}")
        if self.output_activation not in ("linear", "sigmoid"):
            raise ValueError(f"output_activation must be 'linear' or 'sigmoid', got {self.output_activation!r}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("input_shape", "conv_filters", "hidden_dims"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DESOMConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a DESOM config must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DESOM config fields: {unknown}")
        return cls(**d).validate()

    def architecture(self) -> dict:
        """The fields that decide the weight shapes: two configs with the same architecture can
        share a state dict."""
        keys = ["kind", "input_shape", "latent_dim", "map_rows", "map_cols", "latent_activation",
                "output_activation"]
        keys += ["conv_filters", "dense_units"] if self.kind == "desom1" else ["hidden_dims"]
        d = self.to_dict()
        return {k: d[k] for k in keys}


def _act(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else (nn.Sigmoid() if name == "sigmoid" else nn.Identity())


class ConvEncoder(nn.Module):
    def __init__(self, cfg: DESOMConfig):
        super().__init__()
        layers, ch = [], cfg.input_shape[0]
        for f in cfg.conv_filters:
            layers += [nn.Conv2d(ch, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            ch = f
        self.features = nn.Sequential(*layers)
        step = 2 ** len(cfg.conv_filters)
        self.feature_shape = (ch, cfg.input_shape[1] // step, cfg.input_shape[2] // step)
        n_feat = ch * self.feature_shape[1] * self.feature_shape[2]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n_feat, cfg.dense_units), nn.ReLU(),
                                  nn.Linear(cfg.dense_units, cfg.latent_dim),
                                  _act(cfg.latent_activation))

    def forward(self, x):
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """Mirror of the encoder: dense layers back to the last feature map, then (2x up-sampling,
    3x3 conv) per stage, and a final 3x3 conv to one channel."""

    def __init__(self, cfg: DESOMConfig, feature_shape):
        super().__init__()
        self.feature_shape = tuple(feature_shape)
        n_feat = feature_shape[0] * feature_shape[1] * feature_shape[2]
        self.head = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.dense_units), nn.ReLU(),
                                  nn.Linear(cfg.dense_units, n_feat), nn.ReLU())
        filters = list(cfg.conv_filters[::-1])          # 128, 64, 32
        layers = []
        for i, f in enumerate(filters):
            out = filters[i + 1] if i + 1 < len(filters) else filters[-1]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(f, out, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(filters[-1], cfg.input_shape[0], 3, padding=1),
                   _act(cfg.output_activation)]
        self.features = nn.Sequential(*layers)

    def forward(self, z):
        h = self.head(z).reshape(z.shape[0], *self.feature_shape)
        return self.features(h)


def _dense_stack(dims, last_activation: str) -> nn.Sequential:
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        layers.append(nn.ReLU() if i + 2 < len(dims) else _act(last_activation))
    return nn.Sequential(*layers)


class DESOM(nn.Module):
    """Autoencoder + SOM. forward(x) -> (x_hat, z, squared distances to every prototype)."""

    def __init__(self, cfg: DESOMConfig):
        super().__init__()
        self.config = cfg
        if cfg.kind == "desom1":
            self.encoder = ConvEncoder(cfg)
            self.decoder = ConvDecoder(cfg, self.encoder.feature_shape)
        else:
            dims = [cfg.input_shape[0], *cfg.hidden_dims, cfg.latent_dim]
            self.encoder = _dense_stack(dims, cfg.latent_activation)
            self.decoder = _dense_stack(dims[::-1], cfg.output_activation)
        self.som = SOMLayer(cfg.map_rows, cfg.map_cols, cfg.latent_dim)
        _glorot_init(self)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def map_shape(self) -> tuple[int, int]:
        return self.som.map_shape

    @property
    def n_nodes(self) -> int:
        return self.som.n_nodes

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a batch and give it the model's (N, *input_shape) layout."""
        want = tuple(self.config.input_shape)
        if self.kind == "desom1" and x.dim() == 3 and tuple(x.shape[1:]) == want[1:]:
            x = x.unsqueeze(1)
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{self.kind} expects input of shape (N, {', '.join(map(str, want))})"
                             f"{' or (N, %d, %d)' % want[1:] if self.kind == 'desom1' else ''}, "
                             f"got {tuple(x.shape)}")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.check_input(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor):
        z = self.encode(x)
        return self.decode(z), z, self.som(z)

    def decoded_prototypes(self) -> torch.Tensor:
        """The prototypes passed through the decoder: (K, *input_shape), for the map figure."""
        with torch.no_grad():
            return self.decode(self.som.prototypes)


def _glorot_init(model: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, as the paper's Keras models start."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_desom(cfg: DESOMConfig, seed: int | None = None) -> DESOM:
    """Build a DESOM from its config; weights drawn from a generator seeded with cfg.seed
    (or ``seed``) so the same config always starts from the same weights."""
    cfg = cfg.validate()
    s = cfg.seed if seed is None else seed
    # fork_rng keeps the caller's global torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(s))
        model = DESOM(cfg)
    return model
