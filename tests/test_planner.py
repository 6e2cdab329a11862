"""Memory terms, monotonicity, time and money, the plan, and `paretune plan` / `models`."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from decimal import Decimal

import pytest

from planner import (
    GB,
    METHODS,
    OPTIMIZERS,
    TERMS,
    MethodSpec,
    Workload,
    estimate,
    max_fit,
    memory_terms,
    plan,
    resolve_model,
    state_bytes,
    training_flops,
)
from planner.errors import InvalidSpecError
from planner.estimation.memory import constants
from pricing import load_catalog
from pricing.errors import UserError

DENSE = resolve_model("llama-3.2-1b")
MOE = resolve_model("qwen3-30b-a3b")
GPT2 = resolve_model("gpt2")
WORK = Workload(seq_len=1024, batch=2)
COMBOS = list(itertools.product(METHODS, OPTIMIZERS, (True, False)))


def _peak(arch, workload, method, **kw) -> int:
    return memory_terms(arch, workload, method, **kw).peak_bytes


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# -- structure -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "optimizer", "ckpt"), COMBOS)
def test_breakdown_structure(kind: str, optimizer: str, ckpt: bool) -> None:
    method = MethodSpec(kind=kind, optimizer=optimizer, grad_checkpointing=ckpt)
    for arch in (DENSE, MOE, GPT2):
        est = estimate(arch, WORK, method)
        assert tuple(est.breakdown) == TERMS
        assert all(isinstance(v, int) and v >= 0 for v in est.breakdown.values())
        assert est.peak_bytes == sum(est.breakdown.values())
        assert est.breakdown["framework_overhead"] == 0  # no GPU chosen
        assert est.fits is None and est.hours is None and est.dollars is None
        assert est.breakdown["weights"] > 0 and est.breakdown["logits_loss"] > 0
        assert est.breakdown["activations"] > 0
        if method.uses_adapters:
            assert est.breakdown["adapter_weights"] > 0
            assert est.trainable_params < arch.total_params // 10
        else:
            assert est.breakdown["adapter_weights"] == 0
        if kind == "full":
            assert est.trainable_params == arch.total_params
            # With grad_accum > 1 the gradients live through the forward: all charged.
            accum = estimate(arch, WORK.with_(grad_accum=4), method)
            assert accum.breakdown["gradients"] == 2 * arch.total_params
            assert accum.peak_bytes >= est.peak_bytes


def test_gradients_of_one_step_do_not_overlap_the_activations() -> None:
    """grad_accum 1: the gradients never all coexist with the activations."""
    method = MethodSpec(kind="full", optimizer="adamw8bit")
    for arch, work in ((GPT2, WORK), (DENSE, WORK), (DENSE, WORK.with_(seq_len=8192, batch=4))):
        one = memory_terms(arch, work, method).breakdown
        accum = memory_terms(arch, work.with_(grad_accum=2), method).breakdown
        transient = accum["activations"] + accum["logits_loss"]
        # The lm_head gradient is made after the loss tensors are freed; the others while
        # the activations are freed: the step holds them all once the activations are gone.
        everything = accum["gradients"]
        peak_one = sum(one.values())
        static = sum(accum.values()) - everything - transient
        assert peak_one >= static + max(transient, everything) - 4
        assert peak_one <= sum(accum.values()) + 4
        assert one["gradients"] <= everything


@pytest.mark.parametrize(("kind", "optimizer", "ckpt"), COMBOS)
def test_monotonicity(kind: str, optimizer: str, ckpt: bool) -> None:
    method = MethodSpec(kind=kind, optimizer=optimizer, grad_checkpointing=ckpt)
    for arch in (DENSE, MOE):
        base = _peak(arch, WORK, method)
        assert _peak(arch, WORK.with_(seq_len=2048), method) >= base
        assert _peak(arch, WORK.with_(seq_len=4096), method) > base
        assert _peak(arch, WORK.with_(batch=3), method) > base
        assert _peak(arch, WORK.with_(batch=8), method) >= _peak(arch, WORK.with_(batch=3), method)
        assert _peak(arch, WORK.with_(grad_accum=2), method) >= base
        if method.uses_adapters:
            assert _peak(arch, WORK, method.with_(rank=64)) > base
            assert _peak(arch, WORK, method.with_(rank=128)) > _peak(
                arch, WORK, method.with_(rank=64)
            )
        # Checkpointing never needs more.
        assert _peak(arch, WORK, method.with_(grad_checkpointing=True)) <= _peak(
            arch, WORK, method.with_(grad_checkpointing=False)
        )
        # More GPUs with ZeRO-3 never need more per GPU; ZeRO-2 neither.
        for sharding in ("zero2", "zero3"):
            peaks = [
                _peak(arch, WORK, method.with_(sharding=sharding, gpus=n)) for n in (1, 2, 4, 8)
            ]
            assert peaks == sorted(peaks, reverse=True)
        assert _peak(arch, WORK, method.with_(sharding="zero3", gpus=8)) < base


def test_mixed_precision_adamw_is_16_bytes_per_param_and_8bit_much_less() -> None:
    full = MethodSpec(kind="full", optimizer="adamw")
    terms = memory_terms(DENSE, WORK.with_(grad_accum=2), full).breakdown
    n = DENSE.total_params
    assert terms["weights"] == 2 * n and terms["gradients"] == 2 * n
    assert terms["optimizer_states"] == 12 * n
    pure = memory_terms(DENSE, WORK, full.with_(optimizer="adamw_bf16")).breakdown
    assert pure["optimizer_states"] == 4 * n
    eight = memory_terms(DENSE, WORK, full.with_(optimizer="adamw8bit")).breakdown
    assert 2 * n <= eight["optimizer_states"] < 2.1 * n
    # Paged states live in unified memory: resident only in the step, when activations
    # and the loss are gone, so only what exceeds them is charged.
    accum = WORK.with_(grad_accum=2)  # gradients persist: only the states are paged
    eight2 = memory_terms(DENSE, accum, full.with_(optimizer="adamw8bit")).breakdown
    paged = memory_terms(DENSE, accum, full.with_(optimizer="paged_adamw8bit")).breakdown
    transient = eight2["activations"] + eight2["logits_loss"]
    assert paged["optimizer_states"] == max(0, eight2["optimizer_states"] - transient)
    assert sum(paged.values()) == sum(eight2.values()) - min(eight2["optimizer_states"], transient)
    sgd = memory_terms(DENSE, WORK, full.with_(optimizer="sgd")).breakdown
    assert sgd["optimizer_states"] == 2 * n
    ada = memory_terms(DENSE, WORK, full.with_(optimizer="adafactor")).breakdown
    assert 0 < ada["optimizer_states"] < 0.05 * n  # factored: rows + columns only


def test_zero_sharding_divides_the_right_terms() -> None:
    # Without DeepSpeed's reduction buckets (the next test), only the partitioning.
    method = MethodSpec(kind="full", optimizer="adamw", zero_reduce_bucket_size=0)
    work = WORK.with_(grad_accum=2)  # gradients persist, so every term is charged whole
    one = memory_terms(DENSE, work, method).breakdown
    z2 = memory_terms(DENSE, work, method.with_(sharding="zero2", gpus=4)).breakdown
    z3 = memory_terms(DENSE, work, method.with_(sharding="zero3", gpus=4)).breakdown
    ddp = memory_terms(DENSE, work, method.with_(gpus=4)).breakdown
    assert ddp == one
    assert z2["weights"] == one["weights"]
    assert z2["gradients"] == pytest.approx(one["gradients"] / 4, abs=1)
    assert z2["optimizer_states"] == pytest.approx(one["optimizer_states"] / 4, abs=1)
    assert one["weights"] / 4 < z3["weights"] < one["weights"] / 2  # shard + gathered layers
    assert z3["activations"] == one["activations"]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_zero2_charges_deepspeeds_gradient_reduction_buckets(kind: str) -> None:
    # DeepSpeedZeroOptimizer.backward (deepspeed/runtime/zero/stage_1_and_2.py, v0.16.4)
    # allocates one buffer of reduce_bucket_size elements in the 16-bit parameter dtype,
    # a second with overlap_comm; DeepSpeed's defaults (runtime/zero/config.py): 5e8
    # elements, overlap_comm off below stage 3.
    method = MethodSpec(kind=kind, sharding="zero2", gpus=8)
    cases = {
        method: 500_000_000 * 2,
        method.with_(zero_reduce_bucket_size=10**9, zero_overlap_comm=True): 2 * 10**9 * 2,
        method.with_(precision="fp32"): 500_000_000 * 4,
        method.with_(gpus=1): 500_000_000 * 2,  # allocated on any number of GPUs
    }
    for spec, buckets in cases.items():
        base = memory_terms(DENSE, WORK, spec.with_(zero_reduce_bucket_size=0))
        terms = memory_terms(DENSE, WORK, spec)
        assert terms.breakdown["gradients"] - base.breakdown["gradients"] == buckets
        assert terms.peak_bytes - base.peak_bytes == buckets
        others = {k: v for k, v in terms.breakdown.items() if k != "gradients"}
        assert others == {k: v for k, v in base.breakdown.items() if k != "gradients"}
    # Released after the backward: not in the states a rank holds between steps.
    assert state_bytes(DENSE, method) == state_bytes(DENSE, method.with_(zero_reduce_bucket_size=0))


@pytest.mark.parametrize("sharding", ["none", "zero3"])
def test_reduction_buckets_are_charged_only_under_zero2(sharding: str) -> None:
    method = MethodSpec(kind="lora", sharding=sharding, gpus=8)
    big = method.with_(zero_reduce_bucket_size=10**9, zero_overlap_comm=True)
    none = method.with_(zero_reduce_bucket_size=0)
    assert memory_terms(DENSE, WORK, big) == memory_terms(DENSE, WORK, none)


def test_qlora_weights_are_nf4_plus_16bit_embeddings_and_head() -> None:
    arch = resolve_model("llama-3.1-8b")
    method = MethodSpec(kind="qlora")
    weights = memory_terms(arch, WORK, method).breakdown["weights"]
    quantized = arch.linear_params
    unquantized = arch.total_params - quantized
    nf4 = quantized * (4 + 0.127) / 8
    dequantized_buffer = 2 * 4096 * 14336  # the largest Linear, dequantized for its matmul
    assert weights == pytest.approx(nf4 + 2 * unquantized + dequantized_buffer, rel=0.001)
    # 128k vocabulary: embeddings and the untied head are over a quarter of the total.
    assert 2 * unquantized > 0.25 * weights


def test_lora_targets_and_rank_set_the_adapter_size() -> None:
    arch = resolve_model("llama-2-7b")  # 4096 hidden, 11008 intermediate, 32 layers
    qv = estimate(arch, WORK, MethodSpec(kind="lora", rank=8, targets=("q_proj", "v_proj")))
    assert qv.trainable_params == 32 * 2 * 8 * (4096 + 4096)  # 4,194,304: the LoRA paper's figure
    attn = estimate(arch, WORK, MethodSpec(kind="lora", rank=8, targets="attn"))
    mlp = estimate(arch, WORK, MethodSpec(kind="lora", rank=8, targets="mlp"))
    all_ = estimate(arch, WORK, MethodSpec(kind="lora", rank=8, targets="all"))
    assert attn.trainable_params == 32 * 4 * 8 * 8192
    assert all_.trainable_params == attn.trainable_params + mlp.trainable_params
    dora = estimate(arch, WORK, MethodSpec(kind="dora", rank=8, targets="attn"))
    assert dora.trainable_params == attn.trainable_params + 32 * 4 * 4096
    assert qv.breakdown["adapter_weights"] == 4 * qv.trainable_params


def test_freeze_trains_only_the_top_layers() -> None:
    two = estimate(DENSE, WORK, MethodSpec(kind="freeze", freeze_layers=2))
    four = estimate(DENSE, WORK, MethodSpec(kind="freeze", freeze_layers=4))
    assert four.trainable_params == pytest.approx(2 * two.trainable_params, rel=0.01)
    assert four.peak_bytes > two.peak_bytes
    full = estimate(DENSE, WORK, MethodSpec(kind="full"))
    assert two.peak_bytes < full.peak_bytes


def test_eager_attention_adds_the_quadratic_scores() -> None:
    sdpa = memory_terms(DENSE, WORK, MethodSpec(kind="lora", grad_checkpointing=False))
    eager = memory_terms(
        DENSE, WORK, MethodSpec(kind="lora", grad_checkpointing=False, attention="eager")
    )
    extra = eager.breakdown["activations"] - sdpa.breakdown["activations"]
    s, b = WORK.seq_len, WORK.batch
    # 6 B per score (the fp32 softmax and its 16-bit copy), minus flash's 4 B log-sum-exp.
    assert extra == pytest.approx(DENSE.layers * DENSE.heads * s * b * (6 * s - 4), rel=0.01)


def test_logits_loss_is_twelve_bytes_per_logit() -> None:
    terms = memory_terms(DENSE, WORK, MethodSpec(kind="lora")).breakdown
    assert terms["logits_loss"] == WORK.seq_len * WORK.batch * DENSE.vocab * 12


# -- time and money ------------------------------------------------------------------------


def test_flops_follow_6nt_and_frozen_bases_are_cheaper() -> None:
    w = Workload(seq_len=2048, dataset_tokens=1_000_000)
    full = training_flops(DENSE, w, MethodSpec(kind="full", grad_checkpointing=False))
    n = DENSE.compute_params
    attention = 12 * DENSE.layers * DENSE.q_dim * 2048 * w.tokens
    assert full == pytest.approx(6 * n * w.tokens + attention)
    lora = training_flops(DENSE, w, MethodSpec(kind="lora", grad_checkpointing=False))
    assert 0.6 * full < lora < 0.8 * full
    ckpt = training_flops(DENSE, w, MethodSpec(kind="full"))
    assert ckpt > full
    moe = training_flops(MOE, w, MethodSpec(kind="full", grad_checkpointing=False))
    assert moe < 6 * MOE.total_params * w.tokens / 3  # only routed experts compute


def test_estimate_on_a_gpu(catalog) -> None:
    arch = resolve_model("llama-3.1-8b")
    w = Workload(seq_len=2048, dataset_tokens=20_000_000)
    est = estimate(arch, w, MethodSpec(kind="qlora"), gpu="h100", catalog=catalog)
    gpu = catalog.gpu("h100")
    assert est.gpu == gpu.id and est.fits is True and est.min_gpus == 1
    assert est.breakdown["framework_overhead"] > constants()["cuda_context_bytes"]
    mfu = constants()["mfu"]["qlora"]
    assert est.hours == pytest.approx(est.flops / (gpu.matmul_tflops * 1e12 * mfu) / 3600)
    offer = catalog.cheapest(gpu.id)
    assert est.provider == offer.provider
    assert isinstance(est.dollars, Decimal)
    assert est.dollars == (Decimal(repr(est.hours)) * offer.usd_per_hour).quantize(Decimal("0.01"))
    lambda_ = estimate(
        arch, w, MethodSpec(kind="qlora"), gpu="h100", provider="lambda", catalog=catalog
    )
    assert lambda_.provider == "lambda" and lambda_.dollars >= est.dollars


def test_a_model_too_big_for_one_gpu_needs_several(catalog) -> None:
    arch = resolve_model("llama-3.1-70b")
    est = estimate(arch, WORK, MethodSpec(kind="full"), gpu="h100", catalog=catalog)
    assert est.fits is False
    assert est.min_gpus is not None and est.min_gpus > 8
    sharded = estimate(
        arch,
        WORK,
        MethodSpec(kind="full", gpus=est.min_gpus, sharding="zero3"),
        gpu="h100",
        catalog=catalog,
    )
    assert sharded.fits is True
    # Counts are 1-8 GPUs, then whole 8-GPU nodes: the count below did not fit.
    candidates = constants()["min_gpus_candidates"]
    below = candidates[candidates.index(est.min_gpus) - 1]
    fewer = estimate(
        arch,
        WORK,
        MethodSpec(kind="full", gpus=below, sharding="zero3"),
        gpu="h100",
        catalog=catalog,
    )
    assert fewer.fits is False


def test_max_fit_is_the_boundary(catalog) -> None:
    arch = resolve_model("llama-3.1-8b")
    method = MethodSpec(kind="qlora")
    memory = catalog.gpu("rtx-4090").memory_bytes
    seq, batch = max_fit(arch, WORK, method, memory)
    assert seq > 0 and batch > 0
    assert _peak(arch, WORK.with_(seq_len=seq), method) <= memory
    assert _peak(arch, WORK.with_(seq_len=seq + 1), method) > memory
    assert _peak(arch, WORK.with_(batch=batch), method) <= memory
    assert _peak(arch, WORK.with_(batch=batch + 1), method) > memory
    assert max_fit(resolve_model("llama-3.1-405b"), WORK, MethodSpec(kind="full"), memory) == (0, 0)


def test_plan_without_gpu_picks_the_cheapest_fitting_option(catalog) -> None:
    arch = resolve_model("qwen2.5-7b")
    result = plan(arch, WORK, catalog=catalog)
    assert [e.method.kind for e in result.estimates] == list(METHODS)
    for est in result.estimates:
        assert est.fits is True and est.dollars is not None
        # No single GPU type at any provider is cheaper while still fitting.
        for gpu in catalog.gpus:
            offer = catalog.cheapest(gpu.id)
            if offer is None:
                continue
            alt = estimate(
                arch, WORK, est.method.with_(gpus=1, sharding="none"), gpu=gpu.id, catalog=catalog
            )
            if alt.fits and alt.dollars is not None:
                assert est.dollars <= alt.dollars
    assert result.apis  # at least one fine-tuning API trains a 7B model


def test_the_cheapest_search_goes_past_one_node_only_on_whole_node_rentals(catalog) -> None:
    """96 RTX 4090 pods sharding a 70B full fine-tune would be cheapest on paper; nobody can
    train on that. Past 8 GPUs (one node) only offers rented as whole 8-GPU nodes count."""
    arch = resolve_model("llama-3.1-70b")
    result = plan(arch, WORK, catalog=catalog)
    for est in result.estimates:
        assert est.fits
        offer = catalog.offers(gpu=est.gpu, provider=est.provider)[0]
        assert est.method.gpus <= 8 or offer.gpus_per_instance >= 8, (est.method.kind, est.gpu)
    full = result.estimates[0]
    pods = estimate(
        arch,
        WORK,
        full.method.with_(gpus=96, sharding="zero3"),
        gpu="rtx-4090",
        provider="runpod-community",
        catalog=catalog,
    )
    assert pods.fits and pods.dollars < full.dollars  # what the rule turned down


def test_plan_respects_provider(catalog) -> None:
    result = plan(DENSE, WORK, [MethodSpec(kind="lora")], provider="lambda", catalog=catalog)
    assert result.estimates[0].provider == "lambda"


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Workload(seq_len=0), "seq_len"),
        (lambda: Workload(batch=-1), "batch"),
        (lambda: Workload(dataset_tokens=0), "dataset_tokens"),
        (lambda: Workload(epochs=0), "epochs"),
        (lambda: MethodSpec(kind="lorra"), "method"),
        (lambda: MethodSpec(optimizer="adam9"), "optimizer"),
        (lambda: MethodSpec(rank=0), "rank"),
        (lambda: MethodSpec(gpus=0), "gpus"),
        (lambda: MethodSpec(sharding="zero4"), "sharding"),
        (lambda: estimate(DENSE, WORK, MethodSpec(rank=4096)), "rank"),
        (lambda: estimate(DENSE, WORK, MethodSpec(targets=("q_proj", "wq"))), "wq"),
        (lambda: estimate(GPT2, WORK.with_(seq_len=2048), MethodSpec()), "seq_len"),
    ],
)
def test_bad_input_is_a_user_error_naming_the_field(make, field: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        make()
    assert field in caught.value.message


def test_unknown_gpu_and_provider(catalog) -> None:
    with pytest.raises(UserError, match="unknown GPU"):
        estimate(DENSE, WORK, MethodSpec(), gpu="h10", catalog=catalog)
    with pytest.raises(UserError, match="unknown provider"):
        plan(DENSE, WORK, provider="lambada", catalog=catalog)


# -- the command line ----------------------------------------------------------------------


def _paretune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_plan_json_contract() -> None:
    done = _paretune(
        "plan",
        "llama-3.1-8b",
        "--gpu",
        "a100-80gb",
        "--method",
        "lora",
        "--method",
        "qlora",
        "--examples",
        "1000",
        "--avg-tokens",
        "500",
        "--epochs",
        "3",
        "--max-fit",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {
        "model",
        "workload",
        "methods",
        "apis",
        "warnings",
        "project",
        "calibration",
    }
    assert out["warnings"] == []
    assert out["model"] == {
        "name": "llama-3.1-8b",
        "total_params": 8_030_261_248,
        "active_params": 8_030_261_248,
    }
    assert out["workload"] == {
        "seq_len": 2048,
        "batch": 1,
        "grad_accum": 1,
        "tokens": 1_500_000,
        "epochs": 3.0,
    }
    assert [m["method"] for m in out["methods"]] == ["lora", "qlora"]
    for m in out["methods"]:
        framework = m["framework"]
        assert {k: framework[k] for k in ("name", "loss", "speed_factor", "changes")} == {
            "name": "hf",
            "loss": "standard",
            "speed_factor": 1.0,
            "changes": [],
        }
        assert framework["optimizer_in_backward"] is False
        assert framework["unquantized_fp32"] is False
        assert framework["logit_copies"] == 3
        assert set(m) == {
            "method",
            "framework",
            "trainable_params",
            "peak_gb",
            "breakdown_gb",
            "fits",
            "gpu",
            "gpus",
            "min_gpus",
            "hours",
            "dollars",
            "provider",
            "allocated_gb",
            "cuda_context_gb",
            "allocator_reserve_gb",
            "sharding",
            "sharding_chosen_by_planner",
            "price_note",
            "instance_gpus",
            "notes",
            "max_seq_len",
            "max_batch",
        }
        assert list(m["breakdown_gb"]) == list(TERMS)
        assert m["peak_gb"] == pytest.approx(sum(m["breakdown_gb"].values()), abs=0.01)
        assert m["fits"] is True and m["gpu"] == "a100-80gb" and m["gpus"] == 1
        assert m["max_seq_len"] >= 2048 and m["max_batch"] >= 1
        assert isinstance(m["dollars"], float) and m["hours"] > 0
    for api in out["apis"]:
        assert set(api) == {"provider", "model", "method", "dollars"}


def test_plan_table_and_no_torch() -> None:
    code = (
        "import sys\n"
        "from tui.cli import run\n"
        "try:\n"
        "    run(['plan', 'mixtral-8x7b', '--max-fit'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'optuna', 'textual') if m in sys.modules]\n"
        "print('HEAVY', ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("HEAVY")
    for word in (
        "peak GB",
        "fits",
        "min GPUs",
        "hours",
        "max seq",
        "weights",
        "logits_loss",
        "framework_overhead",
        "GB = 10^9 bytes",
        "12.88B active",
    ):
        assert word in done.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("plan", "llama-3.1-8bb"), "Did you mean 'llama-3.1-8b'"),
        (("plan", "llama-3.1-8b", "--seq-len", "0"), "seq_len"),
        (("plan", "llama-3.1-8b", "--rank", "99999"), "rank"),
        (("plan", "llama-3.1-8b", "--gpu", "h10"), "unknown GPU"),
        (("plan", "llama-3.1-8b", "--provider", "nobody"), "unknown provider"),
        (("plan", "llama-3.1-8b", "--method", "lorra"), "unknown method"),
        (("plan", "llama-3.1-8b", "--optimizer", "adamw9"), "unknown optimizer"),
        (("plan", "llama-3.1-8b", "--targets", "q_proj,wq"), "wq"),
        (("plan", "llama-3.1-8b", "--examples", "10"), "--avg-tokens"),
    ],
)
def test_bad_input_exits_2_without_traceback(args: tuple[str, ...], says: str) -> None:
    done = _paretune(*args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_models_lists_and_searches() -> None:
    done = _paretune("models", "qwen3")
    assert done.returncode == 0
    assert "qwen3-30b-a3b" in done.stdout and "llama" not in done.stdout
    listed = json.loads(_paretune("models", "--format", "json").stdout)
    assert len(listed) >= 25
    assert {"name", "hf_id", "total_params", "active_params", "aliases"} <= set(listed[0])


def test_gb_is_ten_to_the_ninth() -> None:
    assert GB == 10**9
    est = estimate(DENSE, WORK, MethodSpec())
    assert est.peak_gb == est.peak_bytes / 1e9


@pytest.mark.slow
def test_simulate_flag_adds_the_simulated_peak() -> None:
    pytest.importorskip("torch")
    done = _paretune(
        "plan",
        "smollm2-135m",
        "--method",
        "lora",
        "--seq-len",
        "128",
        "--gpu",
        "h100",
        "--simulate",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["methods"][0]
    simulated = row["simulated"]
    assert set(simulated["breakdown_gb"]) == set(TERMS)
    # Two independent answers to the same question: the formulas and the simulated step.
    assert simulated["peak_gb"] == pytest.approx(row["peak_gb"], rel=0.10)


def test_moe_expert_targets_follow_the_fused_parameters() -> None:
    mixtral = resolve_model("mixtral-8x7b")  # 8 experts, h 4096, expert width 14336
    by_name = MethodSpec(kind="lora", rank=8, targets=("gate_proj",))
    # transformers 5 fuses each layer's expert gate and up projections into one parameter.
    assert estimate(mixtral, WORK, by_name).trainable_params == 32 * 8 * 8 * (4096 + 2 * 14336)
    with pytest.raises(InvalidSpecError, match="DoRA"):
        estimate(mixtral, WORK, MethodSpec(kind="dora", targets=("experts.down_proj",)))
    dora_all = estimate(mixtral, WORK, MethodSpec(kind="dora", rank=8))
    assert (
        dora_all.trainable_params
        == estimate(mixtral, WORK, MethodSpec(kind="dora", rank=8, targets="attn")).trainable_params
    )


def test_fp32_runs_keep_fp32_activations() -> None:
    half = memory_terms(DENSE, WORK, MethodSpec(kind="full", grad_checkpointing=False))
    full = memory_terms(
        DENSE, WORK, MethodSpec(kind="full", grad_checkpointing=False, precision="fp32")
    )
    assert full.breakdown["weights"] == 2 * half.breakdown["weights"]
    assert full.breakdown["activations"] > 1.5 * half.breakdown["activations"]


# -- framework behaviours (MethodSpec options) -------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("kind", METHODS)
def test_optimizer_in_backward_never_needs_more(kind: str, optimizer: str) -> None:
    plain = MethodSpec(kind=kind, optimizer=optimizer)
    in_backward = plain.with_(optimizer_in_backward=True)
    for arch in (DENSE, MOE):
        before = memory_terms(arch, WORK, plain)
        after = memory_terms(arch, WORK, in_backward)
        assert after.peak_bytes <= before.peak_bytes
        assert set(after.breakdown) == set(TERMS)
        assert after.breakdown["gradients"] <= before.breakdown["gradients"]
        for term in ("weights", "optimizer_states", "activations", "logits_loss"):
            assert after.breakdown[term] <= before.breakdown[term]


def test_optimizer_in_backward_keeps_one_parameters_gradient() -> None:
    # Without activations to hide behind (grad_accum 1 charges gradients only beyond the
    # freed activations), compare the gradient terms of a full fine-tune on a tiny batch.
    tiny = Workload(seq_len=16, batch=1)
    full = memory_terms(DENSE, tiny, MethodSpec(kind="full"))
    stepped = memory_terms(DENSE, tiny, MethodSpec(kind="full", optimizer_in_backward=True))
    # Llama-3.2-1B's largest parameter is its tied vocab x hidden embedding (bf16).
    assert stepped.breakdown["gradients"] <= DENSE.vocab * DENSE.hidden * 2
    assert full.breakdown["gradients"] > stepped.breakdown["gradients"]


def test_optimizer_in_backward_refuses_gradient_accumulation() -> None:
    with pytest.raises(InvalidSpecError, match="grad_accum"):
        memory_terms(DENSE, WORK.with_(grad_accum=4), MethodSpec(optimizer_in_backward=True))


@pytest.mark.parametrize("arch", [DENSE, MOE, GPT2], ids=lambda a: a.name)
def test_unquantized_fp32_upcast_never_needs_less(arch) -> None:
    kept = memory_terms(arch, WORK, MethodSpec(kind="qlora"))
    upcast = memory_terms(arch, WORK, MethodSpec(kind="qlora", unquantized_fp32=True))
    unquantized = arch.total_params - (arch.linear_params - arch.router_params)
    # Exactly 2 more bytes for each unquantized parameter (bf16 -> fp32).
    assert upcast.breakdown["weights"] - kept.breakdown["weights"] == pytest.approx(
        2 * unquantized, abs=2
    )
    assert upcast.peak_bytes > kept.peak_bytes
    # It only changes QLoRA: the other methods do not quantize anything.
    for kind in ("full", "lora", "dora", "freeze"):
        assert _peak(arch, WORK, MethodSpec(kind=kind, unquantized_fp32=True)) == _peak(
            arch, WORK, MethodSpec(kind=kind)
        )


@pytest.mark.parametrize("kind", METHODS)
def test_logit_copies_scale_the_loss_term(kind: str) -> None:
    terms = [memory_terms(DENSE, WORK, MethodSpec(kind=kind, logit_copies=n)) for n in (3, 4, 5)]
    tokens = WORK.seq_len * WORK.batch
    losses = [t.breakdown["logits_loss"] for t in terms]
    assert losses[0] == tokens * DENSE.vocab * 12
    assert losses[1] - losses[0] == tokens * DENSE.vocab * 4 == losses[2] - losses[1]
    assert terms[0].peak_bytes < terms[1].peak_bytes < terms[2].peak_bytes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer_in_backward", "yes"),
        ("unquantized_fp32", 1),
        ("logit_copies", 0),
        ("zero_reduce_bucket_size", -1),
        ("zero_reduce_bucket_size", 5e8),
        ("zero_overlap_comm", "true"),
    ],
)
def test_framework_options_are_validated(field: str, value: object) -> None:
    with pytest.raises(InvalidSpecError, match=field):
        MethodSpec(**{field: value})


def test_freeze_with_checkpointing_keeps_every_layers_checkpoint() -> None:
    # transformers' checkpointing makes the embedding output require grad, so all
    # layers, not only the top k, keep their 16-bit input and run a backward.
    arch = resolve_model("llama-3.1-8b")
    work = Workload(seq_len=2048, batch=1)
    top2 = memory_terms(arch, work, MethodSpec(kind="freeze", freeze_layers=2))
    top8 = memory_terms(arch, work, MethodSpec(kind="freeze", freeze_layers=8))
    checkpoints = arch.layers * arch.hidden * 2 * 2048
    assert top2.breakdown["activations"] >= checkpoints
    # The checkpoints do not depend on how many layers train.
    assert abs(top8.breakdown["activations"] - top2.breakdown["activations"]) < 0.1 * checkpoints
    # Time: the backward through the frozen layers costs FLOPs.
    no_ckpt = MethodSpec(kind="freeze", freeze_layers=2, grad_checkpointing=False)
    assert training_flops(arch, work, MethodSpec(kind="freeze", freeze_layers=2)) > (
        training_flops(arch, work, no_ckpt) + 2 * arch.layer_params * work.tokens * 28
    )


def test_plan_command_takes_the_framework_options() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "plan",
            "llama-2-7b",
            "--method",
            "qlora",
            "--unquantized-fp32",
            "--logit-copies",
            "4",
            "--optimizer-in-backward",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (method,) = json.loads(done.stdout)["methods"]
    framework = method["framework"]
    assert framework["optimizer_in_backward"] is True
    assert framework["unquantized_fp32"] is True
    assert framework["logit_copies"] == 4
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "plan",
            "llama-2-7b",
            "--optimizer-in-backward",
            "--grad-accum",
            "8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "grad-accum 1" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
