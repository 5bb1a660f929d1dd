"""The PRM verifier through real transformers models: tiny random Llama checkpoints built here
(no hub), one per family convention, loaded by ``load_hf`` as a user's checkpoint would be.

Random weights give meaningless scores, so the tests check what does not depend on them: one
score per step in (0, 1), the same scores alone as in a padded batch, and agreement with a
direct forward pass read at the family's positions. The ``qwen`` family's head is remote code: a
tiny checkpoint with its own modeling file is built too, and loads only with ``trust_remote_code``.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from ttscale.core.types import Candidate, Problem  # noqa: E402
from ttscale.engines.scripted import ScriptedEngine  # noqa: E402
from ttscale.verifiers.math_answers import MathAnswers  # noqa: E402
from ttscale.verifiers.prm import PRMParams, make_prm  # noqa: E402

from helpers import make_ctx  # noqa: E402

WORDS = ("what is 2 + 3 ? Step 1 : 2 add the numbers 5 so answer - ки x y z , . boxed { } = "
         "user assistant <|start|> <|end|>").split()
TEMPLATE = ("{% for m in messages %}<|start|> {{ m['role'] }} {{ m['content'] }} <|end|> {% endfor %}"
            "{% if add_generation_prompt %}<|start|> assistant {% endif %}")
PROBLEM = Problem(id="p1", prompt="what is 2 + 3 ?", answer="5")
STEPS = [("add the numbers", "so answer 5"), ("x y z",), ("add the numbers", "x , y", "boxed { 5 }")]


def build(path, head: str, *, pad: bool) -> str:
    """A word-level tokenizer (with or without a pad token) and a 2-layer random Llama."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **({"<pad>": 3} if pad else {})}
    for w in (*WORDS, "\n"):
        vocab.setdefault(w, len(vocab))
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    pre = tokenizers.pre_tokenizers
    tk.pre_tokenizer = pre.Sequence([pre.Split(pattern="\n", behavior="isolated"),
                                     pre.Split(pattern=" ", behavior="removed")])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                               eos_token="</s>", **({"pad_token": "<pad>"} if pad else {}))
    tok.chat_template = TEMPLATE
    cfg = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=vocab.get("<pad>"), num_labels=1)
    torch.manual_seed(0)
    cls = {"causal": transformers.LlamaForCausalLM, "token": transformers.LlamaForTokenClassification,
           "seq": transformers.LlamaForSequenceClassification}[head]
    cls(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


CASES = [("math_shepherd", "causal", True), ("rlhflow", "causal", False), ("skywork", "token", True),
         ("orm", "seq", False), ("orm", "seq", True)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm")
    return {(f, p): build(root / f"{f}-{p}", h, pad=p) for f, h, p in CASES}


def cands():
    return [Candidate(text="\n\n".join(s), steps=s, id=i) for i, s in enumerate(STEPS)]


@pytest.mark.parametrize(("family", "head", "pad"), CASES)
async def test_each_family_scores_every_step_the_same_alone_and_batched(checkpoints, family, head, pad):
    v = make_prm(None, PRMParams(model=checkpoints[(family, pad)], family=family, device="cpu",
                                 batch_size=4, wait_ms=0))
    ctx = make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers(), problem=PROBLEM)
    batched = await v.score_steps(PROBLEM, cands(), ctx)
    assert [len(s) for s in batched] == [len(s) for s in STEPS]
    assert all(0.0 < x < 1.0 for s in batched for x in s)
    for c, got in zip(cands(), batched, strict=True):
        (alone,) = await v.score_steps(PROBLEM, [c], ctx)
        assert alone == pytest.approx(got, abs=1e-5)  # right padding leaves every position as encoded
    assert await v.score(PROBLEM, cands(), ctx) == pytest.approx([s[-1] for s in batched], abs=1e-5)
    assert ctx.meter.verifier_prompt_tokens > 0


async def test_math_shepherd_reads_p_plus_at_each_step_tag(checkpoints):
    path = checkpoints[("math_shepherd", True)]
    v = make_prm(None, PRMParams(model=path, family="math_shepherd", device="cpu", wait_ms=0))
    ctx = make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers(), problem=PROBLEM)
    (got,) = await v.score_steps(PROBLEM, cands()[2:], ctx)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    text = "what is 2 + 3 ? " + "\n".join(f"Step {i + 1}: {s} ки" for i, s in enumerate(STEPS[2]))
    ids = tok.encode(text, add_special_tokens=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    tag, plus, minus = (tok.convert_tokens_to_ids(t) for t in ("ки", "+", "-"))
    want = []
    for pos in (i for i, t in enumerate(ids) if t == tag):
        a, b = float(logits[pos, plus]), float(logits[pos, minus])
        want.append(1 / (1 + math.exp(b - a)))
    assert len(want) == 3 and got == pytest.approx(want, abs=1e-5)


async def test_orm_without_pad_token_reads_each_sequence_at_its_last_token(checkpoints):
    path = checkpoints[("orm", False)]
    v = make_prm(None, PRMParams(model=path, family="orm", device="cpu", batch_size=8, wait_ms=0))
    ctx = make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers(), problem=PROBLEM)
    got = await v.score(PROBLEM, cands(), ctx)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    want = []
    for s in STEPS:
        msgs = [{"role": "user", "content": PROBLEM.prompt}, {"role": "assistant", "content": "\n\n".join(s)}]
        text = tok.apply_chat_template(msgs, tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)
        model.config.pad_token_id = len(tok)  # not in the sequence: pooled at its last token
        with torch.no_grad():
            want.append(1 / (1 + math.exp(-float(model(torch.tensor([ids])).logits[0, 0]))))
    assert got == pytest.approx(want, abs=1e-5)


async def test_step_markers_that_do_not_match_the_steps_are_an_error(checkpoints):
    from ttscale.core.errors import ConfigError

    v = make_prm(None, PRMParams(model=checkpoints[("math_shepherd", True)], family="math_shepherd",
                                 device="cpu", wait_ms=0))
    ctx = make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers(), problem=PROBLEM)
    odd = Candidate(text="x ки y", steps=("x ки y",), id=0)  # the step tag inside a step: 2 tags, 1 step
    with pytest.raises(ConfigError, match="2 step positions for 1 steps"):
        await v.score_steps(PROBLEM, [odd], ctx)


REMOTE_CODE = """
import torch
from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel


class TinyPRMConfig(LlamaConfig):
    model_type = "ttscale_tiny_prm"


class TinyPRMModel(LlamaPreTrainedModel):
    config_class = TinyPRMConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = torch.nn.Linear(config.hidden_size, 2)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
"""


def build_remote_code_qwen(path) -> str:
    """A Qwen2.5-Math-PRM-like checkpoint: ``<extra_0>`` step separators and a 2-way head whose
    class lives in the checkpoint's own ``modeling_tinyprm.py`` (``auto_map``), as on the hub."""
    import importlib.util
    import json

    path.mkdir(parents=True, exist_ok=True)
    (path / "modeling_tinyprm.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("ttscale_test_modeling_tinyprm", path / "modeling_tinyprm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for w in (*WORDS, "system", "\n"):
        vocab.setdefault(w, len(vocab))
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    pre = tokenizers.pre_tokenizers
    tk.pre_tokenizer = pre.Sequence([pre.Split(pattern="\n", behavior="isolated"),
                                     pre.Split(pattern=" ", behavior="removed")])
    tk.add_special_tokens(["<extra_0>"])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                               eos_token="</s>", pad_token="<pad>")
    tok.chat_template = TEMPLATE
    cfg = mod.TinyPRMConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                            bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    mod.TinyPRMModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    conf = json.loads((path / "config.json").read_text())
    conf["auto_map"] = {"AutoConfig": "modeling_tinyprm.TinyPRMConfig", "AutoModel": "modeling_tinyprm.TinyPRMModel"}
    (path / "config.json").write_text(json.dumps(conf))
    return str(path)


async def test_checkpoint_with_its_own_code_loads_only_with_trust_remote_code(tmp_path):
    from ttscale.core.errors import ConfigError

    path = build_remote_code_qwen(tmp_path / "qwen-remote")
    with pytest.raises(ConfigError, match=r"ships its own model code.*trust_remote_code=true"):
        make_prm(None, PRMParams(model=path, family="qwen", device="cpu", wait_ms=0))
    v = make_prm(None, PRMParams(model=path, family="qwen", device="cpu", wait_ms=0, trust_remote_code=True))
    ctx = make_ctx(ScriptedEngine({"p1": ["x"]}), MathAnswers(), problem=PROBLEM)
    got = await v.score_steps(PROBLEM, cands(), ctx)
    assert [len(s) for s in got] == [len(s) for s in STEPS]
    assert all(0.0 < x < 1.0 for s in got for x in s)
    (alone,) = await v.score_steps(PROBLEM, cands()[2:], ctx)
    assert alone == pytest.approx(got[2], abs=1e-5)
