"""Run one llama.cpp server (xllamacpp) in this process until SIGTERM/SIGINT or until the parent process dies.

xllamacpp has no command-line entry point; ``embedded.py`` starts this module in its own subprocess so that the
server can be stopped cleanly (and is never left behind: it exits when its parent goes away, even after kill -9).

    python -m flows.llm.llamacpp_launcher --model FILE.gguf --port 8081 --alias smollm2-135m --parallel 4
    python -m flows.llm.llamacpp_launcher ... --chat-template-jinja "{% for m in messages %}{{ m['content'] }}{% endfor %}"
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import xllamacpp as xlc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--alias", required=True, help="model name the server reports and accepts")
    ap.add_argument("--parallel", type=int, default=4, help="parallel slots (continuous batching)")
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    tmpl = ap.add_mutually_exclusive_group()
    tmpl.add_argument("--chat-template", default=None,
                      help="llama.cpp built-in template name (applied with use_jinja=False); default: the GGUF's own")
    tmpl.add_argument("--chat-template-jinja", default=None,
                      help="Jinja source of the chat template (applied with use_jinja=True), e.g. a raw pass-through")
    ap.add_argument("--parent-pid", type=int, default=os.getppid())
    ns = ap.parse_args(argv)

    if not os.path.isfile(ns.model):
        print(f"model file not found: {ns.model}", file=sys.stderr)
        return 3

    p = xlc.CommonParams()
    p.model.path = ns.model
    p.model_alias = {ns.alias}  # a set of names in this binding (a str would become a set of letters)
    p.hostnames = [ns.host]
    p.port = ns.port
    p.n_parallel = ns.parallel
    p.n_ctx = ns.parallel * ns.ctx_per_slot
    p.cont_batching = True
    p.cpuparams.n_threads = ns.threads
    p.cpuparams_batch.n_threads = ns.threads
    if ns.chat_template:
        # a template *name* must go with use_jinja=False: with jinja on, llama.cpp takes the string as the template
        # source itself and every prompt silently becomes that name (see docs/llm.md)
        p.use_jinja = False
        p.chat_template = ns.chat_template
    elif ns.chat_template_jinja:
        # with jinja on, the string IS the template source (a base model's raw pass-through: flows.llm.embedded)
        p.use_jinja = True
        p.chat_template = ns.chat_template_jinja

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    server = xlc.Server(p)  # loads the model, then listens; raises if it cannot
    print(f"READY {server.listening_address}", flush=True)
    # exit when asked or when the parent is gone (re-parented: getppid changes)
    while not stop.wait(0.5):
        if os.getppid() != ns.parent_pid:
            break
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
