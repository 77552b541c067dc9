"""The fixed text around the measured tables of ``docs/performance.md``."""

HEAD = """
# Performance

This file is written by `uv run python -m bench` (about 5 minutes; `--quick` for a smoke run,
`--no-write` to only print). The benchmark drives the real `rlm` CLI against the scripted model
of `tests/scripted_model.py` at zero latency, so every figure is rlm's own cost: kernels,
control channel, agent loop, session logs. Method details are in `bench/run.py`.

## Results
"""

TAIL = """
## How kernels start

* **cold** (`RLM_KERNEL_START=cold`): `python -m ipykernel_launcher` per kernel. Most of its
  half second of CPU is imports (ipykernel, IPython, debugpy, tornado, jupyter_client, rlm).
* **fork** (`RLM_KERNEL_START=fork`, the default on Linux): the orchestrator starts one
  *zygote* that imports all of that once (plus `RLM_PRELOAD`, comma separated, default
  `numpy,pandas` when installed), runs `gc.freeze()` and forks one child per kernel. The child
  becomes an ordinary ipykernel (`IPKernelApp.initialize` + `start`) on the connection file
  jupyter_client wrote, with the agent's environment (replaced wholesale), working directory,
  its own session and process group, reseeded `random` (and numpy), stdin on `/dev/null` and
  stdout/stderr in the run directory's `zygote.log`. The zygote holds no zmq context, thread or
  event loop when it forks (forking a live kernel hangs it while its heartbeat thread still
  answers). It is plugged in as a jupyter_client kernel provisioner (`rlm-fork`, entry point
  `jupyter_client.kernel_provisioners`, selected by the run directory's kernelspec), so
  interrupt, restart (forks again), kill, `is_alive` and exit codes work as for cold kernels;
  the zygote reaps its children and reports each exit status. Any failure (zygote does not
  start, a preload raises, the zygote died, a child fails to initialise) starts that kernel
  cold and switches forking off for the rest of the run, with one warning saying why.
* The zygote is started only when a run may spawn sub-agents (`RLM_MAX_DEPTH` > 0), in the
  background; a root kernel does not wait for it (it starts cold while the zygote imports),
  sub-agent kernels do. A run without sub-agents therefore costs what it did before.
* Lifetime: the zygote has `PR_SET_PDEATHSIG` (SIGTERM → it kills its kernels' process groups)
  so it dies with the orchestrator; each kernel has `PR_SET_PDEATHSIG` (SIGKILL) for the
  zygote and ipykernel's parent poller on the zygote's pid (its real parent; the poller
  compares `os.getppid()` with it); a kernel whose request connection the orchestrator closes
  is killed by the zygote.
* Forked kernels share the zygote's interpreter state: its hash seed, and module-level values
  read from the environment at import time (the zygote runs with the same kernel environment,
  minus the per-agent control variables, which rlm reads at run time).

## The warm pool (`RLM_KERNEL_POOL`, default 2)

The pool is filled when the run spawns its first sub-agent (never for runs without
sub-agents). From then on a kernel start takes a pooled kernel, a ready one or else the oldest
still starting, and the pool refills in the background. A pooled kernel was started with the
orchestrator's kernel environment and has never run user code; when it is handed out, its
bootstrap replaces `os.environ` with the agent's environment (control address, agent id and
secret, depth), changes to the agent's working directory and runs `rlm.inkernel.setup()`;
after a restart the same bootstrap runs again. Trade-off: each idle pooled kernel costs its
USS (see the fan-out table) and one kernel start of background CPU per spawn; it saves the
fork-and-initialise time on sequential spawns. It does not help a burst larger than the
pool: those kernels start (forked) on demand, competing with the refills. 2 covers the
common "a few children one after another" pattern at the cost of ~2 idle kernels; set 0 to
turn it off, or more for long sequential chains of sub-agents.

## Where the time goes (profiles behind the targets)

* **Tool round.** A round is the model call through the OpenAI SDK (HTTP, plus the SDK's
  request transform), the session log writes (a `messages.jsonl` line per message and
  `meta.json` rewritten through `os.replace` on every model call), the Jupyter execute round
  trip (the raw figure: mostly protocol, i.e. signing, three ZeroMQ hops and IOPub status
  messages; a forked plain `exec` takes ~0.05 ms) and the agent loop. At zero model latency
  the SDK call and the log writes add more than the execute itself, so even early rounds miss
  2×. Later rounds grow with the conversation: the SDK's `async_maybe_transform` walks every
  message of every request against its TypedDicts (the "transform alone" rows), about 0.2 ms
  per message per request. Fix (in `rlm/model.py`, not done here): send the JSON-ready body
  without the SDK's transform (e.g. `client.post("/chat/completions", body=...,
  cast_to=ChatCompletion)`), keeping the SDK's retries and error mapping; and write
  `meta.json` less often.
* **100 children at once** (close to the 6 s target on this machine; it varies by run).
  Each forked kernel needs ~40 ms of CPU to initialise (`IPKernelApp.initialize`: traitlets
  configuration, the IPython shell, sockets), so 100
  kernels are ~4 s of CPU on 2 cores before any agent work; the orchestrator's single event
  loop adds per child the kernel manager and client (connection file, sockets), the control
  request, model requests and the session files. A profile of the orchestrator during the
  100-child fan-out puts the largest share of its own CPU in `SessionLog.write_meta`
  (`json.dump` + `os.replace` of `meta.json`, called on every usage update and every child
  status change, and the parent's `children` list grows to 100 entries), then ZeroMQ socket
  set-up and the SDK. Done here: one shared ZeroMQ context for all kernel clients (instead of
  one context with its own I/O thread per kernel) and only the shell and IOPub channels per
  client (no heartbeat thread, stdin or control socket): about a quarter off this fan-out.
  Left: batching or debouncing `meta.json` writes (session log) would be the next win.
* **CLI start → first model request.** Interpreter start-up is ~10 ms; importing the CLI's
  modules (openai ~0.5 s, pydantic-settings, jupyter_client) takes most of the "import" row,
  and the root kernel's cold start follows, because the first request waits for the kernel
  (the prompt lists the skills that loaded in it). Forking does not help the first kernel: a
  zygote would have to import the same modules first. What would: starting the root kernel
  (or the zygote) as the very first thing the CLI does, before its own heavy imports, so both
  run in parallel on two cores; importing openai lazily. On this machine even that leaves
  about 1.2 s: the 400 ms target assumes a faster machine (the issue measured a cold kernel
  start at ~350 ms where this run measures ~1 s).
* **Spawn latency.** A child spawn is the signed control request from the cell, the session
  folder and `meta.json`, the kernel (fork + `IPKernelApp.initialize` + readiness + bootstrap,
  or for a pooled kernel one adoption round trip) and the child's first model request.
  Pooled kernels are warmed up (their slow first execution runs while they wait) and the
  pool refills only after the kernel has been handed over, so the refill's fork does not
  compete with the handover.

Not included: openrlm 0.1.0 in the same run (its fork server's spawn latency and per-child
memory); the figures in the issue (~4 ms bare spawn, ~9.4 MiB per real sandbox, 10 sub-agents
with one tool call in ~2.2 s) are from a different run.
"""
