"""LLM infrastructure: models config (``config``), the OpenAI-protocol client pool (``client``, ``limiter``), the
durable call cache (``cache``), embedded llama.cpp servers (``embedded``, ``llamacpp_launcher``), vLLM launch
lines (``vllm``), endpoint health checks (``health``) and the fault-injecting stub server (``stub``).
See docs/llm.md."""
