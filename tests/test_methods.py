"""The method layer (``planner.methods``): one way to apply a method, checkpoint and build
the optimizer, for the trial, the step simulator and the GPU check. Real tiny models."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from test_simulate_crosscheck import FAMILIES  # noqa: E402

from planner import MethodSpec, Workload, arch_from_config, resolve_model, trainable_params  # noqa: E402
from planner.errors import InvalidSpecError  # noqa: E402
from planner.methods import (  # noqa: E402
    MethodSetup,
    apply_method,
    build_optimizer,
    decoder_layers,
    enable_checkpointing,
    final_norm,
    master_weight_adamw,
    resolve_targets,
)

TINY_LLAMA = FAMILIES["llama"]


def build(config: dict, *, dtype=torch.float32, device: str = "cpu"):
    """A randomly initialised causal LM from a config dict (on ``meta``: shapes only)."""
    import warnings

    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(config)
    model_type = values.pop("model_type")
    values["use_cache"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_config = AutoConfig.for_model(model_type, **values)
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if (getattr(hf_config, key, None) or 0) >= hf_config.vocab_size:
                setattr(hf_config, key, None)
        with torch.device(device):
            return AutoModelForCausalLM.from_config(hf_config, dtype=dtype)


def trained(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_importing_the_method_layer_does_not_import_torch() -> None:
    code = "import sys, planner.methods; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_decoder_layers_are_the_list_as_long_as_the_config_says() -> None:
    model = build(TINY_LLAMA)
    assert decoder_layers(model) is model.model.layers
    # A longer list elsewhere (a model's extra heads, say) is not taken for the layers...
    model.extra = torch.nn.ModuleList(torch.nn.Identity() for _ in range(5))
    assert decoder_layers(model) is model.model.layers
    # ...unless no list has the config's length: then the longest one is.
    model.config.num_hidden_layers = 3
    assert decoder_layers(model) is model.extra
    with pytest.raises(InvalidSpecError, match="cannot find the decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))
    assert final_norm(build(TINY_LLAMA)) is not None


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_adapter_targets_read_off_the_model_are_the_planners(family: str) -> None:
    """For every catalogue family, group and adapter kind, the parameters the adapters add
    on the real model are the planner's count from the config."""
    arch = arch_from_config(FAMILIES[family], name=f"tiny-{family}")
    for kind in ("lora", "dora"):
        for targets in ("attn", "mlp", "all"):
            expected = trainable_params(arch, MethodSpec(kind=kind, rank=8, targets=targets))
            model = build(FAMILIES[family], device="meta")
            setup = MethodSetup(kind=kind, rank=8, targets=targets)
            if expected == 0:  # DoRA on the MLP of a model whose MLP is all experts
                with pytest.raises(InvalidSpecError, match=f"no '{targets}' linear layers"):
                    apply_method(model, setup)
                continue
            assert trained(apply_method(model, setup)) == expected, (kind, targets)


def test_gpt2_attention_and_mlp_projections_are_told_apart() -> None:
    model = build(FAMILIES["gpt2"], device="meta")
    assert resolve_targets(model, "attn", kind="lora").modules == ("attn.c_proj", "c_attn")
    assert resolve_targets(model, "mlp", kind="lora").modules == ("c_fc", "mlp.c_proj")
    assert resolve_targets(model, "all", kind="lora").modules == ("c_attn", "c_fc", "c_proj")


def test_moe_experts_are_adapted_by_parameter_except_with_dora() -> None:
    model = build(FAMILIES["qwen3_moe"], device="meta")
    lora = resolve_targets(model, "all", kind="lora")
    assert lora.modules == ("k_proj", "o_proj", "q_proj", "v_proj")
    assert lora.parameters == ("experts.down_proj", "experts.gate_up_proj")
    assert resolve_targets(model, "all", kind="dora").parameters == ()
    # gate and up are one fused parameter; a name without "experts." takes it too.
    named = resolve_targets(model, ["up_proj", "q_proj"], kind="lora")
    assert named.modules == ("q_proj",) and named.parameters == ("experts.gate_up_proj",)
    with pytest.raises(InvalidSpecError, match="DoRA cannot adapt the expert parameters"):
        resolve_targets(model, "experts.down_proj", kind="dora")


def test_bad_targets_are_user_errors_that_name_the_closest_module() -> None:
    model = build(TINY_LLAMA, device="meta")
    with pytest.raises(InvalidSpecError, match="no linear module named 'q_prj'") as error:
        apply_method(model, MethodSetup(kind="lora", targets="q_prj,v_proj"))
    assert "q_proj" in error.value.hint
    assert not any("lora_" in name for name, _ in model.named_parameters())  # untouched
    with pytest.raises(InvalidSpecError, match="3 trainable layers asked for"):
        apply_method(model, MethodSetup(kind="freeze", freeze_layers=3))
    with pytest.raises(InvalidSpecError, match="unknown kind 'lorra'"):
        MethodSetup(kind="lorra")


def test_each_kind_trains_what_it_should() -> None:
    arch = arch_from_config(dict(TINY_LLAMA, num_hidden_layers=4), name="tiny-4")
    config = dict(TINY_LLAMA, num_hidden_layers=4)
    full = apply_method(build(config), MethodSetup(kind="full"))
    assert trained(full) == arch.total_params
    # The planner's freeze trains the final norm too; a trial's only the top layers.
    planner_freeze = MethodSetup.from_spec(MethodSpec(kind="freeze", freeze_layers=1))
    trial_freeze = MethodSetup.from_spec(MethodSpec(kind="freeze", freeze_layers=1), recipe="trial")
    assert trained(apply_method(build(config), planner_freeze)) == arch.layer_params + arch.hidden
    model = apply_method(build(config), trial_freeze)
    assert trained(model) == arch.layer_params
    assert all(p.requires_grad for p in decoder_layers(model)[3].parameters())
    lora = apply_method(build(config), MethodSetup(kind="lora", rank=4, targets="attn"))
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert trained(lora) == trainable_params(arch, MethodSpec(kind="lora", rank=4, targets="attn"))


def test_qlora_preparation_upcasts_what_bitsandbytes_leaves_and_keeps_the_quantized() -> None:
    """On a 16-bit stand-in of a 4-bit model (the simulator's), peft's k-bit preparation
    upcasts embeddings, norms and head to fp32; the decoder matrices keep their dtype."""
    model = build(TINY_LLAMA, dtype=torch.bfloat16, device="meta")
    setup = MethodSetup(kind="qlora", prepare_kbit=True)
    model = apply_method(model, setup).get_base_model()
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        matrix = ".layers." in name and param.dim() == 2
        assert param.dtype == (torch.bfloat16 if matrix else torch.float32), name


def test_checkpointing_is_non_reentrant_and_backpropagates_through_frozen_layers() -> None:
    model = build(TINY_LLAMA)
    enable_checkpointing(model)
    for layer in decoder_layers(model):
        assert layer.gradient_checkpointing
        assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    # Only the top layer trains; the bottom one still runs its backward, recomputed, since
    # the embeddings' output requires grad.
    model = apply_method(model, MethodSetup(kind="freeze", freeze_layers=1))
    seen = []
    decoder_layers(model)[0].register_full_backward_hook(lambda *_: seen.append("bottom"))
    ids = torch.randint(0, 256, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen == ["bottom"]


def test_master_weight_adamw_steps_an_fp32_copy_like_torch_adamw() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(64, 32).to(torch.bfloat16))
    reference = torch.nn.Parameter(weight.detach().float().clone())
    ours = master_weight_adamw([weight], lr=1e-2, weight_decay=0.1)
    theirs = torch.optim.AdamW([reference], lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(64, 32)
        weight.grad, reference.grad = grad.to(torch.bfloat16), grad.to(torch.bfloat16).float()
        ours.step()
        theirs.step()
    state = ours.state[weight]
    assert state["master"].dtype == state["exp_avg"].dtype == torch.float32
    assert state["step"].device == weight.device and float(state["step"]) == 3
    torch.testing.assert_close(state["master"], reference.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(weight.detach(), state["master"].to(torch.bfloat16))


def test_build_optimizer_by_name() -> None:
    fp32 = [torch.nn.Parameter(torch.zeros(8, 8))]
    bf16 = [torch.nn.Parameter(torch.zeros(8, 8, dtype=torch.bfloat16))]
    plain = build_optimizer(fp32, "adamw", lr=1e-3, weight_decay=0.01)
    assert type(plain) is torch.optim.AdamW and plain.defaults["weight_decay"] == 0.01
    assert not plain.defaults["fused"] and not plain.defaults["foreach"]
    assert build_optimizer(fp32, "adamw", lr=1e-3, kernel="fused").defaults["fused"]
    assert build_optimizer(fp32, "adamw", lr=1e-3, kernel="foreach").defaults["foreach"]
    assert type(build_optimizer(bf16, "adamw", lr=1e-3)).__name__ == "MasterWeightAdamW"
    assert type(build_optimizer(bf16, "adamw_bf16", lr=1e-3)) is torch.optim.AdamW
    assert build_optimizer(fp32, "sgd", lr=1e-3).defaults["momentum"] == 0.9
    assert type(build_optimizer(fp32, "adafactor", lr=1e-3)).__name__ == "Adafactor"
    assert type(build_optimizer(fp32, "adamw8bit", lr=1e-3)).__name__ == "AdamW8bit"
    with pytest.raises(InvalidSpecError, match="needs a CUDA GPU"):
        build_optimizer(fp32, "paged_adamw8bit", lr=1e-3)
    with pytest.raises(InvalidSpecError, match="unknown optimizer 'adam'"):
        build_optimizer(fp32, "adam", lr=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"method": "freeze", "freeze_trainable_layers": 1},
        {"method": "lora", "targets": "attn"},
        {"method": "dora", "targets": "mlp", "rank": 4},
    ],
)
def test_a_trial_trains_what_the_simulator_simulates(changes: dict, demo) -> None:
    """The trial applies its method through the same layer as the simulator's trial
    recipe: the demo model's trainable parameters are the simulated fp32 gradients' count."""
    from planner.simulation.simulate import simulate
    from sweeps.trial.prediction import planner_method
    from sweeps.trial.recipe import _apply_method, _load_model
    from sweeps.trial.types import TrialConfig

    config = TrialConfig(**changes)
    model = _load_model(str(demo.model_dir), config, torch.device("cpu"), "fp32", quantized=False)
    model = _apply_method(model, config)
    arch = resolve_model(str(demo.model_dir))
    method = planner_method(config, precision="fp32")
    sim = simulate(arch, Workload(seq_len=32, batch=1), method, recipe="trial")
    assert 4 * trained(model) == sim.phases["optimizer_step"]["gradients"]
