"""Where the parts a method touches sit in a transformers model: the decoder layers, the
final norm, the Linear layers LoRA adapts and the weights QLoRA stores in 4 bits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import InvalidSpecError

__all__ = [
    "ATTENTION_MODULES",
    "MLP_MODULES",
    "AdapterTargets",
    "decoder_layers",
    "final_norm",
    "quantized_weights",
    "resolve_targets",
]

# Linear-layer names per group across the common decoder families (Llama/Qwen/Mistral,
# GPT-2, GPT-NeoX, Phi, MPT, Bloom, Falcon). A Linear layer is a projection when its own
# name is in either tuple; which group it belongs to is decided by the block it sits in
# (see ``resolve_targets``), since GPT-2 names both its attention and its MLP output
# projections ``c_proj``.
ATTENTION_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "c_attn",
    "query_key_value",
    "Wqkv",
    "out_proj",
    "dense",
)
MLP_MODULES = (
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "c_fc",
    "c_proj",
    "fc1",
    "fc2",
    "dense_h_to_4h",
    "dense_4h_to_h",
    "w1",
    "w2",
    "w3",
)
_GROUPS = ("attn", "mlp", "all")
# transformers 5 stores each MoE layer's experts as 3-D parameters of one module (gate and
# up fused); peft adapts those through ``target_parameters``.
_EXPERTS = "experts."
_FUSED_GATE_UP = {"gate_proj", "up_proj", "experts.gate_proj", "experts.up_proj"}


@dataclass(frozen=True)
class AdapterTargets:
    """What LoRA/DoRA adapts, as peft is told: Linear modules by name (a module matches a
    name when its path ends with it) and MoE expert parameters by name."""

    modules: tuple[str, ...]
    parameters: tuple[str, ...] = ()


def decoder_layers(model: Any) -> Any:
    """The model's decoder layers: the ``nn.ModuleList`` whose length is the config's
    ``num_hidden_layers`` (the first one met, walking the modules in order), else the
    longest ``nn.ModuleList``.

    The length rule is exact for every transformers causal LM; the fallback serves a
    model whose config names its depth differently. Raises ``InvalidSpecError`` for a
    model without any ``nn.ModuleList``.
    """
    from torch import nn

    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise InvalidSpecError(
            f"cannot find the decoder layers of {type(model).__name__}",
            "Methods that pick layers (freeze, QLoRA) need a transformers decoder model.",
        )
    depth = _num_hidden_layers(model)
    for candidate in lists:
        if len(candidate) == depth:
            return candidate
    return max(lists, key=len)


def _num_hidden_layers(model: Any) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None)


def final_norm(model: Any) -> Any:
    """The last normalisation module outside the decoder layers (``model.norm``, GPT-2's
    ``ln_f``): what the planner's ``freeze`` trains besides the top layers."""
    layers = decoder_layers(model)
    inside = {id(m) for m in layers.modules()}
    norm = None
    for module in model.modules():
        if id(module) in inside:
            continue
        if type(module).__name__.lower().endswith(("rmsnorm", "layernorm")):
            norm = module
    if norm is None:
        raise InvalidSpecError(f"no final norm found in {type(model).__name__}")
    return norm


def quantized_weights(model: Any) -> list[tuple[str, Any]]:
    """The weights QLoRA stores in 4 bits, by the planner's convention: every weight matrix
    of the decoder layers (experts included); MoE routers, norms, embeddings and the head
    stay 16-bit (transformers keeps the output embedding out of bitsandbytes).

    Called on a model with adapters, the caller leaves out the trainable ones."""
    return [
        (name, param)
        for name, param in decoder_layers(model).named_parameters()
        if param.dim() >= 2 and not _is_router(name)
    ]


def _is_router(parameter_name: str) -> bool:
    module = parameter_name.rsplit(".", 2)[-2] if parameter_name.count(".") >= 1 else ""
    return module in ("gate", "router", "shared_expert_gate")


def resolve_targets(model: Any, targets: str | Sequence[str], *, kind: str) -> AdapterTargets:
    """The modules and parameters ``kind`` (lora, qlora, dora) adapts for ``targets``.

    ``targets`` is ``attn``, ``mlp``, ``all``, or module names (a sequence or one
    comma-separated string). A group takes the Linear layers (bitsandbytes 4-bit and
    GPT-2's Conv1D included, the output head excluded) whose name is a known projection
    (``ATTENTION_MODULES`` + ``MLP_MODULES``): those inside an attention block
    (``self_attn``, ``attn``, ``attention``, ``self_attention``) are ``attn``, the rest
    ``mlp``. ``mlp`` and ``all`` also take the MoE experts' 3-D parameters, except for
    DoRA, which peft applies to modules only. A name selects the Linear layers whose path
    ends with it (peft's rule) and, on MoE models, the experts' parameter of that name
    (``gate_proj``/``up_proj`` select the fused ``gate_up_proj``).

    This is the planner's ``targeted_shapes`` read off the model instead of the config
    (``tests/test_methods.py`` holds the two to the same counts). Raises
    ``InvalidSpecError`` for a name the model does not have or a group it has none of.
    """
    linear = _linear_modules(model)
    experts = _expert_parameter_names(model)
    if isinstance(targets, str) and targets in _GROUPS:
        return _group_targets(targets, linear, experts, kind=kind, model=model)
    wanted = (
        [t.strip() for t in targets.split(",") if t.strip()]
        if isinstance(targets, str)
        else list(targets)
    )
    return _named_targets(wanted, linear, experts, kind=kind)


def _group_targets(
    group: str, linear: list[str], experts: list[str], *, kind: str, model: Any
) -> AdapterTargets:
    known = set(ATTENTION_MODULES) | set(MLP_MODULES)
    chosen = [
        path
        for path in linear
        if path.rsplit(".", 1)[-1] in known and group in ("all", _group_of(path))
    ]
    parameters = [] if group == "attn" or kind == "dora" else experts
    if not chosen and not parameters:
        leaves = sorted({path.rsplit(".", 1)[-1] for path in linear})
        raise InvalidSpecError(
            f"no {group!r} linear layers recognised in {type(model).__name__}",
            "Name the modules instead, e.g. --targets " + ",".join(leaves[:4]),
        )
    return AdapterTargets(_shortest_names(chosen, linear), tuple(parameters))


def _named_targets(
    wanted: list[str], linear: list[str], experts: list[str], *, kind: str
) -> AdapterTargets:
    from pricing.errors import did_you_mean

    modules: list[str] = []
    parameters: list[str] = []
    for name in wanted:
        matches = [p for p in linear if p == name or p.endswith("." + name)]
        bare = name.removeprefix(_EXPERTS)
        expert_matches = [
            e
            for e in experts
            if e.removeprefix(_EXPERTS) == bare
            or (name in _FUSED_GATE_UP and e == f"{_EXPERTS}gate_up_proj")
        ]
        if name.startswith(_EXPERTS) and expert_matches and kind == "dora":
            raise InvalidSpecError(
                "method: DoRA cannot adapt the expert parameters of this model",
                "transformers stores each MoE layer's experts as one 3-D parameter, which "
                "peft adapts with LoRA only; use --method lora for experts.",
            )
        if kind == "dora":
            expert_matches = []
        if not matches and not expert_matches:
            known = {p.rsplit(".", 1)[-1] for p in linear} | set(experts)
            raise InvalidSpecError(
                f"the model has no linear module named {name!r}", did_you_mean(name, known)
            )
        if matches:
            modules.append(name)
        parameters += [e for e in expert_matches if e not in parameters]
    return AdapterTargets(tuple(modules), tuple(parameters))


def _group_of(path: str) -> str:
    parents = path.split(".")[:-1]
    attention_blocks = ("attn", "self_attn", "attention", "self_attention")
    return "attn" if any(part in attention_blocks for part in parents) else "mlp"


def _shortest_names(chosen: list[str], linear: list[str]) -> tuple[str, ...]:
    """Each chosen layer by its own name when every layer of that name is chosen, else by
    its block and name (``mlp.c_proj``), so that peft's suffix match takes no other."""
    names: list[str] = []
    picked = set(chosen)
    for path in chosen:
        leaf = path.rsplit(".", 1)[-1]
        same_leaf = [p for p in linear if p.rsplit(".", 1)[-1] == leaf]
        name = leaf if all(p in picked for p in same_leaf) else ".".join(path.split(".")[-2:])
        if name not in names:
            names.append(name)
    return tuple(sorted(names))


def _linear_modules(model: Any) -> list[str]:
    """Paths of the Linear layers a LoRA adapter can wrap, the output head excluded."""
    from torch import nn

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    paths = []
    for path, module in model.named_modules():
        if module is head or path.rsplit(".", 1)[-1] == "lm_head":
            continue
        # bitsandbytes' Linear4bit is an nn.Linear; GPT-2's Conv1D is a Linear by another name.
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            paths.append(path)
    return paths


def _expert_parameter_names(model: Any) -> list[str]:
    names = {
        name.rsplit(".", 1)[-1]
        for name, param in model.named_parameters()
        if ".experts." in name and param.dim() == 3
    }
    return [f"{_EXPERTS}{name}" for name in sorted(names)]
