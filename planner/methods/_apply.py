"""Applying a method to a model: k-bit preparation, checkpointing, then full, freeze or a
peft adapter (LoRA, QLoRA, DoRA)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from planner.errors import InvalidSpecError
from planner.methods._anatomy import decoder_layers, final_norm, quantized_weights, resolve_targets

if TYPE_CHECKING:
    from planner.specs import MethodSpec

__all__ = [
    "MethodSetup",
    "apply_method",
    "enable_checkpointing",
    "nf4_quantization_config",
    "prepare_for_kbit_training",
    "quantize_to_nf4",
]

_KINDS = ("full", "lora", "qlora", "dora", "freeze")


@dataclass(frozen=True)
class MethodSetup:
    """How :func:`apply_method` changes a model (torch-free and hashable).

    ``kind``: full, lora, qlora, dora or freeze. ``rank``, ``alpha``, ``dropout``,
    ``use_rslora`` (scale alpha/sqrt(r), Kalajdzievski 2023) and ``targets`` (see
    ``resolve_targets``) set the adapter. ``freeze_layers``: the top decoder layers that
    train under ``freeze``; ``train_final_norm``: the final norm trains with them (the
    planner's definition). ``prepare_kbit``: QLoRA goes through peft's
    ``prepare_model_for_kbit_training`` (what is not quantized is upcast to fp32), as a
    trial does. ``grad_checkpointing``: non-reentrant activation checkpointing.
    """

    kind: Literal["full", "lora", "qlora", "dora", "freeze"]
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    targets: str | tuple[str, ...] = "all"
    freeze_layers: int = 2
    train_final_norm: bool = False
    prepare_kbit: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            from pricing.errors import did_you_mean

            raise InvalidSpecError(
                f"method: unknown kind {self.kind!r}", did_you_mean(str(self.kind), _KINDS)
            )
        if isinstance(self.targets, list):
            object.__setattr__(self, "targets", tuple(self.targets))

    @classmethod
    def from_spec(
        cls, method: MethodSpec, *, recipe: Literal["planner", "trial"] = "planner", **changes: Any
    ) -> MethodSetup:
        """The setup of the planner's ``method``, run the planner's way (``freeze`` also
        trains the final norm, QLoRA's unquantized weights stay 16-bit) or the way
        ``sweeps.trial.recipe`` runs it (the top layers only; QLoRA through
        ``prepare_model_for_kbit_training``). ``changes`` set fields the planner does not
        model (``use_rslora``)."""
        trial = recipe == "trial"
        setup = cls(
            kind=method.kind,
            rank=method.rank,
            alpha=float(method.alpha),
            dropout=float(method.lora_dropout),
            targets=method.targets,
            freeze_layers=method.freeze_layers,
            train_final_norm=not trial,
            prepare_kbit=trial and method.kind == "qlora",
            grad_checkpointing=method.grad_checkpointing,
        )
        return replace(setup, **changes)


def apply_method(model: Any, setup: MethodSetup) -> Any:
    """Make exactly the parameters ``setup.kind`` trains trainable; return the model to
    train (a peft model for the adapter methods, ``model`` itself otherwise).

    In peft's order for QLoRA: k-bit preparation, checkpointing, then the method. Bad
    targets or too many freeze layers raise ``InvalidSpecError`` before the model changes.
    """
    targets = None
    if setup.kind in ("lora", "qlora", "dora"):
        targets = resolve_targets(model, setup.targets, kind=setup.kind)
    if setup.kind == "freeze":
        available = len(decoder_layers(model))
        if setup.freeze_layers > available:
            raise InvalidSpecError(
                f"method 'freeze': {setup.freeze_layers} trainable layers asked for, but the "
                f"model has {available}",
                f"Use at most {available}.",
            )
    if setup.kind == "qlora" and setup.prepare_kbit:
        prepare_for_kbit_training(model)
    if setup.grad_checkpointing:
        enable_checkpointing(model)
    if setup.kind == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if setup.kind == "freeze":
        _freeze_all_but_top(model, setup)
        return model
    from peft import LoraConfig, get_peft_model

    assert targets is not None
    config = LoraConfig(
        r=setup.rank,
        lora_alpha=setup.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales too
        lora_dropout=setup.dropout,
        use_rslora=setup.use_rslora,
        use_dora=setup.kind == "dora",
        # An empty list (not None) when only expert parameters are adapted: None would
        # make peft pick its default modules for the architecture.
        target_modules=list(targets.modules),
        target_parameters=list(targets.parameters) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _freeze_all_but_top(model: Any, setup: MethodSetup) -> None:
    layers = decoder_layers(model)
    for param in model.parameters():
        param.requires_grad_(False)
    trained = list(layers[len(layers) - setup.freeze_layers :])
    if setup.train_final_norm:
        trained.append(final_norm(model))
    for module in trained:
        for param in module.parameters():
            param.requires_grad_(True)


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing of every decoder layer, on a transformers
    model, with either API: transformers 5's ``activation_checkpointing_enable`` or the
    ``gradient_checkpointing_enable`` of earlier releases.

    The input embeddings' output is made to require grad (transformers 5 does this itself),
    so the checkpointed layers run their backward even when no weight below them trains:
    a frozen bottom is recomputed, not skipped.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()


def prepare_for_kbit_training(model: Any) -> Any:
    """peft's ``prepare_model_for_kbit_training`` without its checkpointing (which
    :func:`enable_checkpointing` switches, the one way for every method): every parameter
    frozen, and every 16-bit one that bitsandbytes did not quantize (embeddings, norms,
    head, routers) upcast to fp32.

    A model that is not quantized (the step simulator's 16-bit stand-in of a 4-bit
    model) keeps its ``quantized_weights`` in their dtype, as bitsandbytes' 4-bit weights
    stay 4-bit."""
    from peft import prepare_model_for_kbit_training

    stand_ins = []
    if not any(type(p).__name__ == "Params4bit" for p in model.parameters()):
        stand_ins = [(param, param.dtype) for _, param in quantized_weights(model)]
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for param, dtype in stand_ins:
        param.data = param.data.to(dtype)
    return model


# NF4 with double quantization, as in the QLoRA paper (Dettmers et al. 2023, section 3).
_NF4: dict[str, Any] = {"quant_type": "nf4", "double_quant": True}


def nf4_quantization_config(compute_dtype: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for loading a model in 4 bits for QLoRA."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=_NF4["quant_type"],
        bnb_4bit_use_double_quant=_NF4["double_quant"],
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quantize_to_nf4(model: Any, compute_dtype: Any) -> None:
    """Every Linear of the decoder layers of a model built from its config to bitsandbytes
    NF4, as :func:`nf4_quantization_config` does when loading (embeddings and head stay
    16-bit). The weights are quantized when the model is next moved to a device; the
    model is marked 4-bit as transformers marks it, so peft wraps bitsandbytes' layer."""
    import bitsandbytes as bnb
    from torch import nn

    for layer in decoder_layers(model):
        for name, module in list(layer.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            quantized = bnb.nn.Linear4bit(
                module.in_features,
                module.out_features,
                bias=module.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=_NF4["double_quant"],
                quant_type=_NF4["quant_type"],
                device="meta",
            )  # its own placeholder weight is replaced just below
            quantized.weight = bnb.nn.Params4bit(
                module.weight.data,
                requires_grad=False,
                compress_statistics=_NF4["double_quant"],
                quant_type=_NF4["quant_type"],
                module=quantized,
            )
            if module.bias is not None:
                quantized.bias = nn.Parameter(module.bias.data, requires_grad=False)
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, quantized)
    model.is_loaded_in_4bit = True
