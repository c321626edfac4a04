"""``LlamaConfig``: the shape of a Llama-family model, read from ``config.json`` or GGUF metadata."""
from __future__ import annotations

import dataclasses

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """What the forward pass needs from a checkpoint's ``config.json``.

    The defaults describe a tiny Llama (two layers, hidden size 64, a vocabulary of 256) for
    :meth:`LlamaModel.random`, the demo and the tests. ``layer_types`` gives each layer's
    attention, ``"full"`` or ``"sliding"`` (a query sees the ``sliding_window`` positions
    ending at its own, plus the first ``sink_tokens``); empty means every layer is full.

    Examples
    --------
    >>> from lucid.models import LlamaConfig
    >>> c = LlamaConfig(num_layers=4, layer_types=("sliding", "full") * 2, sliding_window=8)
    >>> c.layer_type(0), c.layer_type(1), c.head_dim
    ('sliding', 'full', 16)
    """

    architecture: str = "LlamaForCausalLM"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple = ()  # sorted (key, value) pairs of a llama3 scaling, or ()
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    layer_types: tuple = ()
    sliding_window: int = 0
    sink_tokens: int = 0

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.layer_types and (len(self.layer_types) != self.num_layers
                                 or set(self.layer_types) - {"full", "sliding"}):
            raise ValueError(f"layer_types must name 'full' or 'sliding' for each of the {self.num_layers} "
                             f"layers, got {self.layer_types!r}")
        if "sliding" in self.layer_types and self.sliding_window < 1:
            raise ValueError(f"sliding layers need a sliding_window >= 1, got {self.sliding_window}")

    def layer_type(self, layer_idx: int) -> str:
        """``"full"`` or ``"sliding"``."""
        return self.layer_types[layer_idx] if self.layer_types else "full"

    def to_json(self) -> dict:
        """The ``config.json`` transformers would write for this model (sinks have no spelling there).

        Examples
        --------
        >>> from lucid.models import LlamaConfig
        >>> LlamaConfig.from_json(LlamaConfig().to_json(), "config.json") == LlamaConfig()
        True
        """
        raw = {"architectures": [self.architecture], "vocab_size": self.vocab_size,
               "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
               "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
               "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
               "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
               "tie_word_embeddings": self.tie_word_embeddings, "attention_bias": self.o_bias,
               "sliding_window": self.sliding_window or None}
        if self.rope_scaling:
            raw["rope_scaling"] = dict(self.rope_scaling, rope_type="llama3")
        if self.layer_types:
            raw["layer_types"] = ["sliding_attention" if t == "sliding" else "full_attention"
                                  for t in self.layer_types]
        return raw

    @classmethod
    def from_json(cls, raw: dict, source: str) -> "LlamaConfig":
        """Parse a Hugging Face ``config.json`` (transformers 4 or 5 spelling)."""
        architecture = (raw.get("architectures") or ["?"])[0]
        if architecture not in ARCHITECTURES:
            raise ValueError(f"{source}: architecture {architecture!r} is not supported; lucid loads "
                             f"{', '.join(ARCHITECTURES)}")
        heads = raw["num_attention_heads"]
        rope = dict(raw.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", raw.get("rope_theta", 10000.0))
        scaling = raw.get("rope_scaling") or rope
        kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        if kind not in ("default", "llama3"):
            raise ValueError(f"{source}: rope scaling {kind!r} is not supported (default and llama3 are)")
        layers = raw["num_hidden_layers"]
        window = raw.get("sliding_window") or 0
        if architecture == "Qwen2ForCausalLM" and not raw.get("use_sliding_window", False):
            window = 0
        types = raw.get("layer_types")
        if types:
            layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in types)
        elif architecture == "Qwen2ForCausalLM" and window:
            first = raw.get("max_window_layers", layers)
            layer_types = tuple("sliding" if i >= first else "full" for i in range(layers))
        else:
            layer_types = ("sliding" if window else "full",) * layers
        layer_types = () if set(layer_types) == {"full"} else layer_types  # () means all full
        bias = bool(raw.get("attention_bias", False))
        return cls(
            architecture=architecture, vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"], num_layers=layers, num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads, rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=tuple(sorted((k, v) for k, v in scaling.items() if k != "rope_theta")) if kind == "llama3" else (),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=architecture == "Qwen2ForCausalLM" or bias, o_bias=bias,
            layer_types=layer_types, sliding_window=int(window),
        )
