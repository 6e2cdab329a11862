"""One trial over several ranks: ``torchrun`` starts them, FSDP2 shards the model over them.

    paretune trial --demo --method full --gpus 2          # 2 CPU ranks (gloo) or 2 GPUs (nccl)

A trial with ``gpus`` > 1 runs in the isolation child (:mod:`sweeps.trial.isolation`) as
the launcher: :func:`run_sharded` runs ``torchrun --standalone --nproc-per-node N`` in that
process (``torch.distributed.run``, the elastic agent: it starts the ranks and, when one
fails, stops the others) with ``python -m sweeps.trial.sharded FOLDER`` as each rank. Every
rank runs :mod:`sweeps.trial.recipe`'s steps: it loads the data and the model with its
method applied, shards it with ``torch.distributed.fsdp.fully_shard`` (each decoder layer,
then the root: weights, gradients and optimizer states partitioned as ZeRO stage 3),
and trains on its share of each micro-batch's rows (:meth:`Ranks.rows`); FSDP averages
the gradients, so a step is the one-process step of the same ``batch``. The backend is
nccl on CUDA (one GPU per rank, ``cuda:LOCAL_RANK`` of the visible ones), gloo on CPU.

After training, the trained parameters are gathered whole on rank 0
(``get_model_state_dict`` with ``full_state_dict``; frozen ones are read again from the
base), the other ranks end, and rank 0 scores quality and forgetting once on the whole
model, saves the artifacts and assembles the result, with each rank's memory: its peak and
the bytes its parameters, gradients and optimizer states hold (``measured.rank_peak_gb``,
``rank_states_gb``, their max and mean).

The ranks talk to the launcher over a FIFO in ``FOLDER``: rank 0 sends its steps and the
result, any rank its error (``oom`` when it ran out of memory). The launcher passes the
steps on at once and, when the ranks have ended, the outcome: a rank's out-of-memory error
makes the trial ``oom`` whichever rank had it; bad input is ``user_error``. The ranks die
with the launcher (``PR_SET_PDEATHSIG``): the isolation's timeout kills the launcher's
process group, and torchrun starts each rank in a session of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pricing.errors import UserError
from sweeps.outcome import Outcome
from sweeps.trial.types import StepLog, TrialConfig, TrialResult

__all__ = ["Ranks", "check_sharding", "run_rank", "run_sharded"]

_ERROR_CHARS = 3000  # a rank's error line stays under PIPE_BUF, so lines never interleave
_PARENT_ENV = "PARETUNE_RANKS_PARENT"


def check_sharding(config: TrialConfig) -> None:
    """What a sharded trial cannot do yet, said before anything starts (``TrialError``)."""
    from sweeps.trial.recipe import TrialError

    if config.gpus < 2:
        return
    if config.device != "cpu":
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (config.device == "cuda" or visible) and visible < config.gpus:
            raise TrialError(
                f"gpus {config.gpus} asks for more GPUs than the {visible} visible",
                "Use --gpus at most that many, or list more in CUDA_VISIBLE_DEVICES.",
            )
    if config.sharding in ("zero2", "zero3"):
        raise TrialError(
            f"sharding {config.sharding!r} is not supported yet",
            "Use --sharding fsdp (FSDP2's fully_shard, which partitions weights, gradients "
            "and optimizer states as ZeRO stage 3 does).",
        )
    unsupported = {
        "method qlora": config.method == "qlora",
        "early_stopping": config.early_stopping,
        "precision fp16": config.precision == "fp16",
        "loss fused": config.loss == "fused",
        "an 8-bit optimizer": config.optimizer.endswith("8bit"),
    }
    found = [name for name, used in unsupported.items() if used]
    if found:
        raise TrialError(
            f"a sharded trial (gpus {config.gpus}) cannot use {', '.join(found)} yet",
            "Use --gpus 1 for it, or full, lora, dora or freeze with bf16/fp32, the standard "
            "or chunked loss and adamw, adafactor or sgd.",
        )


# --- the launcher ------------------------------------------------------------------------------


@dataclass
class _Collected:
    """What the ranks sent besides the steps (passed on at once)."""

    result: dict | None = None
    user_error: dict | None = None
    rank_errors: list[dict] = field(default_factory=list)


def run_sharded(config: TrialConfig, send: Callable[[dict], None]) -> int:
    """Run the trial on ``config.gpus`` ranks through torchrun; send its steps and its one
    outcome (``result`` or ``user_error``) with ``send``. Returns the exit code."""
    try:
        check_sharding(config)
    except UserError as error:
        send({"user_error": {"message": error.message, "hint": error.hint}})
        return 2
    folder = Path(tempfile.mkdtemp(prefix="paretune-ranks-"))
    try:
        (folder / "config.json").write_text(config.model_dump_json())
        os.mkfifo(folder / "channel")
        # Read and write: the launcher's own write end keeps the FIFO open between ranks.
        fd = os.open(folder / "channel", os.O_RDWR | os.O_NONBLOCK)
        collected, done = _Collected(), threading.Event()
        reader = threading.Thread(
            target=_read_channel, args=(fd, send, collected, done), daemon=True
        )
        reader.start()
        failure = None
        try:
            _torchrun(config, folder)
        except Exception as error:  # noqa: BLE001 - torchrun's ChildFailedError and kin
            failure = f"{type(error).__name__}: {error}"
        done.set()
        reader.join()
        os.close(fd)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _send_outcome(config, collected, failure, send)


def _torchrun(config: TrialConfig, folder: Path) -> None:
    """``torchrun --standalone --nproc-per-node N -m sweeps.trial.sharded FOLDER`` in this
    process (``torch.distributed.run.run``: the same parser and agent as the command)."""
    from torch.distributed.run import get_args_parser, run

    os.environ[_PARENT_ENV] = str(os.getpid())
    args = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc-per-node={config.gpus}",
            "--max-restarts=0",
            "--monitor-interval=0.2",
            "-m",
            __spec__.name,
            str(folder),
        ]
    )
    run(args)


def _read_channel(fd: int, send: Callable[[dict], None], collected: _Collected, done) -> None:
    """Pass rank 0's steps on; keep the rest. Ends once ``done`` is set and nothing is left."""
    buffer = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        chunk = b""
        if ready:
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(fd, 1 << 16)
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "step" in message:
                send(message)
            elif "result" in message:
                collected.result = message["result"]
            elif "user_error" in message:
                collected.user_error = collected.user_error or message["user_error"]
            elif "rank_error" in message:
                collected.rank_errors.append(message["rank_error"])
        if not chunk and done.is_set():
            return


def _send_outcome(
    config: TrialConfig, collected: _Collected, failure: str | None, send: Callable[[dict], None]
) -> int:
    """The trial's one outcome: bad input; else an out-of-memory error on any rank; else
    rank 0's result; else the first rank error; else what torchrun said."""

    def ended(state: Outcome, error: str) -> dict:
        return TrialResult(
            state=state, method=config.method, error=error, config=config
        ).model_dump(mode="json")

    if collected.user_error is not None:
        send({"user_error": collected.user_error})
        return 2
    ooms = [e for e in collected.rank_errors if e["state"] == Outcome.OOM]
    if ooms:
        first = ooms[0]
        send({"result": ended(Outcome.OOM, f"rank {first['rank']}: {first['error']}")})
    elif collected.result is not None and failure is None:
        send({"result": collected.result})
    elif collected.rank_errors:
        first = collected.rank_errors[0]
        send({"result": ended(Outcome.FAILED, f"rank {first['rank']}: {first['error']}")})
    elif collected.result is not None:
        send({"result": collected.result})
    else:
        send({"result": ended(Outcome.FAILED, f"the ranks ended without a result: {failure}")})
    return 0


# --- a rank ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranks:
    """This process's place in a sharded trial, and the device mesh FSDP shards over."""

    rank: int
    world: int
    local_rank: int
    mesh: Any

    def rows(self, batch: dict) -> dict:
        """This rank's rows of a micro-batch (every ``world``-th, from its rank). A rank with
        no row left (a short last batch) runs the first row with nothing scored: FSDP
        needs every rank in every forward and backward."""
        mine = {k: v[self.rank :: self.world] for k, v in batch.items()}
        if len(mine["input_ids"]):
            return mine
        return {
            "input_ids": batch["input_ids"][:1],
            "attention_mask": batch["attention_mask"][:1],
            "labels": batch["labels"][:1].clone().fill_(-100),
        }

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks."""
        import torch
        import torch.distributed as dist

        device = self.mesh.device_type
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())


def _on_cuda(config: TrialConfig) -> bool:
    import torch

    return config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())


def run_rank(
    config: TrialConfig, on_step: Callable[[StepLog], None] | None = None
) -> TrialResult | None:
    """This rank's part of the trial (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` from
    torchrun); rank 0 returns the result, the others None."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    check_sharding(config)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = _on_cuda(config)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        device_id=torch.device("cuda", local_rank) if cuda and torch.cuda.is_available() else None,
    )
    try:
        world = dist.get_world_size()
        mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))
        ranks = Ranks(dist.get_rank(), world, local_rank, mesh)
        return _run(config, ranks, on_step)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(
    config: TrialConfig, ranks: Ranks, on_step: Callable[[StepLog], None] | None
) -> TrialResult | None:
    import gc

    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from sweeps.trial import recipe

    started = time.perf_counter()
    where = replace(recipe._setup_where(config), ranks=ranks)
    tokenizer, data = recipe._setup_data(config, where)
    # Loaded on the CPU; fully_shard moves each rank's shards to its device, a layer at a time.
    model = recipe._load_model(
        where.sources.model, config, torch.device("cpu"), where.precision, quantized=False
    )
    recipe._seed_everything(config.seed)  # the same initial adapters on every rank
    model = recipe._apply_method(model, config)
    model.config.use_cache = False
    shard(model, ranks, where.precision)
    if where.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(where.device)
    load_s = time.perf_counter() - started
    optimization = recipe._setup_optimizer_and_schedule(config, model, data, where)
    trained = recipe._train(
        model, data, config, where, optimization, on_step if ranks.rank == 0 else None
    )
    memory: list[Any] = [None] * ranks.world
    dist.all_gather_object(memory, (trained.peak_gb, trained.states_gb, trained.reserved_gb))
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    # Every rank leaves the group here, together: rank 0 needs no collective from now on.
    dist.destroy_process_group()
    if ranks.rank != 0:
        return None
    # What the result needs of the schedule (its steps per epoch), not the sharded states.
    optimization = replace(optimization, trainable=[], optimizer=None, scheduler=None)
    del model
    gc.collect()
    trained = replace(
        trained,
        ranks=recipe.RankMemory(
            peak_gb=[m[0] for m in memory],
            states_gb=[m[1] or 0.0 for m in memory],
            reserved_gb=[m[2] for m in memory],
        ),
    )
    # Rank 0 scores the whole trained model once: the base (cached scores) with the method
    # applied, its trained parameters replaced by the gathered ones.
    single = replace(where, ranks=None)
    whole, base = recipe._setup_model(config, single, tokenizer, data)
    _, unexpected = whole.load_state_dict(weights, strict=False)
    if unexpected:
        raise RuntimeError(f"gathered parameters the whole model lacks: {unexpected[:3]}")
    return recipe._finish(
        config, single, tokenizer, data, whole, base, optimization, trained, started, load_s
    )


def shard(model, ranks: Ranks, precision: str) -> None:
    """FSDP2 on ``model``: each decoder layer its own group, then the root (embeddings, the
    final norm, the lm_head, tied or not). Under bf16 the weights are gathered and computed
    in bf16 and the gradients reduced in fp32 (``MixedPrecisionPolicy``)."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from planner.methods import decoder_layers
    from sweeps.trial.recipe import _dtype

    policy = (
        MixedPrecisionPolicy(param_dtype=_dtype(precision), reduce_dtype=torch.float32)
        if precision != "fp32"
        else MixedPrecisionPolicy()
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=ranks.mesh, mp_policy=policy)
    fully_shard(model, mesh=ranks.mesh, mp_policy=policy)


def _die_with_launcher() -> None:
    """SIGKILL this rank when the launcher dies (a timeout kills its process group, and
    torchrun starts each rank in a session of its own); Linux only."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    parent = os.environ.get(_PARENT_ENV)
    if parent and os.getppid() != int(parent):  # it died before the call above
        os._exit(1)


def main(argv: list[str]) -> int:
    """One rank: ``python -m sweeps.trial.sharded FOLDER`` under torchrun."""
    _die_with_launcher()
    folder = Path(argv[1])
    config = TrialConfig.model_validate_json((folder / "config.json").read_text())
    channel = os.open(folder / "channel", os.O_WRONLY)
    rank = int(os.environ.get("RANK", "0"))

    def send(message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:  # a line longer than the pipe's buffer goes in parts
            data = data[os.write(channel, data) :]

    from planner.methods import quiet_bitsandbytes
    from sweeps.trial.isolation import _is_oom, _limit_memory

    quiet_bitsandbytes()
    try:
        import torch  # noqa: F401 - loaded before the memory cap
        import transformers  # noqa: F401

        from sweeps.trial import recipe  # noqa: F401

        if config.method != "full":
            import peft  # noqa: F401
        if _on_cuda(config) and torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        _limit_memory(config.memory_limit_gb, config.device)
        result = run_rank(config, on_step=lambda step: send({"step": step.model_dump(mode="json")}))
        if result is not None:
            send({"result": result.model_dump(mode="json")})
        return 0
    except UserError as error:
        send({"user_error": {"message": error.message, "hint": error.hint}})
        return 2
    except BaseException as error:  # noqa: BLE001 - reported, then this rank ends
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        oom = isinstance(error, MemoryError) or _is_oom(error, config)
        last = text.strip().splitlines()[-1] if text.strip() else repr(error)
        if config.memory_limit_gb is not None and oom:
            last += f" (memory limit {config.memory_limit_gb:g} GB per rank)"
        state = Outcome.OOM if oom else Outcome.FAILED
        message = {"rank": rank, "state": str(state), "error": (last if oom else text)}
        message["error"] = message["error"][-_ERROR_CHARS:]
        send({"rank_error": message})
        return 1
    finally:
        os.close(channel)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
