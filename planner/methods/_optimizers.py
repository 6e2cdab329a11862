"""The optimizers a method trains with, built one way for the trial, the step simulator
and the GPU check."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from planner.errors import InvalidSpecError
from planner.specs import OPTIMIZERS

__all__ = ["build_optimizer", "master_weight_adamw"]


def build_optimizer(
    params: list[Any],
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    kernel: Literal["default", "foreach", "fused"] = "default",
) -> Any:
    """The optimizer ``name`` (the planner's ``MethodSpec.optimizer`` names) over ``params``.

    - ``adamw``: torch AdamW; on 16-bit trainable weights the mixed-precision AdamW the
      planner means, with fp32 master weights (:func:`master_weight_adamw`);
    - ``adamw_bf16``: torch AdamW on the weights in their own dtype;
    - ``adamw8bit``, ``paged_adamw8bit``: bitsandbytes' 8-bit blockwise AdamW (the paged
      one needs CUDA: it pages states between GPU and CPU memory);
    - ``adafactor``: transformers' Adafactor at a fixed learning rate;
    - ``sgd``: torch SGD with momentum 0.9.

    ``kernel`` picks torch AdamW's implementation: ``default`` is torch's choice for the
    device (the multi-tensor ``foreach`` on CUDA, a loop on the CPU); ``foreach`` and
    ``fused`` ask for one (a simulated step asks for what CUDA would run).
    """
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            params,
            lr=lr,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=weight_decay,
        )
    if name in ("adamw8bit", "paged_adamw8bit"):
        return _bnb_adamw8bit(params, name, lr=lr, weight_decay=weight_decay)
    if name not in ("adamw", "adamw_bf16"):
        from pricing.errors import did_you_mean

        raise InvalidSpecError(f"unknown optimizer {name!r}", did_you_mean(name, OPTIMIZERS))
    sixteen_bit = any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
    if name == "adamw" and sixteen_bit:
        return master_weight_adamw(params, lr=lr, weight_decay=weight_decay)
    choice: dict[str, Any] = {
        "default": {},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[kernel]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **choice)


def _bnb_adamw8bit(params: list[Any], name: str, *, lr: float, weight_decay: float) -> Any:
    if name == "paged_adamw8bit" and not any(p.device.type == "cuda" for p in params):
        raise InvalidSpecError(
            "paged_adamw8bit pages optimizer state between GPU and CPU memory; it needs a CUDA GPU",
            "Use adamw8bit or adamw on CPU.",
        )
    import bitsandbytes as bnb

    kind = bnb.optim.PagedAdamW8bit if name == "paged_adamw8bit" else bnb.optim.AdamW8bit
    return kind(params, lr=lr, weight_decay=weight_decay)


def master_weight_adamw(params: list[Any], *, lr: float, weight_decay: float = 0.0) -> Any:
    """Mixed-precision AdamW as the planner's ``adamw`` means it (ZeRO section 3.1):
    16-bit weights and gradients, an fp32 master copy and two fp32 moments per weight.

    Each weight's gradient is upcast to fp32 just before its update and freed after it,
    so the step's transient is one weight's fp32 gradient. The step counter lives on the
    weight's device: the fused CUDA kernel reads it from device memory (a CPU counter is
    an illegal access there), so the same class runs real steps on a GPU.
    """
    return _master_weight_adamw_class()(params, lr=lr, weight_decay=weight_decay)


@lru_cache(maxsize=1)
def _master_weight_adamw_class() -> type:
    import torch
    from torch.optim.adamw import adamw

    class MasterWeightAdamW(torch.optim.Optimizer):
        def __init__(self, params: list[Any], *, lr: float, weight_decay: float) -> None:
            super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure: Any = None) -> None:  # type: ignore[override]
            for group in self.param_groups:
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    state = self.state[param]
                    if not state:
                        state["master"] = param.detach().float()
                        state["exp_avg"] = torch.zeros_like(state["master"])
                        state["exp_avg_sq"] = torch.zeros_like(state["master"])
                        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    adamw(
                        [state["master"]],
                        [param.grad.float()],
                        [state["exp_avg"]],
                        [state["exp_avg_sq"]],
                        [],
                        [state["step"]],
                        fused=True,
                        amsgrad=False,
                        beta1=0.9,
                        beta2=0.999,
                        lr=group["lr"],
                        weight_decay=group["weight_decay"],
                        eps=1e-8,
                        maximize=False,
                    )
                    param.copy_(state["master"])

    return MasterWeightAdamW
