"""Model architectures and their exact parameter counts.

A :class:`ModelArch` is built from a ``config.json``-style dict (the built-in catalogue
ships those, a local checkpoint has one, the Hub serves one). Parameter counts are derived
from the shapes the transformers implementation of each family creates, and a test builds
every catalogue entry on the meta device to check they agree exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from planner.errors import ModelConfigError

__all__ = ["SUPPORTED_MODEL_TYPES", "LinearShape", "ModelArch", "arch_from_config"]

# Families whose module layout the counter knows. Each maps config keys onto the same
# decoder-block vocabulary (attention q/k/v/o, MLP gate/up/down or fc/proj, norms).
SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "mixtral",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "phi3",
    "gpt2",
    "bloom",
)


@dataclass(frozen=True, slots=True)
class LinearShape:
    """One kind of Linear layer inside a decoder block (what LoRA can target).

    ``count`` is how many exist per layer that has it (``experts`` for expert MLPs);
    ``layers`` is how many decoder layers have it (MoE models may mix dense and sparse).
    """

    name: str  # the transformers module name (q_proj, down_proj, c_attn, ...)
    group: Literal["attn", "mlp"]
    d_in: int
    d_out: int
    bias: bool
    count: int
    layers: int
    active_count: int  # copies used per token (experts_per_token for experts)

    @property
    def params(self) -> int:
        return (
            (self.d_in * self.d_out + (self.d_out if self.bias else 0)) * self.count * self.layers
        )


@dataclass(frozen=True)
class ModelArch:
    """A decoder-only transformer, as its config describes it.

    Build one with :func:`planner.resolve_model` (catalogue name, Hub id or local
    config) or :func:`arch_from_config`. All sizes are element counts; every derived
    count (``total_params``, ``active_params``, ...) matches transformers exactly for
    the families in ``SUPPORTED_MODEL_TYPES``.
    """

    name: str
    model_type: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied_embeddings: bool
    qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True
    layer_norm: bool = False  # LayerNorm (weight + bias) instead of RMSNorm (weight only)
    norms_per_layer: int = 2
    qk_norm: bool = False
    fused_qkv: bool = False  # phi3 qkv_proj / gpt2 c_attn: one Linear for q, k and v
    fused_gate_up: bool = False  # phi3 gate_up_proj
    learned_positions: int = 0  # gpt2 wpe rows
    embedding_norm: bool = False  # bloom's LayerNorm right after the token embedding
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_expert_intermediate: int = 0
    moe_layers: int = 0
    max_position: int = 0
    attention_dropout: float = 0.0  # on the attention probabilities (gpt2 attn_pdrop)
    residual_dropout: float = 0.0  # on each block's output (gpt2 / phi3 resid_pdrop)
    activation: str = "silu"  # hidden_act / activation_function
    attention_softcap: float | None = None  # gemma2 attn_logit_softcapping
    final_softcap: float | None = None  # gemma2 final_logit_softcapping
    hf_id: str | None = None
    family: str = ""
    aliases: tuple[str, ...] = ()
    hf_config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab", "hidden", "layers", "heads", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelConfigError(
                    f"model {self.name!r}: `{name}` must be a positive integer, got {value!r}",
                    "Check the config.json of the model.",
                )
        if self.heads % self.kv_heads:
            raise ModelConfigError(
                f"model {self.name!r}: num_attention_heads ({self.heads}) is not a multiple of "
                f"num_key_value_heads ({self.kv_heads})",
                "Check the config.json of the model.",
            )
        if self.experts and not 0 < self.experts_per_token <= self.experts:
            raise ModelConfigError(
                f"model {self.name!r}: num_experts_per_tok must be between 1 and "
                f"{self.experts}, got {self.experts_per_token}",
                "Check the config.json of the model.",
            )

    # -- shapes -------------------------------------------------------------------------

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> tuple[LinearShape, ...]:
        """Every Linear in the decoder blocks (see ``_linear_shapes``); computed once."""
        return self._linear_shapes

    @cached_property
    def _linear_shapes(self) -> tuple[LinearShape, ...]:
        """Every Linear in the decoder blocks, as transformers names them.

        Fused projections (phi3 ``qkv_proj``/``gate_up_proj``, gpt2 ``c_attn``) are one
        module, as LoRA sees them. Expert MLPs are listed per expert; MoE routers are not
        listed (adapters do not target them), but their parameters are counted.
        """
        h, L = self.hidden, self.layers
        qkv, mb = self.qkv_bias, self.mlp_bias
        shapes: list[LinearShape] = []

        def add(
            name: str,
            group: Literal["attn", "mlp"],
            d_in: int,
            d_out: int,
            bias: bool,
            count: int = 1,
            layers: int = L,
            active: int | None = None,
        ) -> None:
            if layers > 0 and count > 0:
                shapes.append(
                    LinearShape(
                        name,
                        group,
                        d_in,
                        d_out,
                        bias,
                        count,
                        layers,
                        count if active is None else active,
                    )
                )

        if self.model_type == "gpt2":
            add("c_attn", "attn", h, 3 * h, True)
            add("c_proj", "attn", h, h, True)
            add("c_fc", "mlp", h, self.intermediate, True)
            add("mlp.c_proj", "mlp", self.intermediate, h, True)
            return tuple(shapes)
        if self.model_type == "bloom":
            add("query_key_value", "attn", h, 3 * h, True)
            add("dense", "attn", h, h, True)
            add("dense_h_to_4h", "mlp", h, self.intermediate, True)
            add("dense_4h_to_h", "mlp", self.intermediate, h, True)
            return tuple(shapes)
        if self.fused_qkv:
            add("qkv_proj", "attn", h, self.q_dim + 2 * self.kv_dim, qkv)
        else:
            add("q_proj", "attn", h, self.q_dim, qkv)
            add("k_proj", "attn", h, self.kv_dim, qkv)
            add("v_proj", "attn", h, self.kv_dim, qkv)
        add("o_proj", "attn", self.q_dim, h, self.attn_out_bias)
        i = self.intermediate
        if self.fused_gate_up:
            add("gate_up_proj", "mlp", h, 2 * i, mb, layers=self.dense_layers)
        else:
            if self.gated_mlp:
                add("gate_proj", "mlp", h, i, mb, layers=self.dense_layers)
            add("up_proj", "mlp", h, i, mb, layers=self.dense_layers)
        add("down_proj", "mlp", i, h, mb, layers=self.dense_layers)
        if self.is_moe:
            # transformers 5 stores each MoE layer's experts as two 3-D parameters, gate and
            # up fused: [experts, 2·mi, h] and [experts, h, mi].
            e, k, mi = self.experts, self.experts_per_token, self.moe_intermediate
            add("experts.gate_up_proj", "mlp", h, 2 * mi, False, e, self.moe_layers, k)
            add("experts.down_proj", "mlp", mi, h, False, e, self.moe_layers, k)
            si = self.shared_expert_intermediate
            if si:
                add("shared_expert.gate_proj", "mlp", h, si, False, layers=self.moe_layers)
                add("shared_expert.up_proj", "mlp", h, si, False, layers=self.moe_layers)
                add("shared_expert.down_proj", "mlp", si, h, False, layers=self.moe_layers)
        return tuple(shapes)

    # -- parameter counts -----------------------------------------------------------------

    @property
    def norm_params(self) -> int:
        """All normalisation weights (and biases for LayerNorm), incl. the final norm and
        per-head q/k norms."""
        per_norm = self.hidden * (2 if self.layer_norm else 1)
        qk = 2 * self.head_dim if self.qk_norm else 0
        return self.layers * (self.norms_per_layer * per_norm + qk) + per_norm

    @property
    def router_params(self) -> int:
        """MoE router (gate Linear, no bias) and the shared-expert gate (qwen2_moe)."""
        if not self.is_moe:
            return 0
        shared_gate = self.hidden if self.shared_expert_intermediate else 0
        return self.moe_layers * (self.hidden * self.experts + shared_gate)

    @property
    def embedding_params(self) -> int:
        """Input token embeddings plus learned position embeddings (gpt2) and the
        embedding LayerNorm (bloom)."""
        norm = 2 * self.hidden if self.embedding_norm else 0
        return self.vocab * self.hidden + self.learned_positions * self.hidden + norm

    @property
    def lm_head_params(self) -> int:
        """Output projection parameters that are not shared with the input embedding."""
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @cached_property
    def linear_params(self) -> int:
        """Parameters of all decoder-block Linear layers (what QLoRA quantizes)."""
        return sum(s.params for s in self.linear_shapes()) + self.router_params

    @cached_property
    def total_params(self) -> int:
        """Unique parameters (tied weights counted once), as ``model.parameters()`` sums."""
        return self.embedding_params + self.lm_head_params + self.linear_params + self.norm_params

    @cached_property
    def active_params(self) -> int:
        """Parameters used for one token: all but the experts a token is not routed to.

        Embeddings are included, the convention of the Mixtral and Qwen MoE model cards.
        """
        idle = 0
        for s in self.linear_shapes():
            if s.count != s.active_count:
                idle += (s.count - s.active_count) * (s.params // s.count)
        return self.total_params - idle

    @cached_property
    def layer_params(self) -> int:
        """Parameters of one average decoder layer (norms included)."""
        return (
            self.linear_params + self.norm_params - self.hidden * (2 if self.layer_norm else 1)
        ) // self.layers

    @cached_property
    def compute_params(self) -> int:
        """Parameters that take part in matmuls per token (active, minus the embedding
        lookup, plus the lm_head matmul when it is tied): the N of 6·N·T."""
        return self.active_params - self.embedding_params + self.vocab * self.hidden

    @property
    def billions(self) -> float:
        return self.total_params / 1e9

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hf_id": self.hf_id,
            "family": self.family,
            "model_type": self.model_type,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "layers": self.layers,
            "hidden": self.hidden,
            "vocab": self.vocab,
        }


# -- building from a config dict ---------------------------------------------------------


def _field(
    cfg: Mapping[str, Any],
    name: str,
    key: str | tuple[str, ...],
    default: Any = ...,
    kind: type = int,
) -> Any:
    keys = (key,) if isinstance(key, str) else key
    for k in keys:
        if k in cfg and cfg[k] is not None:
            value = cfg[k]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ModelConfigError(
                    f"config of {name!r}: field `{k}` must be an integer, got {value!r}",
                    "Fix the config.json, or use a catalogue model (`paretune models`).",
                )
            if kind is bool and not isinstance(value, bool):
                raise ModelConfigError(
                    f"config of {name!r}: field `{k}` must be true or false, got {value!r}",
                    "Fix the config.json, or use a catalogue model (`paretune models`).",
                )
            return value
    if default is ...:
        raise ModelConfigError(
            f"config of {name!r} has no field `{keys[0]}`",
            "A decoder config.json needs vocab_size, hidden_size, num_hidden_layers, "
            "num_attention_heads and intermediate_size (or the gpt2 equivalents).",
        )
    return default


def arch_from_config(  # noqa: C901 - one branch per config dialect
    config: Mapping[str, Any],
    *,
    name: str,
    hf_id: str | None = None,
    family: str = "",
    aliases: tuple[str, ...] = (),
) -> ModelArch:
    """A :class:`ModelArch` from a ``config.json`` dict.

    Raises :class:`ModelConfigError` naming the bad field.
    """
    if not isinstance(config, Mapping):
        raise ModelConfigError(f"config of {name!r} is not a JSON object", None)
    model_type = config.get("model_type")
    if model_type is None:
        raise ModelConfigError(
            f"config of {name!r} has no field `model_type`",
            'Every transformers config.json names its model_type (e.g. "llama").',
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelConfigError(
            f"config of {name!r}: model_type {model_type!r} is not supported",
            "Supported: " + ", ".join(SUPPORTED_MODEL_TYPES) + ".",
        )
    hf_config = dict(config)
    if model_type == "gemma3":
        # Multimodal Gemma 3: plan the text tower, the part a text fine-tune trains.
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise ModelConfigError(f"config of {name!r}: gemma3 config has no `text_config`", None)
        hf_config = {
            "model_type": "gemma3_text",
            **{k: v for k, v in text.items() if k != "model_type"},
        }
        if "tie_word_embeddings" in config and "tie_word_embeddings" not in text:
            hf_config["tie_word_embeddings"] = config["tie_word_embeddings"]
        config, model_type = hf_config, "gemma3_text"

    def f(key: str | tuple[str, ...], default: Any = ..., kind: type = int) -> Any:
        return _field(config, name, key, default, kind)

    common: dict[str, Any] = dict(
        name=name,
        model_type=model_type,
        hf_id=hf_id,
        family=family,
        aliases=tuple(aliases),
        hf_config=hf_config,
    )

    def rate(*keys: str, default: float = 0.0) -> float:
        for key in keys:
            value = config.get(key)
            if value is not None:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not 0 <= value < 1
                ):
                    raise ModelConfigError(
                        f"config of {name!r}: field `{key}` must be a dropout rate in [0, 1), "
                        f"got {value!r}",
                        "Fix the config.json.",
                    )
                return float(value)
        return default

    def gpt_style(h: int, heads: int, intermediate: int, **extra: Any) -> ModelArch:
        # GPT-2 and BLOOM: fused biased QKV, LayerNorm, a plain (ungated) 4h MLP, MHA.
        return ModelArch(
            vocab=f("vocab_size"),
            hidden=h,
            intermediate=intermediate,
            layers=f(("n_layer", "num_hidden_layers")),
            heads=heads,
            kv_heads=heads,
            head_dim=h // heads,
            tied_embeddings=f("tie_word_embeddings", True, bool),
            qkv_bias=True,
            attn_out_bias=True,
            mlp_bias=True,
            gated_mlp=False,
            layer_norm=True,
            fused_qkv=True,
            **extra,
            **common,
        )

    if model_type == "gpt2":
        common.update(
            attention_dropout=rate("attn_pdrop", default=0.1),
            residual_dropout=rate("resid_pdrop", default=0.1),
            activation=str(config.get("activation_function") or "gelu_new"),
        )
        h = f(("n_embd", "hidden_size"))
        heads = f(("n_head", "num_attention_heads"))
        inner = config.get("n_inner")
        positions = f(("n_positions", "max_position_embeddings"))
        return gpt_style(
            h, heads, inner if inner else 4 * h, learned_positions=positions, max_position=positions
        )
    if model_type == "bloom":
        h = f(("hidden_size", "n_embed"))
        heads = f(("n_head", "num_attention_heads"))
        common.update(
            attention_dropout=rate("attention_dropout"),
            residual_dropout=rate("hidden_dropout"),
            activation="bloom_gelu",
        )
        return gpt_style(h, heads, 4 * h, embedding_norm=True, max_position=0)

    common.update(
        attention_dropout=rate("attention_dropout"),
        residual_dropout=rate("resid_pdrop"),
        activation=str(config.get("hidden_act") or config.get("hidden_activation") or "silu"),
    )
    h = f("hidden_size")
    heads = f("num_attention_heads")
    kv_heads = f("num_key_value_heads", heads)
    head_dim = f("head_dim", None) or (h // heads if h % heads == 0 else None)
    if head_dim is None:
        raise ModelConfigError(
            f"config of {name!r}: hidden_size {h} is not divisible by num_attention_heads "
            f"{heads} and there is no `head_dim`",
            "Add head_dim to the config.",
        )
    layers = f("num_hidden_layers")
    kw: dict[str, Any] = dict(
        vocab=f("vocab_size"),
        hidden=h,
        intermediate=f("intermediate_size"),
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        max_position=f("max_position_embeddings", 0),
    )
    # Default tying follows each config class's default (PretrainedConfig: True; llama,
    # mistral, mixtral, qwen*, phi3: False; gemma: True).
    tie_default = model_type in ("gemma2", "gemma3_text")
    kw["tied_embeddings"] = f("tie_word_embeddings", tie_default, bool)
    attention_bias = f("attention_bias", False, bool)
    if model_type in ("qwen2", "qwen2_moe"):
        kw["qkv_bias"] = f("qkv_bias", True, bool)
    else:
        kw["qkv_bias"] = attention_bias
        kw["attn_out_bias"] = attention_bias
    if model_type == "llama":
        kw["mlp_bias"] = f("mlp_bias", False, bool)
    if model_type in ("qwen3", "qwen3_moe", "gemma3_text"):
        kw["qk_norm"] = True
    if model_type in ("gemma2", "gemma3_text"):
        kw["norms_per_layer"] = 4
        # Config-class defaults: gemma2 soft-caps attention scores (50) and logits (30).
        defaults = (50.0, 30.0) if model_type == "gemma2" else (None, None)
        for field_name, key, default in (
            ("attention_softcap", "attn_logit_softcapping", defaults[0]),
            ("final_softcap", "final_logit_softcapping", defaults[1]),
        ):
            kw[field_name] = config.get(key, default)
    if model_type == "phi3":
        kw["fused_qkv"] = True
        kw["fused_gate_up"] = True
    if model_type == "mixtral":
        kw.update(
            experts=f("num_local_experts"),
            experts_per_token=f("num_experts_per_tok"),
            moe_intermediate=kw["intermediate"],
            moe_layers=layers,
        )
    if model_type in ("qwen2_moe", "qwen3_moe"):
        experts = f("num_experts")
        step = f("decoder_sparse_step", 1)
        dense_only = set(config.get("mlp_only_layers") or [])
        moe_layers = sum(
            1
            for i in range(layers)
            if i not in dense_only and experts > 0 and step > 0 and (i + 1) % step == 0
        )
        kw.update(
            experts=experts,
            experts_per_token=f("num_experts_per_tok"),
            moe_intermediate=f("moe_intermediate_size"),
            moe_layers=moe_layers,
        )
        if model_type == "qwen2_moe":
            kw["shared_expert_intermediate"] = f("shared_expert_intermediate_size")
    return ModelArch(**kw, **common)
