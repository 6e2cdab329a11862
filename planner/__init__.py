"""Pure estimation: architecture -> parameters -> memory, FLOPs -> time -> dollars.

    from planner import MethodSpec, Workload, estimate, plan, resolve_model
    arch = resolve_model("llama-3.1-8b")      # catalogue name, Hub id or config.json path
    est = estimate(arch, Workload(seq_len=2048, batch=1), MethodSpec(kind="qlora"), gpu="h100")
    est.peak_gb, est.breakdown, est.fits, est.hours, est.dollars

Nothing here imports torch or transformers; GB means 10^9 bytes.
"""

from planner.arch import LinearShape, ModelArch, arch_from_config
from planner.catalog import list_models, resolve_model, search_models
from planner.errors import InvalidSpecError, ModelConfigError, UnknownModelError
from planner.estimate import (
    GB,
    ApiQuote,
    Estimate,
    Plan,
    PlanRow,
    default_methods,
    estimate,
    max_fit,
    plan,
    training_flops,
)
from planner.memory import TERMS, memory_terms, targeted_shapes, trainable_params
from planner.specs import (
    ATTENTIONS,
    METHODS,
    OPTIMIZERS,
    PRECISIONS,
    SHARDINGS,
    MethodSpec,
    Workload,
)

__all__ = [
    "ModelArch",
    "LinearShape",
    "Workload",
    "MethodSpec",
    "Estimate",
    "Plan",
    "PlanRow",
    "ApiQuote",
    "estimate",
    "plan",
    "max_fit",
    "default_methods",
    "training_flops",
    "memory_terms",
    "trainable_params",
    "targeted_shapes",
    "resolve_model",
    "list_models",
    "search_models",
    "arch_from_config",
    "UnknownModelError",
    "ModelConfigError",
    "InvalidSpecError",
    "TERMS",
    "GB",
    "METHODS",
    "OPTIMIZERS",
    "PRECISIONS",
    "ATTENTIONS",
    "SHARDINGS",
]
