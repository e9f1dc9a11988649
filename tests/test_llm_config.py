"""Models config, vLLM launch plan, the stub's own behaviour, and the `emoforge llm` commands that need no model."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from emoforge.cli import app
from schemas.config.models import ModelsConfigError, default_pairs, load_models_config, parse_models_config
from flows.llm.health import check_endpoints
from flows.llm.stub import StubConfig, StubServer, instance_from_schema
from flows.llm.vllm import plan_vllm

ROOT = Path(__file__).resolve().parent.parent


def test_default_config_is_two_different_embedded_models_with_cross_pairs():
    cfg = load_models_config(None)
    pair_models = {m for p in cfg.pairs for m in p}
    assert {cfg.models[m].embedded for m in pair_models} == {"smollm2-135m", "gemma3-270m"}
    assert any(a == b for a, b in cfg.pairs) and any(a != b for a, b in cfg.pairs)
    assert cfg.judges and all(j in cfg.models for j in cfg.judges)
    assert set(cfg.needs_embedded()) == set(cfg.models)


def test_default_pairs_same_then_cross():
    assert default_pairs(["a", "b", "c"]) == [("a", "a"), ("b", "b"), ("c", "c"), ("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize("example", ["configs/models.example.yaml", "configs/models.vllm.example.yaml"])
def test_example_configs_load(example):
    cfg = load_models_config(ROOT / example)
    assert cfg.pairs and cfg.judges


@pytest.mark.parametrize(
    "data, message",
    [
        ({"models": {}}, "at least one model"),
        ({"models": {"a": {}}}, "models.a: give endpoints"),
        ({"models": {"a": {"embedded": "llama-70b"}}}, "unknown embedded model 'llama-70b'"),
        ({"models": {"a": {"embedded": "smollm2-135m"}}, "pairs": [["a", "b"]]}, "pairs.0 .*unknown model 'b'|pairs\\[0\\]: unknown model 'b'"),
        ({"models": {"a": {"embedded": "smollm2-135m"}}, "judges": ["j"]}, "judges: unknown model 'j'"),
        ({"models": {"a": {"endpoints": [{"base_url": "gpu:8000"}]}}}, "base_url must start with http"),
        ({"models": {"a": {"endpoints": [{"base_url": "http://h/v1", "api_key_env": "sk-abc123-secret"}]}}},
         "api_key_env must be the NAME"),
        ({"models": {"a": {"embedded": "smollm2-135m", "sampling": {"temprature": 1}}}}, "unknown sampling keys"),
        ({"models": {"a": {"embedded": "smollm2-135m", "api_key": "x"}}}, "api_key: Extra inputs"),
    ],
)
def test_bad_config_is_a_clear_error(data, message):
    with pytest.raises(ModelsConfigError, match=message):
        parse_models_config(data, "test.yaml")


def test_bad_file_names_the_file(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("models: [unclosed")
    with pytest.raises(ModelsConfigError, match=f"{p} is not valid YAML"):
        load_models_config(p)
    with pytest.raises(ModelsConfigError, match="cannot read models config"):
        load_models_config(tmp_path / "absent.yaml")


def test_a_secret_pasted_as_env_name_is_not_echoed():
    secret = "sk-live-0123456789abcdefghij"
    with pytest.raises(ModelsConfigError) as ei:
        parse_models_config({"models": {"a": {"endpoints": [{"base_url": "http://h/v1", "api_key_env": secret}]}}})
    assert secret not in str(ei.value)


def test_vllm_plan_assigns_ports_gpus_and_endpoints():
    cfg = load_models_config(ROOT / "configs/models.vllm.example.yaml")
    launches, new = plan_vllm(cfg, host="gpu1", gpus=["0", "1", "2", "3"], api_key_env="VLLM_API_KEY")
    assert [(ln.model, ln.port, ln.gpus) for ln in launches] == [
        ("qwen2.5-7b", 8000, ["0"]), ("qwen2.5-7b", 8001, ["1"]), ("llama3.1-8b", 8010, ["2"]),
        ("judge-qwen2.5-14b", 8020, ["3"])]
    line = launches[0].shell()
    assert line.startswith('CUDA_VISIBLE_DEVICES=0 VLLM_API_KEY="${VLLM_API_KEY}" vllm serve Qwen/Qwen2.5-7B-Instruct')
    assert "--served-model-name qwen2.5-7b" in line and "--port 8000" in line
    assert [e.base_url for e in new.models["qwen2.5-7b"].endpoints] == ["http://gpu1:8000/v1", "http://gpu1:8001/v1"]
    assert new.without_endpoints() == []
    with pytest.raises(ValueError, match="not enough GPUs"):
        plan_vllm(cfg, gpus=["0", "1"])


def test_stub_json_matches_schema_with_refs():
    schema = {
        "$defs": {"Turn": {"type": "object", "properties": {"idx": {"type": "integer", "minimum": 0},
                                                             "fidelity": {"type": "integer", "minimum": 1, "maximum": 5}},
                           "required": ["idx", "fidelity"]}},
        "type": "object",
        "properties": {"turns": {"type": "array", "items": {"$ref": "#/$defs/Turn"}},
                       "verdict": {"enum": ["accept", "reject", "uncertain"]},
                       "safe": {"type": "boolean"}, "note": {"anyOf": [{"type": "string", "maxLength": 12}, {"type": "null"}]}},
        "required": ["turns", "verdict", "safe", "note"],
    }
    for seed in range(20):
        obj = instance_from_schema(schema, random.Random(seed), n_items=4)
        jsonschema.validate(obj, schema)
        assert len(obj["turns"]) == 4


def test_stub_faults_are_deterministic_by_seed():
    def outcomes(seed):
        with StubServer(StubConfig(seed=seed, p_500=0.3, p_length=0.2)) as s:
            res = []
            for i in range(30):
                req = urllib.request.Request(f"{s.url}/chat/completions", data=json.dumps(
                    {"model": "x", "messages": [{"role": "user", "content": f"m{i}"}]}).encode(),
                    headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req) as r:
                        res.append(json.loads(r.read())["choices"][0]["finish_reason"])
                except urllib.error.HTTPError as e:
                    res.append(e.code)
            with urllib.request.urlopen(f"{s.root}/stats") as r:
                assert json.loads(r.read())["requests"] == 30
            return res

    a, b, c = outcomes(1), outcomes(1), outcomes(2)
    assert a == b and a != c
    assert {500, "length", "stop"} <= set(a)


def test_health_check_reports_good_and_bad_endpoints():
    with StubServer(StubConfig(models=["good-model"])) as s:
        cfg = parse_models_config({"models": {
            "good": {"served_name": "good-model", "endpoints": [{"base_url": s.url}]},
            "dead": {"endpoints": [{"base_url": "http://127.0.0.1:9/v1"}]},
        }})
        res = {r.model: r for r in asyncio.run(check_endpoints(cfg, timeout=5))}
    assert res["good"].ok and res["good"].latency_s is not None
    assert not res["dead"].ok and "GET /models failed" in res["dead"].problem


def test_cli_vllm_command_and_check(tmp_path):
    runner = CliRunner()
    out_yaml = tmp_path / "models.yaml"
    r = runner.invoke(app, ["llm", "vllm-command", "--models", str(ROOT / "configs/models.vllm.example.yaml"),
                            "--host", "gpu1", "-o", str(out_yaml)])
    assert r.exit_code == 0, r.output
    assert r.output.count("vllm serve ") == 4
    written = load_models_config(out_yaml)
    assert written.models["llama3.1-8b"].endpoints[0].base_url == "http://gpu1:8010/v1"

    with StubServer(StubConfig()) as s:
        good = tmp_path / "good.yaml"
        good.write_text(yaml.safe_dump({"models": {"m": {"endpoints": [{"base_url": s.url}]}}}))
        r = runner.invoke(app, ["llm", "check", "--models", str(good), "--home", str(tmp_path / "h")])
        assert r.exit_code == 0, r.output
        s.configure(p_500=1.0)
        r = runner.invoke(app, ["llm", "check", "--models", str(good), "--home", str(tmp_path / "h")])
        assert r.exit_code == 1 and "FAIL" in r.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {a: {endpoints: [{base_url: nope}]}}")
    r = runner.invoke(app, ["llm", "check", "--models", str(bad), "--home", str(tmp_path / "h")])
    assert r.exit_code == 2 and "base_url must start with http" in r.output
