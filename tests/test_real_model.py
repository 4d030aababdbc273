"""A real pretrained model end to end (issue 15): SmolLM2-135M-Instruct, converted once from its PyPI GGUF, trains with
LoRA and 4-bit QLoRA on the arithmetic task, with rewards from Math-Verify on its real completions. Also the
conversion cache: reused, rebuilt when damaged, and the missing extra named.

The steps are short (2 prompts x 2 samples x 12 tokens) so the whole file stays within a few minutes on 2 cores;
longer runs are the real-model tutorial's and `bench/`'s."""
import json, math, os, shutil, warnings
from pathlib import Path
import pytest
import torch

from flowrl_nb.config import FlowRLConfig
from flowrl_nb.math_reward import VERDICTS, MathReward
from flowrl_nb.rewards import completion_text
from flowrl_nb.smollm2 import MANIFEST, MODEL_NAME, check_converted, smollm2_path
import flowrl_nb.smollm2 as smol

os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def _lora_state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if 'lora_' in k}


def brevity(completions, **kwargs):
    "A TRL-style second reward, tiny next to the answer's: it makes the rewards of a group differ, so GRPO always has a gradient."
    return [-len(completion_text(c)) / 1000 for c in completions]


@pytest.fixture(autouse=True)
def two_threads():
    "Two torch threads here, and the caller's count back afterwards: later tests compare numbers made with one thread."
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _one_step(tmp_path, **kw):
    from flowrl_nb.task import task_from_config
    from flowrl_nb.trainer import Trainer
    cfg = FlowRLConfig(model_name_or_path=MODEL_NAME, task='arith', prompts_per_step=2, num_generations=2,
                       num_mini_batches=1, max_completion_length=12, max_prompt_length=96, max_steps=1, lora_r=4,
                       lora_alpha=8, lora_target_modules=['q_proj', 'v_proj'], learning_rate=1e-3, temperature=0.7,
                       save_steps=0, coverage_steps=0, output_dir=str(tmp_path / 'run'), **kw)
    tr = Trainer(cfg, reward_funcs=[task_from_config(cfg).reward, brevity])  # Math-Verify on the final number + brevity
    before = _lora_state(tr.model)
    m = tr.train_step(last=True)
    return tr, before, m


@pytest.mark.parametrize('algorithm', ['flowrl', 'grpo'])
def test_one_step_on_smollm2_with_lora(tmp_path, algorithm):
    "One step: finite loss, changed adapter weights, and rewards Math-Verify gave to the model's own completions."
    tr, before, m = _one_step(tmp_path, algorithm=algorithm)
    assert type(tr.model.get_base_model()).__name__ == 'LlamaForCausalLM'
    assert sum(p.numel() for p in tr.model.get_base_model().parameters()) > 130e6  # the real 134.5 M model, not the toy
    assert math.isfinite(m['actor/final_loss']), m
    after = _lora_state(tr.model)
    assert before.keys() == after.keys() and len(before) > 0
    assert any(not torch.equal(before[k], after[k]) for k in before), 'no LoRA weight changed'
    fn = tr.rewards.fns[0]
    assert isinstance(fn, MathReward) and fn.answer_format == 'last_number'
    verdicts = fn.last_verdicts
    assert len(verdicts) == 4 and all(v.status in VERDICTS for v in verdicts)
    batch = tr.last_batch
    assert len(batch['completions']) == 4 and all(isinstance(c, str) for c in batch['completions'])
    assert any(c.strip() for c in batch['completions'])  # real text, decoded from the model's samples
    want = [(1.0 if v.status == 'correct' else 0.0) + b for v, b in zip(verdicts, brevity(batch['completions']))]
    assert batch['rewards'] == pytest.approx(want)  # the answer's reward is Math-Verify's verdict on the completion
    if algorithm == 'flowrl': assert 'actor/log_z' in m and tr.z_head is not None


def test_one_qlora_step_on_smollm2(tmp_path):
    "4-bit QLoRA (bitsandbytes NF4 base, fp32 adapters) trains on CPU too."
    pytest.importorskip('bitsandbytes')
    tr, before, m = _one_step(tmp_path, algorithm='flowrl', quantization='4bit')
    import bitsandbytes as bnb
    assert any(isinstance(mod, bnb.nn.Linear4bit) for mod in tr.model.modules())
    assert math.isfinite(m['actor/final_loss'])
    after = _lora_state(tr.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- the conversion cache

def test_second_load_reuses_the_cache(monkeypatch):
    "Once converted, the folder is checked and returned: no conversion runs."
    first = smollm2_path()
    monkeypatch.setattr(smol, 'convert', lambda *a, **k: pytest.fail('converted again'))
    assert smollm2_path() == first and check_converted(first) is None


def test_damaged_or_half_written_cache_is_rebuilt(tmp_path, monkeypatch):
    "A changed file fails the manifest check and is converted again, with a warning; so is a folder with no manifest."
    good = smollm2_path()
    gguf = smol.gguf_path()  # reuse the GGUF already fetched (an installed package or the default cache): no download
    cache = tmp_path / 'cache'
    monkeypatch.setenv('FLOWRL_NB_CACHE', str(cache))
    (cache / 'downloads').mkdir(parents=True)
    os.symlink(gguf, cache / 'downloads' / smol.GGUF_FILE)
    target = cache / 'models' / MODEL_NAME
    shutil.copytree(good, target)
    cfg = json.loads((target / 'tokenizer_config.json').read_text()); cfg['model_max_length'] = 7
    (target / 'tokenizer_config.json').write_text(json.dumps(cfg))  # a changed file
    with pytest.warns(UserWarning, match='is damaged .*tokenizer_config.json'):
        assert smollm2_path(progress=False) == target
    assert check_converted(target) is None
    assert json.loads((target / 'tokenizer_config.json').read_text()).get('model_max_length') != 7
    (target / MANIFEST).unlink()  # as if the conversion had died before its last write
    (cache / 'models' / f'.{MODEL_NAME}.dead.tmp').mkdir()  # and left its temporary folder behind
    with pytest.warns(UserWarning, match='did not finish'):
        smollm2_path(progress=False)
    assert check_converted(target) is None and not list((cache / 'models').glob('*.tmp'))


def test_missing_extra_names_it(tmp_path, monkeypatch):
    "Without gguf, converting says which extra to install."
    monkeypatch.setenv('FLOWRL_NB_CACHE', str(tmp_path / 'empty'))
    real = smol.importlib.util.find_spec
    monkeypatch.setattr(smol.importlib.util, 'find_spec', lambda name, *a: None if name == 'gguf' else real(name, *a))
    with pytest.raises(ImportError, match=r'flowrl_nb\[smol\]'):
        smollm2_path(progress=False)
