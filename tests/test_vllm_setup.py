"""The vLLM engines' setup and bad input, without vLLM (the main suite): weights folders, the model
config's parameter count, the missing-package error, and a server without /tokenize."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from ttscale.core.errors import ConfigError, EngineError, ModelFileError
from ttscale.core.plugins import make_engine
from ttscale.core.types import GenerationRequest
from ttscale.engines.hf_weights import check_hf_folder, hf_model_dir, params_from_config
from ttscale.engines.openai import OpenAIParams
from ttscale.engines.openai_tokens import OpenAITokenIdEngine, server_root

from openai_stub_server import start_stub_server

NO_VLLM = importlib.util.find_spec("vllm") is None


def test_folder_checks_and_hub_names(tmp_path):
    with pytest.raises(ModelFileError, match=r"no config\.json"):
        check_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"has no tokenizer .*tokenizer=PATH"):
        hf_model_dir(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{}")
    assert hf_model_dir(str(tmp_path)) == str(tmp_path)
    assert hf_model_dir("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ModelFileError, match="does not exist"):
        hf_model_dir(str(tmp_path / "missing.gguf"))


def test_params_from_config(tmp_path):
    cfg = {"hidden_size": 896, "num_hidden_layers": 24, "intermediate_size": 4864, "vocab_size": 151936,
           "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    # Qwen2.5-0.5B: 494M parameters (its model card), biases aside
    assert params_from_config(str(tmp_path)) == pytest.approx(4.94e8, rel=0.01)
    assert params_from_config(str(tmp_path / "nothing")) is None


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_missing_vllm_names_the_pip_command():
    with pytest.raises(ConfigError, match=r"pip install 'ttscale\[vllm\]'"):
        make_engine("vllm", "smollm2-135m")


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_cli_without_vllm_exits_2_with_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ttscale.cli", "run", "--engine", "vllm", "--model", "smollm2-135m",
                        "--limit", "1", "--out", str(tmp_path / "r.jsonl"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    err = " ".join(r.stderr.split())  # rich wraps long lines
    assert r.returncode == 2
    assert err.startswith("error:") and "pip install 'ttscale[vllm]'" in err and "Traceback" not in err


def test_server_root():
    assert server_root("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert server_root("http://h:1/api") == "http://h:1/api"


async def test_server_without_tokenize_is_a_clear_error():
    with start_stub_server({"*": ["a b c"]}) as (url, _control):
        eng = OpenAITokenIdEngine("stub-model", OpenAIParams(base_url=url, max_retries=0))
        try:
            with pytest.raises(EngineError, match=r"no /tokenize endpoint .*token_ids=false"):
                await eng.generate(GenerationRequest(messages=({"role": "user", "content": "hi"},)))
        finally:
            await eng.aclose()
    assert make_engine("openai", "m", {"token_ids": True}).supports_token_ids
