"""``vllm serve`` command lines for the models of a config (one per replica, GPUs and ports assigned), and the models
config that points at the resulting endpoints."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from schemas.config.models import EndpointSpec, ModelsConfig


@dataclass
class VllmLaunch:
    model: str
    replica: int
    port: int
    gpus: list[str]
    argv: list[str]
    env: dict[str, str]
    api_key_env: str | None

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        if self.api_key_env:  # vLLM reads VLLM_API_KEY; the shell expands it, the key is never written out
            env = f'{env} VLLM_API_KEY="${{{self.api_key_env}}}"'.strip()
        args = " ".join(shlex.quote(a) for a in self.argv)
        return f"{env} {args}".strip()


def plan_vllm(config: ModelsConfig, *, host: str = "127.0.0.1", bind: str = "0.0.0.0", gpus: list[str] | None = None,
              api_key_env: str | None = None) -> tuple[list[VllmLaunch], ModelsConfig]:
    """Launch lines for every model with a ``vllm:`` section and the config with their endpoints. GPUs are handed
    out in order, ``tensor_parallel_size`` per replica; without ``gpus`` no CUDA_VISIBLE_DEVICES is set."""
    launches: list[VllmLaunch] = []
    new = config.model_copy(deep=True)
    pool = list(gpus or [])
    used_ports: dict[int, str] = {}
    for name, spec in config.models.items():
        v = spec.vllm
        if v is None:
            continue
        endpoints = []
        for r in range(v.replicas):
            port = v.port + r
            if port in used_ports:
                raise ValueError(f"models.{name}.vllm: port {port} is already used by {used_ports[port]}; "
                                 "give each model its own port range")
            used_ports[port] = name
            ids: list[str] = []
            if gpus is not None:
                if len(pool) < v.tensor_parallel_size:
                    raise ValueError(f"not enough GPUs for {name} replica {r + 1}: need {v.tensor_parallel_size}, "
                                     f"{len(pool)} left of {','.join(gpus)}")
                ids, pool = pool[: v.tensor_parallel_size], pool[v.tensor_parallel_size :]
            argv = ["vllm", "serve", v.model, "--served-model-name", spec.request_name, "--host", bind,
                    "--port", str(port)]
            if v.tensor_parallel_size > 1:
                argv += ["--tensor-parallel-size", str(v.tensor_parallel_size)]
            argv += list(v.args)
            env = {"CUDA_VISIBLE_DEVICES": ",".join(ids)} if ids else {}
            launches.append(VllmLaunch(name, r, port, ids, argv, env, api_key_env))
            endpoints.append(EndpointSpec(base_url=f"http://{host}:{port}/v1", api_key_env=api_key_env))
        m = new.models[name]
        m.endpoints = endpoints
        m.embedded = None
    return launches, new
