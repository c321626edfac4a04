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
    ``max_positions`` is the context the model was trained for (0: not known): the serving
    engine refuses requests that would go past it (``generate``, like transformers', does not).

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
    max_positions: int = 0

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

    def check_length(self, positions: int, name: str = "the request") -> None:
        """``ValueError`` when ``positions`` go past the context the model was trained for.

        Examples
        --------
        >>> from lucid.models import LlamaConfig
        >>> try:
        ...     LlamaConfig(max_positions=8).check_length(10, "prompt and max_new_tokens")
        ... except ValueError as error:
        ...     print(error)
        prompt and max_new_tokens: 10 positions, past the model's context of 8
        """
        if self.max_positions and positions > self.max_positions:
            raise ValueError(f"{name}: {positions} positions, past the model's context of {self.max_positions}")

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
        if self.max_positions:
            raw["max_position_embeddings"] = self.max_positions
        if self.rope_scaling:
            raw["rope_scaling"] = dict(self.rope_scaling, rope_type="llama3")
        if self.layer_types:
            raw["layer_types"] = ["sliding_attention" if t == "sliding" else "full_attention"
                                  for t in self.layer_types]
        return raw

    def weight_shape(self, name: str) -> tuple:
        """The shape transformers gives the tensor ``name`` in a model of this configuration.

        Examples
        --------
        >>> from lucid.models import LlamaConfig
        >>> LlamaConfig().weight_shape("model.layers.1.self_attn.k_proj.weight")
        (32, 64)
        """
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            return (self.vocab_size, h)
        if name == "model.norm.weight":
            return (h,)
        shapes = {"self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                  "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                  "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,),
                  "self_attn.o_proj.bias": (h,), "mlp.gate_proj.weight": (self.intermediate_size, h),
                  "mlp.up_proj.weight": (self.intermediate_size, h), "mlp.down_proj.weight": (h, self.intermediate_size),
                  "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)}
        return shapes[name.split(".", 3)[-1]]

    @classmethod
    def from_json(cls, raw: dict, source: str) -> "LlamaConfig":
        """Parse a Hugging Face ``config.json`` (transformers 4 or 5 spelling); ``ValueError``
        naming ``source`` and the field for anything missing, of the wrong type or out of range.

        Examples
        --------
        >>> from lucid.models import LlamaConfig
        >>> try:
        ...     LlamaConfig.from_json({"architectures": ["LlamaForCausalLM"]}, "config.json")
        ... except ValueError as error:
        ...     print(error)
        config.json: field 'num_attention_heads' is missing (a whole number from 1 to 4096)
        """
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: a config must be a JSON object, got {type(raw).__name__}")

        def number(name, maximum, default=None, integer=True):
            value = raw.get(name, default)
            kind = f"a whole number from 1 to {maximum}" if integer else f"a positive number up to {maximum:g}"
            if value is None:
                raise ValueError(f"{source}: field {name!r} is missing ({kind})")
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                    or not 0 < value <= maximum:
                raise ValueError(f"{source}: field {name!r} must be {kind}, got {value!r}")
            return value

        architectures = raw.get("architectures") or ["?"]
        architecture = architectures[0] if isinstance(architectures, list) else "?"
        if architecture not in ARCHITECTURES:
            raise ValueError(f"{source}: architecture {architecture!r} is not supported; lucid loads "
                             f"{', '.join(ARCHITECTURES)}")
        heads = number("num_attention_heads", 4096)
        layers = number("num_hidden_layers", 4096)
        hidden = number("hidden_size", 1 << 17)
        rope = raw.get("rope_parameters") or {}
        scaling = raw.get("rope_scaling") or rope
        if not isinstance(rope, dict) or not isinstance(scaling, dict):
            raise ValueError(f"{source}: rope_scaling and rope_parameters must be JSON objects, got "
                             f"{raw.get('rope_scaling')!r} and {raw.get('rope_parameters')!r}")
        rope = dict(rope)
        theta = rope.pop("rope_theta", raw.get("rope_theta", 10000.0))
        kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        if kind not in ("default", "llama3"):
            raise ValueError(f"{source}: rope scaling {kind!r} is not supported (default and llama3 are)")
        window = raw.get("sliding_window") or 0
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"{source}: field 'sliding_window' must be a whole number or null, got {window!r}")
        if architecture == "Qwen2ForCausalLM" and not raw.get("use_sliding_window", False):
            window = 0
        types = raw.get("layer_types")
        if types:
            if not isinstance(types, list) or len(types) != layers:
                raise ValueError(f"{source}: field 'layer_types' must list one type per layer ({layers}), got {types!r}")
            layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in types)
        elif architecture == "Qwen2ForCausalLM" and window:
            first = raw.get("max_window_layers", layers)
            layer_types = tuple("sliding" if i >= first else "full" for i in range(layers))
        else:
            layer_types = ("sliding" if window else "full",) * layers
        layer_types = () if set(layer_types) == {"full"} else layer_types  # () means all full
        bias = bool(raw.get("attention_bias", False))
        try:
            return cls(
                architecture=architecture, vocab_size=number("vocab_size", 1 << 22), hidden_size=hidden,
                intermediate_size=number("intermediate_size", 1 << 20), num_layers=layers, num_heads=heads,
                num_kv_heads=number("num_key_value_heads", 4096, heads),
                head_dim=number("head_dim", 4096, hidden // heads),
                rms_norm_eps=number("rms_norm_eps", 1.0, 1e-6, integer=False),
                rope_theta=float(number("rope_theta", 1e12, theta, integer=False)),
                rope_scaling=tuple(sorted((k, v) for k, v in scaling.items() if k != "rope_theta")) if kind == "llama3" else (),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                qkv_bias=architecture == "Qwen2ForCausalLM" or bias, o_bias=bias,
                layer_types=layer_types, sliding_window=window,
                max_positions=number("max_position_embeddings", 1 << 24, 0) if raw.get("max_position_embeddings") else 0,
            )
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
