"""Process (and outcome) reward models from Hugging Face ``transformers`` checkpoints, with the
step conventions of the common PRM families behind one batched interface.

``score_steps`` formats every (partial) candidate the way its family was trained, runs them
through the model in padded batches (``batch_size``; requests from concurrently running problems
are gathered into the same batches by a small async batcher), and reads one score in [0, 1] per
step at the family's step positions:

=================  ===========================================================================
family             format and score
=================  ===========================================================================
``qwen``           Qwen2.5-Math-PRM: chat [system, user question, assistant steps each followed
                   by ``<extra_0>``]; softmax of the 2-way head at each ``<extra_0>``, index 1.
``math_shepherd``  Math-Shepherd: ``"{question} Step 1: s1 ки\\nStep 2: s2 ки"``; at each ``ки``
                   softmax over the logits of ``+`` and ``-`` (the good/bad label tokens), P(+).
``rlhflow``        RLHFlow Llama3.1-8B-PRM: chat turns, user = question + " " + step 1 (then
                   each step), assistant = ``+``; P(+) vs ``-`` from the logits one position before
                   each assistant ``+``.
``skywork``        Skywork-o1-Open-PRM: ``BOS + question + "\\n"`` then each step followed by the
                   ``\\n`` step token; sigmoid of the value head at each step token (loaded as a
                   1-label token-classification head: unverified against Skywork's own package).
``orm``            Outcome RM (sequence classification, 1 label): chat [user question, assistant
                   solution]; sigmoid of the logit. Step scores score every prefix as a solution.
=================  ===========================================================================

``family=auto`` guesses from the model name. torch and transformers are optional: they are
imported only when a model is loaded (``pip install 'ttscale[prm]'``). The formatting and the
reading of label tokens are pure functions over a tokenizer object and per-position logits, so
they are tested without weights (tests/test_prm.py); tests/test_prm_hf.py loads tiny random
transformers checkpoints of each family's kind (``qwen``'s head is remote code: a tiny one is built
there too) through :func:`load_hf` and checks padding and score positions against a direct forward
pass. Code shipped with a checkpoint runs only with ``trust_remote_code=true``. A solution
whose encoding does not hold one step marker per step (a tokenizer that does not split the
family's marker) is a :class:`~ttscale.core.errors.ConfigError`, not a guess.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ttscale.core.errors import ConfigError
from ttscale.core.protocols import Engine, Verifier
from ttscale.core.registry import param
from ttscale.core.types import Candidate, Problem
from ttscale.verifiers.base import verifier

if TYPE_CHECKING:
    from ttscale.core.context import Context

Family = Literal["auto", "qwen", "math_shepherd", "rlhflow", "skywork", "orm"]
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

Forward = Callable[[list[list[int]], list[int] | None], list[Any]]
"""``forward(batch_ids, columns)``: per sequence, an array [T, C] of the model's outputs at every
position, restricted to vocabulary ``columns`` when given (causal LMs), else the head's outputs."""


@dataclass(frozen=True)
class Encoded:
    """One formatted sequence: its token ids, the positions to read, the output columns."""

    ids: list[int]
    positions: list[int]


def guess_family(model: str) -> str:
    m = model.lower()
    if "skywork" in m and "prm" in m:
        return "skywork"
    if "qwen" in m and "prm" in m:
        return "qwen"
    if "shepherd" in m:
        return "math_shepherd"
    if "rlhflow" in m or ("llama" in m and "prm" in m):
        return "rlhflow"
    if "reward" in m or "orm" in m or "rm" in m.split("-"):
        return "orm"
    raise ConfigError(f"verifier 'prm': cannot tell the family of {model!r}; pass family=qwen, math_shepherd, "
                      "rlhflow, skywork or orm")


def _ids(tok: Any, text: str, *, special: bool = False) -> list[int]:
    return list(tok.encode(text, add_special_tokens=special))


def _chat_ids(tok: Any, conv: Sequence[Mapping[str, str]], *, generation_prompt: bool) -> list[int]:
    """Token ids of a chat rendered by the tokenizer's template (transformers 5 returns a
    BatchEncoding where 4.x returned the list)."""
    out = tok.apply_chat_template(list(conv), tokenize=True, add_generation_prompt=generation_prompt)
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    ids = list(out)
    if ids and not isinstance(ids[0], int):  # a batch of one
        ids = list(ids[0])
    return [int(i) for i in ids]


def _last_id(tok: Any, text: str) -> int:
    ids = _ids(tok, text)
    if not ids:
        raise ConfigError(f"verifier 'prm': the tokenizer has no token for {text!r}")
    return ids[-1]


class PRMFormat:
    """A family's input format and score reading (see the module docstring)."""

    def __init__(self, family: str, tokenizer: Any) -> None:
        if family not in ("qwen", "math_shepherd", "rlhflow", "skywork", "orm"):
            raise ConfigError(f"verifier 'prm': unknown family {family!r}")
        self.family = family
        self.tok = tokenizer
        self.columns: list[int] | None = None
        if family == "qwen":
            self.sep = int(tokenizer.convert_tokens_to_ids("<extra_0>"))
        elif family == "math_shepherd":
            self.sep = _last_id(tokenizer, "ки")
            # the official example: encode("+ -")[1:] -> [good, bad] (after BOS)
            self.columns = [_last_id(tokenizer, "+"), _last_id(tokenizer, "-")]
        elif family == "rlhflow":
            self.columns = [_last_id(tokenizer, "+"), _last_id(tokenizer, "-")]
        elif family == "skywork":
            self.sep = _last_id(tokenizer, "\n")

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        tok = self.tok
        steps = [s.strip() for s in steps]
        if self.family == "qwen":
            msgs = [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": "".join(s + "<extra_0>" for s in steps)}]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            ids = _ids(tok, text)
            return Encoded(ids, [i for i, t in enumerate(ids) if t == self.sep])
        if self.family == "math_shepherd":
            body = "\n".join(f"Step {i + 1}: {s} ки" for i, s in enumerate(steps))
            ids = _ids(tok, f"{question} {body}", special=True)
            return Encoded(ids, [i for i, t in enumerate(ids) if t == self.sep])
        if self.family == "rlhflow":
            conv: list[dict[str, str]] = []
            positions = []
            for i, s in enumerate(steps):
                conv.append({"role": "user", "content": f"{question} {s}" if i == 0 else s})
                head = _chat_ids(tok, conv, generation_prompt=True)
                positions.append(len(head) - 1)  # the logits here predict the assistant's "+"
                conv.append({"role": "assistant", "content": "+"})
            ids = _chat_ids(tok, conv, generation_prompt=False) if conv else []
            return Encoded(ids, positions)
        if self.family == "skywork":
            bos = getattr(tok, "bos_token", None) or ""
            ids = _ids(tok, bos + question + "\n")
            positions = []
            for s in steps:
                ids += _ids(tok, s)
                positions.append(len(ids))
                ids.append(self.sep)
            return Encoded(ids, positions)
        msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": "\n\n".join(steps)}]
        ids = _chat_ids(tok, msgs, generation_prompt=False)
        return Encoded(ids, [len(ids) - 1])

    def read(self, out: Any, positions: Sequence[int]) -> list[float]:
        """Scores in [0, 1] at ``positions`` from one sequence's outputs [T, C]."""
        res = []
        for p in positions:
            row = [float(x) for x in _row(out, p)]
            if self.family in ("skywork", "orm"):
                res.append(_sigmoid(row[0]))
            elif self.family == "qwen":
                res.append(_softmax(row)[1])
            else:  # columns [good, bad]
                res.append(_softmax(row[:2])[0])
        return res


def _row(out: Any, p: int) -> Sequence[float]:
    r = out[p]
    return r if hasattr(r, "__len__") else [r]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def _softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


@dataclass(frozen=True)
class PRMParams:
    model: str = param("Qwen/Qwen2.5-Math-PRM-7B", "Hugging Face model id or local path")
    family: Family = param("auto", "step convention: auto, qwen, math_shepherd, rlhflow, skywork, orm")
    device: str = param("auto", "torch device (auto = cuda if available, else cpu)")
    dtype: str = param("auto", "torch dtype: auto (bfloat16 on GPU, float32 on CPU), float16, bfloat16, float32")
    batch_size: int = param(8, "sequences per forward pass")
    max_length: int = param(4096, "sequences are cut to their last max_length tokens")
    wait_ms: float = param(5.0, "how long the batcher waits to fill a batch from concurrent problems")
    trust_remote_code: bool = param(
        False, "run Python code shipped with the checkpoint (needed by e.g. Qwen2.5-Math-PRM); only for "
        "checkpoints you trust")


class PRMVerifier(Verifier):
    """A PRM/ORM with a family format and a batched forward function (module docstring)."""

    name = "prm"

    def __init__(self, fmt: PRMFormat, forward: Forward, *, batch_size: int = 8, max_length: int = 4096,
                 wait_ms: float = 5.0) -> None:
        self.fmt = fmt
        self.forward = forward
        self.batch_size = max(1, batch_size)
        self.max_length = max_length
        self.wait_s = wait_ms / 1000.0
        self._queue: list[tuple[Encoded, asyncio.Future[list[float]]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.forward_calls = 0

    def _clip(self, e: Encoded) -> Encoded:
        cut = max(0, len(e.ids) - self.max_length)
        if not cut:
            return e
        return Encoded(e.ids[cut:], [p - cut for p in e.positions if p >= cut])

    async def _run(self, items: list[Encoded]) -> list[list[float]]:
        """Score encoded sequences through the shared batcher."""
        loop = asyncio.get_running_loop()
        futs = []
        for e in items:
            f: asyncio.Future[list[float]] = loop.create_future()
            self._queue.append((self._clip(e), f))
            futs.append(f)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return list(await asyncio.gather(*futs))

    async def _drain(self) -> None:
        while self._queue:
            if len(self._queue) < self.batch_size and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
            try:
                outs = await asyncio.to_thread(self.forward, [e.ids for e, _ in batch], self.fmt.columns)
                self.forward_calls += 1
                for (e, f), o in zip(batch, outs, strict=True):
                    if not f.done():
                        f.set_result(self.fmt.read(o, e.positions))
            except Exception as ex:  # hand the error to every waiter of this batch
                for _, f in batch:
                    if not f.done():
                        f.set_exception(ex)

    async def score_steps(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[list[float]]:
        q = problem.question
        if self.fmt.family == "orm":
            flat = [(i, self.fmt.encode(q, c.steps[: k + 1])) for i, c in enumerate(candidates)
                    for k in range(len(c.steps))]
            got = await self._run([e for _, e in flat])
            ctx.meter.charge_verifier(sum(len(e.ids) for _, e in flat), 0, calls=len(flat))
            out: list[list[float]] = [[] for _ in candidates]
            for (i, _), s in zip(flat, got, strict=True):
                out[i].append(s[0])
            return out
        steps = [c.steps or ((c.text,) if c.text.strip() else ()) for c in candidates]
        enc = [self.fmt.encode(q, s) for s in steps]
        for e, s in zip(enc, steps, strict=True):
            if len(e.positions) != len(s):
                raise ConfigError(
                    f"verifier 'prm' ({self.fmt.family}): the encoded solution has {len(e.positions)} step "
                    f"positions for {len(s)} steps; the tokenizer does not split the family's step marker as "
                    "the family expects (wrong family for this checkpoint?)")
        res = await self._run(enc)
        ctx.meter.charge_verifier(sum(len(e.ids) for e in enc), 0, calls=len(enc))
        # steps cut off by max_length (from the left) take the first score that survived
        return [([r[0]] * (len(s) - len(r)) + r) if r and len(r) < len(s) else r for s, r in zip(steps, res, strict=True)]

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[float]:
        if self.fmt.family == "orm":
            enc = [self.fmt.encode(problem.question, (c.text,)) for c in candidates]
            got = await self._run(enc)
            ctx.meter.charge_verifier(sum(len(e.ids) for e in enc), 0, calls=len(enc))
            return [s[0] if s else 0.0 for s in got]
        return [s[-1] if s else 0.0 for s in await self.score_steps(problem, candidates, ctx)]


def load_hf(p: PRMParams) -> tuple[PRMFormat, Forward]:
    """Load tokenizer and model with transformers (imported here); the batched forward function."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ConfigError("verifier 'prm' needs torch and transformers: pip install 'ttscale[prm]' "
                          "(or pip install torch transformers)") from e
    family = guess_family(p.model) if p.family == "auto" else p.family
    device = p.device if p.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if p.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, p.dtype, None)
        if dtype is None:
            raise ConfigError(f"verifier 'prm': unknown dtype {p.dtype!r}")
    cls = {"qwen": transformers.AutoModel, "math_shepherd": transformers.AutoModelForCausalLM,
           "rlhflow": transformers.AutoModelForCausalLM, "skywork": transformers.AutoModelForTokenClassification,
           "orm": transformers.AutoModelForSequenceClassification}[family]
    # transformers >= 4.56 calls it dtype (torch_dtype is deprecated there)
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw: dict[str, Any] = {"trust_remote_code": p.trust_remote_code,
                          ("dtype" if (major, minor) >= (4, 56) else "torch_dtype"): dtype}
    if family == "skywork":
        kw["num_labels"] = 1
    try:
        tok = transformers.AutoTokenizer.from_pretrained(p.model, trust_remote_code=p.trust_remote_code)
        model = cls.from_pretrained(p.model, **kw).to(device).eval()
    except OSError as e:
        raise ConfigError(f"verifier 'prm': cannot load {p.model!r}: {e}") from e
    except ValueError as e:
        if p.trust_remote_code or "trust_remote_code" not in str(e):
            raise
        raise ConfigError(
            f"verifier 'prm': {p.model!r} ships its own model code, which is not run unless asked: if you "
            "trust this checkpoint, pass the verifier parameter trust_remote_code=true (CLI: --verifier-param "
            "trust_remote_code=true; recipe: verifiers: {prm: {trust_remote_code: true}})") from e
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    vocab = int(model.get_input_embeddings().num_embeddings)

    def forward(batch: list[list[int]], columns: list[int] | None) -> list[Any]:
        width = max(len(x) for x in batch)
        fill = pad
        if family == "orm":
            # sequence classification pools at the last token that is not pad_token_id: pad with an
            # id no sequence holds (tokenizers often pad with EOS, which ends the chat), so every
            # sequence is read at its own last token, with or without a pad token
            used = {t for x in batch for t in x}
            fill = next(i for i in range(vocab - 1, -1, -1) if i not in used)
            model.config.pad_token_id = fill
        ids = torch.full((len(batch), width), fill, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):  # right padding: positions stay as encoded
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
        logits = out[0] if isinstance(out, tuple) else out.logits
        if family == "orm":  # [B, 1]: one score per sequence, read at its last position
            return [[[float(logits[i, 0])]] * len(x) for i, x in enumerate(batch)]
        if columns is not None:
            logits = logits[..., columns]
        logits = logits.float().cpu().numpy()
        return [logits[i, : len(x)] for i, x in enumerate(batch)]

    return PRMFormat(family, tok), forward


@verifier("prm", PRMParams, "a Hugging Face PRM/ORM (Qwen2.5-Math-PRM, Math-Shepherd, RLHFlow, Skywork), batched")
def make_prm(engine: Engine, params: PRMParams) -> PRMVerifier:
    fmt, fwd = load_hf(params)
    return PRMVerifier(fmt, fwd, batch_size=params.batch_size, max_length=params.max_length, wait_ms=params.wait_ms)
