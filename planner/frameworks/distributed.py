"""How a run config shards its training over GPUs: the DeepSpeed JSON it names, or its FSDP
settings, in the planner's terms (``sharding``, the ZeRO buckets, ZeRO-Offload).

    fields, unread = deepspeed_fields("ds_z2_config.json", config=Path("lf.yaml"))
    fields == {"sharding": "zero2", "zero_reduce_bucket_size": 500000000, ...}

Every setting that changes the peak is read or listed in ``unread`` (dotted keys prefixed
by the config's own key, ``deepspeed:zero_optimization.offload_param.device``), never
dropped silently. A value ``"auto"`` is transformers' placeholder for the trainer's own
setting, which the config's other keys give, so it is not listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from planner.errors import ConfigFileError

__all__ = ["deepspeed_fields", "fsdp_fields", "torchtune_fsdp_fields"]

# zero_optimization.stage -> MethodSpec.sharding (DeepSpeed docs, "ZeRO Optimizations":
# stage 1 partitions the optimizer states, 2 also the gradients, 3 also the parameters).
_STAGES = {0: "none", 1: "zero1", 2: "zero2", 3: "zero3"}

# Keys that change neither the peak nor the time the planner predicts: loss scaling,
# logging, the save format. ``allgather_bucket_size`` allocates nothing (the updated
# partitions are gathered into the flat 16-bit groups in place: deepspeed/runtime/utils.py,
# all_gather_dp_groups); ``reduce_scatter``, ``round_robin_gradients`` and
# ``allgather_partitions`` choose the collective, not the buffers.
_NO_EFFECT = {
    "wall_clock_breakdown",
    "steps_per_print",
    "zero_allow_untested_optimizer",
    "gradient_clipping",
    "comms_config",
    "monitor_config",
    "tensorboard",
    "csv_monitor",
    "wandb",
    "fp16.loss_scale",
    "fp16.loss_scale_window",
    "fp16.initial_scale_power",
    "fp16.hysteresis",
    "fp16.min_loss_scale",
    "fp16.auto_cast",
    "zero_optimization.allgather_partitions",
    "zero_optimization.allgather_bucket_size",
    "zero_optimization.reduce_scatter",
    "zero_optimization.round_robin_gradients",
    "zero_optimization.stage3_gather_16bit_weights_on_model_save",
    "zero_optimization.offload_optimizer.pin_memory",
    "zero_optimization.offload_optimizer.nvme_path",
    "zero_optimization.offload_optimizer.buffer_count",
    "zero_optimization.offload_optimizer.fast_init",
    "zero_optimization.offload_optimizer.ratio",
}


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], value)]


def _unread(data: dict[str, Any], read: set[str], key: str) -> tuple[str, ...]:
    """The leaves of ``data`` that no rule read, have an effect and are not ``"auto"``."""

    def covered(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[: i + 1]) in read | _NO_EFFECT for i in range(len(parts)))

    return tuple(
        f"{key}:{name}" for name, value in _leaves(data) if value != "auto" and not covered(name)
    )


def _load_deepspeed(value: Any, config: Path, key: str) -> dict[str, Any]:
    """The DeepSpeed config ``value`` names: a mapping given inline, or a JSON file found
    beside ``config`` or in the working directory (where the framework's launcher runs)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigFileError(
            f"{config}: `{key}` must be the path of a DeepSpeed JSON config, got {value!r}",
            f"Fix `{key}` in the file, or leave it out for a run without DeepSpeed.",
        )
    named = Path(value).expanduser()
    places = [named] if named.is_absolute() else [config.parent / named, Path.cwd() / named]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        looked = " and ".join(str(p) for p in dict.fromkeys(places))
        raise ConfigFileError(
            f"{config}: `{key}` names {value!r}, which is not a file (looked at {looked}); "
            "the planner reads its ZeRO stage, reduce_bucket_size, overlap_comm and "
            "offload_optimizer, which change the peak",
            "Put the DeepSpeed JSON there (Axolotl: `axolotl fetch deepspeed_configs`), or "
            "remove the key and give --sharding, --zero-bucket-size, --zero-overlap-comm "
            "and --optimizer-offload.",
        )
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(
            f"{found}: cannot read the DeepSpeed config `{key}` names ({error})",
            "Give a readable DeepSpeed JSON file.",
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigFileError(
            f"{found} (the DeepSpeed config `{key}` names): not valid JSON at line "
            f"{error.lineno}, column {error.colno}: {error.msg}",
            "Fix the JSON syntax there.",
        ) from None
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{found} (the DeepSpeed config `{key}` names): a mapping of keys to values is "
            f"expected, got {type(data).__name__}",
            "Give a DeepSpeed JSON object.",
        )
    return data


def deepspeed_fields(
    value: Any, *, config: Path, key: str = "deepspeed"
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """MethodSpec fields for the DeepSpeed config ``value`` (a path or a mapping) named by
    ``key`` of ``config``, and the keys of it the planner does not model.

    ``zero_optimization.stage`` gives ``sharding``; ``reduce_bucket_size`` and
    ``overlap_comm`` the ZeRO-1/2 reduction buckets (``"auto"`` is kept: transformers fills
    it with hidden_size squared, which needs the model); ``offload_optimizer.device``
    ``cpu`` or ``nvme`` sets ``optimizer_offload``. A key left out takes DeepSpeed's own
    default (deepspeed/runtime/zero/config.py: stage 0, reduce_bucket_size 5e8,
    overlap_comm false below stage 3), not the planner's. ``bf16.enabled`` /
    ``fp16.enabled`` set true give the precision; either enabled (or ``"auto"``) puts
    LoRA adapters in the 16-bit dtype, as the engine casts the module."""
    data = _load_deepspeed(value, config, key)
    where = f"{config}: `{key}`"
    zero = data.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigFileError(
            f"{where}: `zero_optimization` must be a mapping, got {zero!r}",
            "Fix the DeepSpeed config's zero_optimization section.",
        )
    read = {"zero_optimization.stage", "bf16.enabled", "fp16.enabled"}
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in _STAGES:
        raise ConfigFileError(
            f"{where}: `zero_optimization.stage` must be 0, 1, 2 or 3, got {stage!r}",
            "Fix the stage in the DeepSpeed config.",
        )
    fields: dict[str, Any] = {"sharding": _STAGES[stage]}
    if stage in (1, 2):
        read |= {"zero_optimization.reduce_bucket_size", "zero_optimization.overlap_comm"}
        bucket = zero.get("reduce_bucket_size", 500_000_000)
        if bucket != "auto":
            if isinstance(bucket, bool) or not isinstance(bucket, int | float) or bucket < 0:
                raise ConfigFileError(
                    f"{where}: `zero_optimization.reduce_bucket_size` must be a number of "
                    f'elements or "auto", got {bucket!r}',
                    "Fix reduce_bucket_size in the DeepSpeed config.",
                )
            bucket = int(bucket)
        overlap = zero.get("overlap_comm", False)
        if not isinstance(overlap, bool):
            raise ConfigFileError(
                f"{where}: `zero_optimization.overlap_comm` must be true or false, got {overlap!r}",
                "Fix overlap_comm in the DeepSpeed config.",
            )
        if zero.get("contiguous_gradients", True) is not False:
            read.add("zero_optimization.contiguous_gradients")
        fields["zero_reduce_bucket_size"] = bucket
        fields["zero_overlap_comm"] = overlap
    offload = zero.get("offload_optimizer")
    if offload is not None:
        device = offload.get("device", "none") if isinstance(offload, dict) else offload
        if device not in ("cpu", "nvme", "none", None):
            raise ConfigFileError(
                f"{where}: `zero_optimization.offload_optimizer.device` must be cpu, nvme or "
                f"none, got {device!r}",
                "Fix offload_optimizer in the DeepSpeed config.",
            )
        read.add("zero_optimization.offload_optimizer.device")
        if device in ("cpu", "nvme") and stage:
            fields["optimizer_offload"] = True
    for precision in ("bf16", "fp16"):
        section = data.get(precision)
        enabled = section.get("enabled") if isinstance(section, dict) else None
        if enabled is True:
            fields["precision"] = precision
        if enabled in (True, "auto"):
            # The engine casts the whole module to the 16-bit dtype, adapters included
            # (DeepSpeedEngine._configure_distributed_model: module.bfloat16() / .half());
            # the fp32 master copy is the optimizer's.
            fields["adapter_fp32"] = False
    return fields, _unread(data, read, key)


_FSDP_SHARDING = {  # transformers' FSDPOption (training_args.py) -> MethodSpec.sharding
    "full_shard": "zero3",
    "hybrid_shard": "zero3",
    "shard_grad_op": "zero2",
    "hybrid_shard_zero2": "zero2",
    "no_shard": "none",
}
_FSDP_STRATEGY = {  # accelerate's fsdp_sharding_strategy names
    "FULL_SHARD": "zero3",
    "HYBRID_SHARD": "zero3",
    "SHARD_GRAD_OP": "zero2",
    "_HYBRID_SHARD_ZERO2": "zero2",
    "NO_SHARD": "none",
}
# fsdp_config keys with no effect on the training peak: how the model is wrapped, loaded
# and saved (loading peaks are not a training step's).
_FSDP_NO_EFFECT = {
    "auto_wrap_policy",
    "transformer_layer_cls_to_wrap",
    "state_dict_type",
    "cpu_ram_efficient_loading",
    "sync_module_states",
    "use_orig_params",
    "version",
    "min_num_params",
}


def fsdp_fields(
    options: Any, settings: Any, *, config: Path, key: str = "fsdp"
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """MethodSpec fields for transformers/Axolotl FSDP settings: ``options`` is the
    ``fsdp`` value (a list or a space-separated string of FSDPOption names, or None) and
    ``settings`` the ``fsdp_config`` mapping (keys with or without the ``fsdp_`` prefix,
    as accelerate and Axolotl write them).

    Full (and hybrid) sharding is ``zero3``; sharding only gradients and optimizer states
    (``shard_grad_op``, or FSDP2's ``reshard_after_forward`` false) is ``zero2`` without
    DeepSpeed's reduction buckets. ``activation_checkpointing`` sets gradient checkpointing.
    CPU offload of the parameters (``offload``, ``offload_params``) is listed, not modelled."""
    where = f"{config}: `{key}`"
    if settings is not None and not isinstance(settings, dict):
        raise ConfigFileError(
            f"{where}_config must be a mapping, got {settings!r}",
            f"Fix `{key}_config` in the file.",
        )
    fields, unread = _fsdp_options(options, where, key)
    if settings and not options:
        fields["sharding"] = "zero3"  # FSDP configured without options: full shard
    more_fields, more_unread = _fsdp_settings(
        {k.removeprefix("fsdp_"): v for k, v in (settings or {}).items()}, where, key
    )
    fields.update(more_fields)
    if fields.get("sharding") == "zero2":
        fields["zero_reduce_bucket_size"] = 0  # FSDP has no ZeRO reduction buckets
    return fields, (*unread, *more_unread)


def _fsdp_options(options: Any, where: str, key: str) -> tuple[dict[str, Any], list[str]]:
    """The ``fsdp`` option list: the sharding it names, and its CPU offload (listed)."""
    if isinstance(options, str):
        options = options.split()
    if options is not None and (
        not isinstance(options, list) or not all(isinstance(o, str) for o in options)
    ):
        raise ConfigFileError(
            f"{where} must be a list of FSDP options (full_shard, shard_grad_op, offload, "
            f"auto_wrap, ...), got {options!r}",
            f"Fix `{key}` in the file, or leave it out for a run without FSDP.",
        )
    fields: dict[str, Any] = {}
    unread: list[str] = []
    for option in options or ():
        if option in _FSDP_SHARDING:
            fields["sharding"] = _FSDP_SHARDING[option]
        elif option == "offload":
            unread.append(f"{key}:offload")
        elif option != "auto_wrap":
            raise ConfigFileError(
                f"{where}: unknown FSDP option {option!r}",
                "Use full_shard, shard_grad_op, hybrid_shard, hybrid_shard_zero2, no_shard, "
                "offload or auto_wrap.",
            )
    return fields, unread


def _fsdp_settings(
    settings: dict[str, Any], where: str, key: str
) -> tuple[dict[str, Any], list[str]]:
    """``fsdp_config`` (its keys without the ``fsdp_`` prefix): the sharding strategy or
    FSDP2's resharding, activation checkpointing, and what is listed, not modelled."""
    fields: dict[str, Any] = {}
    unread: list[str] = []
    strategy = settings.pop("sharding_strategy", None)
    if strategy is not None:
        name = str(strategy).upper()
        if name.isdigit() and 1 <= int(name) <= len(_FSDP_STRATEGY):  # the enum's value
            name = list(_FSDP_STRATEGY)[int(name) - 1]
        if name not in _FSDP_STRATEGY:
            raise ConfigFileError(
                f"{where}_config: unknown sharding_strategy {strategy!r}",
                f"Use one of {', '.join(_FSDP_STRATEGY)}.",
            )
        fields["sharding"] = _FSDP_STRATEGY[name]
    reshard = settings.pop("reshard_after_forward", None)
    if isinstance(reshard, bool):
        fields["sharding"] = "zero3" if reshard else "zero2"
    checkpointing = settings.pop("activation_checkpointing", None)
    if checkpointing is True:
        fields["grad_checkpointing"] = True
    offload = settings.pop("offload_params", None)
    odd = {"reshard_after_forward": reshard, "activation_checkpointing": checkpointing}
    unread += [f"{key}_config:{k}" for k, v in odd.items() if not isinstance(v, bool | None)]
    if offload not in (None, False):
        unread.append(f"{key}_config:offload_params")
    unread += [
        f"{key}_config:{name}"
        for name, _ in _leaves(settings)
        if name and name.split(".")[0] not in _FSDP_NO_EFFECT
    ]
    return fields, unread


def torchtune_fsdp_fields(reshard: Any, cpu_offload: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A torchtune distributed recipe's FSDP keys (recipes/full_finetune_distributed.py,
    v0.6): ``fsdp_reshard_after_forward`` (default true: FULL_SHARD, ``zero3``; false:
    SHARD_GRAD_OP, ``zero2`` without buckets) and ``fsdp_cpu_offload`` (listed when true,
    not modelled). Either key marks the config as a distributed recipe's."""
    fields: dict[str, Any] = {"sharding": "zero3"}
    if reshard is False:
        fields = {"sharding": "zero2", "zero_reduce_bucket_size": 0}
    unread = ("fsdp_cpu_offload",) if cpu_offload is True else ()
    return fields, unread
