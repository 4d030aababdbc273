"""flowrl_nb.tiny: the committed tiny model loads like a hub model, works with LoRA and 4-bit on CPU, and is
rebuilt bit for bit from its seed (the last test is the SLOW one: a full ~45-60 s pretraining)."""
import json, warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from flowrl_nb.task import DigitSumTask
from flowrl_nb.tiny import (CorpusSpec, all_answer_logprobs, answer_logprobs, build_tiny_model, build_tokenizer,
                            corpus_distribution, sample_corpus, tiny_model_path, unknown_chars)

LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']


@pytest.fixture(scope='module')
def tok():
    return AutoTokenizer.from_pretrained(tiny_model_path())


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_files_and_build_info():
    path = tiny_model_path()
    assert {p.name for p in path.iterdir()} >= {'model.safetensors', 'config.json', 'generation_config.json',
                                                'tokenizer.json', 'tokenizer_config.json', 'build_info.json'}
    assert path.joinpath('model.safetensors').stat().st_size < 12e6
    info = json.loads(path.joinpath('build_info.json').read_text())
    assert info['seed'] == 0 and info['cpu_capability'] == 'AVX2'
    assert info['reference_exact']['well_formed'] > 0.95
    assert 0.10 <= info['reference_exact']['correct'] <= 0.30
    assert abs(info['reference_sampled']['correct'] - info['reference_exact']['correct']) < 0.04  # 2,000 samples


def test_tokenizer_round_trip(tok):
    task = DigitSumTask()
    assert len(tok) <= 20 and tok.bos_token_id is None
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ('<pad>', '<eos>', '<unk>')
    for t in task.targets:
        for text in [task.prompt(t)] + task.correct_completions(t):
            ids = tok(text).input_ids
            assert len(ids) == len(text) and tok.unk_token_id not in ids  # one token per character, no EOS added
            assert tok.decode(ids) == text
    # transformers 5 loads any qwen2 checkpoint's tokenizer as Qwen2Tokenizer: built with that class, nothing changes
    built = build_tokenizer()
    assert type(tok).__name__ == type(built).__name__ == 'Qwen2Tokenizer'
    for text in ['S=13:094', 'S=1?3 ', '<eos>S=5:<pad>', '=:S9', 'é\n\t']:
        assert tok(text).input_ids == built(text).input_ids
    assert tok('S=1?3 ').input_ids == tok('S=13').input_ids  # unknown characters vanish (no <unk> in Qwen's BPE) ...
    assert unknown_chars(tok, 'S=1?3 ') == {'?', ' '}         # ... which is why unknown_chars exists
    for side in ('left', 'right'):
        tok.padding_side = side
        enc = tok(['S=5:', 'S=13:'], padding=True, return_tensors='pt')
        assert enc.attention_mask[0].tolist() == ([0, 1, 1, 1, 1] if side == 'left' else [1, 1, 1, 1, 0])


def test_model_is_a_qwen2_with_a_non_uniform_prior(tok):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path()).eval()
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.tie_word_embeddings) == \
        ('qwen2', 256, 4, 2, True)
    assert model.generation_config.eos_token_id == tok.eos_token_id and model.generation_config.pad_token_id == tok.pad_token_id
    lps = all_answer_logprobs(model, tok, 'S=13:', 3)
    assert len(lps) == 1110
    ys = ['94', '373', '607', '9', '123']
    assert torch.allclose(answer_logprobs(model, tok, 'S=13:', ys), torch.tensor([lps[y] for y in ys]), atol=1e-4)
    task = DigitSumTask()
    p = torch.tensor([lps[y] for y in task.correct_completions(13)]).exp()
    assert p.max() / p.min() > 50  # clearly prefers some correct answers over others
    # <unk> (never in the corpus) gets almost no probability right after a prompt
    with torch.no_grad():
        nxt = model(**tok(['S=13:'], return_tensors='pt')).logits[0, -1].softmax(-1)
    assert nxt[tok.unk_token_id] < 1e-3 and nxt[tok.pad_token_id] < 1e-3


def test_corpus_comes_from_the_task():
    task, spec = DigitSumTask(min_target=3, max_target=9, max_digits=2), CorpusSpec(length_weights=(0.5, 0.5))
    corpus = sample_corpus(task, 4000, seed=1, spec=spec)
    assert {p for p, _ in corpus} == {task.prompt(t) for t in task.targets}
    assert all(task.is_well_formed(y) for _, y in corpus)
    dist = corpus_distribution(task, spec, 5)
    assert abs(sum(dist.values()) - 1) < 1e-9 and len(dist) == 110
    freq = sum(y == '14' for p, y in corpus if p == 'S=5:') / sum(p == 'S=5:' for p, _ in corpus)
    assert abs(freq - dist['14']) < 0.05
    with pytest.raises(ValueError, match='length_weights must be 2 positive weights'):
        sample_corpus(task, 1, spec=CorpusSpec())


def test_lora_on_a_4bit_base_on_cpu(tok):
    pytest.importorskip('bitsandbytes')
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = AutoModelForCausalLM.from_pretrained(tiny_model_path(), quantization_config=q, device_map='cpu')
        four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(four_bit) == 4 * 7  # every q/k/v/o/gate/up/down projection is 4-bit (dims are multiples of 64)
        for m in four_bit: m.support_avx512bf16_for_cpu = False  # see the notebook: keeps train-after-generate working
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, task_type='CAUSAL_LM'))
        batch = tok(['S=13:94'], return_tensors='pt')
        for _ in range(2):  # train, generate, train again: the RL loop's order
            model.train()
            model(**batch, labels=batch.input_ids).loss.backward()
            model.eval(); tok.padding_side = 'left'
            enc = tok(['S=5:', 'S=13:'], return_tensors='pt', padding=True)
            model.generate(**enc, do_sample=True, max_new_tokens=4, pad_token_id=tok.pad_token_id)
        grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
        assert len(grads) == 2 * 4 * 7 and all(g is not None for g in grads)
        ref = AutoModelForCausalLM.from_pretrained(tiny_model_path()).eval()
        with torch.no_grad(), model.disable_adapter():
            diff = (model(**batch).logits.log_softmax(-1) - ref(**batch).logits.log_softmax(-1)).abs().max()
    assert diff < 0.5  # NF4 rounding moves log-probs a little, not a lot


def test_slow_rebuild_is_byte_identical(tmp_path):
    """SLOW (~45-60 s on a free core): pretrain from seed 0 again and compare with the committed files byte for byte."""
    info = build_tiny_model(tmp_path / 'tiny', seed=0, n_eval_samples=200)
    for name in ('model.safetensors', 'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'):
        assert (tmp_path / 'tiny' / name).read_bytes() == (tiny_model_path() / name).read_bytes(), \
            f'{name} differs from data/tiny-digits: rebuild with nbs/06c_tiny.ipynb and commit, or find the nondeterminism'
    committed = json.loads((tiny_model_path() / 'build_info.json').read_text())
    assert info['loss_curve'] == committed['loss_curve']
    # the reference's exact answer statistics are measured on the (identical) weights by the coverage module's tree
    # walk; its float summation order may change between versions, so they agree to 1e-6, not bit for bit
    assert info['reference_exact'].keys() == committed['reference_exact'].keys()
    for k, v in committed['reference_exact'].items():
        assert info['reference_exact'][k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
