"""Pure estimation: architecture -> parameters -> memory, FLOPs -> time -> dollars.

    from planner import MethodSpec, Workload, estimate, plan, resolve_model
    arch = resolve_model("llama-3.1-8b")      # catalogue name, Hub id or config.json path
    est = estimate(arch, Workload(seq_len=2048, batch=1), MethodSpec(kind="qlora"), gpu="h100")
    est.peak_gb, est.breakdown, est.fits, est.hours, est.dollars

Nothing here imports torch or transformers; GB means 10^9 bytes.
"""

from planner.errors import InvalidSpecError, ModelConfigError, UnknownModelError
from planner.estimation.arch import LinearShape, ModelArch, arch_from_config
from planner.estimation.catalog import list_models, resolve_model, search_models
from planner.estimation.estimate import (
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
from planner.estimation.memory import (
    TERMS,
    memory_terms,
    state_bytes,
    targeted_shapes,
    trainable_params,
)
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
    "ATTENTIONS",
    "GB",
    "METHODS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SHARDINGS",
    "TERMS",
    "ApiQuote",
    "Estimate",
    "InvalidSpecError",
    "LinearShape",
    "MethodSpec",
    "ModelArch",
    "ModelConfigError",
    "Plan",
    "PlanRow",
    "UnknownModelError",
    "Workload",
    "arch_from_config",
    "default_methods",
    "estimate",
    "list_models",
    "max_fit",
    "memory_terms",
    "state_bytes",
    "plan",
    "resolve_model",
    "search_models",
    "targeted_shapes",
    "trainable_params",
    "training_flops",
]
