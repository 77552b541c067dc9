"""The fixed text around the measured tables of ``docs/performance.md``."""

HEAD = """
# Performance

This file is written by `uv run python -m bench` (about 5 minutes; `--quick` for a smoke run,
`--no-write` to only print). The benchmark drives the real `rlm` CLI against the scripted model
of `tests/scripted_model.py` at zero latency, so every figure is rlm's own cost: kernels,
control channel, agent loop, session logs. Method details are in `bench/run.py`.
Two sections at the end are written by other modes and kept by the plain run:
`--peers openrlm,rlms` (rlm beside its peers, each in its own virtual environment under
`~/.cache/rlm-bench/peers`, same scripted model, interleaved; `bench/peers.py`) and
`--only-thousand --children N` (N simultaneous idle sub-agents; `bench/thousand.py`).

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
* What every forked kernel would build the same way is built once in the zygote, before it
  forks: the `IPKernelApp` singleton with rlm's kernelspec flags already parsed (a child puts
  its connection file in that configuration instead of parsing again; any other command line
  is parsed in the child), and ipykernel imported without debugpy, so a forked kernel has no
  Jupyter debugger (it reports none in `kernel_info`; a cell may still `import debugpy`) and
  its kernel class (`rlm.zygote.kernel.ForkedKernel`) skips the debugger's list of every
  module's file. It also builds one IPython shell with the kernels' configuration and throws
  it away (putting back what that changes in the process), so the caches a shell fills are
  shared rather than built in every child. Last, the zygote fills the free slots of its partly used small-object pools
  with objects it keeps (`rlm.zygote.heap`), so a child's new objects go to pages of its own
  instead of one or two per shared page. Each step saves private memory per child (see
  "Memory per idle child" below).
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

* **Bytecode.** This machine (like many CI images) sets `PYTHONDONTWRITEBYTECODE=1`, so
  without precompiled `.pyc` files every `rlm` start and every cold kernel compiled its
  imports from source: a first version of this report measured 2.8 s from CLI start to the
  first model request and ~0.9 s per cold child. `install.sh` now installs with
  `uv tool install --compile-bytecode`, and the benchmark compiles the environment first,
  as an installed rlm would have it.
* **Tool round.** A round is the model call through the OpenAI SDK (HTTP and response
  parsing), the log lines, the Jupyter execute round trip (the raw figure: mostly protocol,
  i.e. signing, three ZeroMQ hops, IOPub status messages and jupyter_client's date parsing of
  every header; a forked plain `exec` takes ~0.05 ms) and the agent loop; at zero model
  latency the scripted server's own request handling counts too. Two costs found by profiling
  were removed: the SDK's request transform, which walked every message of every request
  against its TypedDicts (the "transform alone" rows: it made round 100 cost 4-5× round 1;
  rlm now sends its JSON-ready messages as `extra_body`, keeping the SDK's errors; the reply
  is validated by rlm itself, `rlm.agent.reply`), and rewriting `meta.json` twice per model reply (now coalesced, at most
  every 0.1 s, see [sessions](sessions.md)). What is left is roughly half Jupyter protocol and
  half SDK/HTTP plus the server, so the 2× target sits at the edge of what a real Jupyter
  kernel and the OpenAI SDK allow.
* **Fan-out.** Each forked kernel needs ~40 ms of CPU to initialise (`IPKernelApp.initialize`:
  traitlets configuration, the IPython shell, sockets), so 100 kernels are ~4 s of CPU on 2
  cores before any agent work; the orchestrator's single event loop adds per child the kernel
  manager and client (connection file, sockets), the control request, model requests and the
  session files. Done: one shared ZeroMQ context for all kernel clients (instead of one
  context with its own I/O thread per kernel), only the shell and IOPub channels per client
  (no heartbeat thread, stdin or control socket), and coalesced `meta.json` writes (the
  parent's `children` list was rewritten on every child's status change and usage update).
* **CLI start → first model request.** Interpreter start-up is ~10 ms; importing the CLI's
  modules (pydantic-settings, the HTTP library) is the "import" row and now most of the
  figure. The root kernel no longer delays the first request: when the prompt does not
  depend on the kernel (no skills installed, no inputs) the kernel starts beside the first
  model request and the first tool call waits for it. With skills installed the prompt lists
  the skills that loaded in the kernel, so the first request waits for it as before.
  Requests go out with the OpenAI SDK's own HTTP library (`rlm.agent.transport`, httpx2 for
  openai 3.x) around rlm's own body, stream assembly and validation; `openai` (its package
  imports all of `openai.types`: ~0.48 s of CPU) is imported only when a request fails, to
  raise the SDK's own exception, so a successful run never imports it. The TLS context (the
  system's CA certificates, 35-80 ms) is built at the first `https` URL, not for an `http://`
  endpoint. Measured alternately in one session on a loaded machine (10 runs each): CPU of
  `rlm -q` up to its first connection to the model 780 → 477 ms (0.61×); the CLI's memory
  after a one-cell run 56.6 → 42.2 MiB PSS. The orchestrator's kernel side (jupyter_client,
  zmq, traitlets, the launcher, the control server) is off the path too: it is imported in a
  worker thread and started once the first request's body is written (the root kernel
  initialises meanwhile in its own process), so at zero model latency its ~0.1 s moves into
  tool round 1, and with a real model it hides behind the model's latency (measured
  alternately against the previous main, 10 runs each: first request 425 → 291 ms, first
  cell's result 481 → 458 ms, tool round 1 50 → 171 ms; CPU of the CLI's imports up to the
  orchestrator 399 → 286 ms). Profiling also
  removed pydantic's attribute-docstring extraction for `Settings` at import (~25 ms;
  `--help` reads the docstrings itself), building every event and control-message validator
  at import (~10 ms, now at first use), and reading the metadata of every installed
  distribution to find skills (~80 ms; only `rlm-skill-*` folders are read now). Left on the
  path: pydantic (~45 ms) and pydantic-settings (~20 ms), rlm's own modules (~60 ms, mostly
  pydantic models: `meta.json`, settings, events), asyncio, tenacity (which imports tornado
  when installed).
* **Spawn latency.** A child spawn is the signed control request from the cell, the session
  folder and `meta.json`, the kernel (fork + `IPKernelApp.initialize` + readiness + bootstrap,
  or for a pooled kernel one adoption round trip), the child's first model request (which no
  longer waits for the kernel) and, in the main figure, one zero-latency model round trip and
  the first cell. Pooled kernels are warmed up (their slow first execution runs while they
  wait) and the pool refills only after the kernel has been handed over, so the refill's fork
  does not compete with the handover.
* **First cell and first request (issue 21).** Imports before the first model request,
  measured with `python -X importtime` and `sys.modules` read at the first connection to the
  model server (the test `test_one_shot_run_imports_only_what_its_first_request_needs`
  keeps it so): openai was ~40% of the import time (no longer imported, see above),
  pydantic ~10%, rlm ~10%, then httpx/httpcore, traitlets, zmq, jupyter_client,
  pydantic-settings. Removed from the path: rich (the live view is imported only for a
  terminal) and yaml (only a skill's front matter needs it). The root kernel now starts
  first thing in the CLI, before its heavy imports (`rlm.kernels.prestart`: a cold
  `ipykernel_launcher` with the credential-filtered environment a kernel gets later, in its
  own session), so it initialises on the second core while the CLI imports; the launcher
  adopts it for the root agent through the `rlm-prestarted` provisioner (the agent's
  environment and directory arrive in its bootstrap, as for a pooled kernel) only when its
  environment is the one the run would give, so a sandbox, kernel limits, a gateway or an
  installed kernelspec get today's kernel, and an unadopted one is killed at exit. The
  kernel also imports what every bootstrap imports while it initialises. In quick runs of
  `bench --peers openrlm` on this loaded machine, tool round 1 went from 1658 ms (258× a
  later round) to 29-90 ms (5-12×), and CLI start → first cell from 2.5× openrlm to
  1.3-1.7×; what is left of round 1 is the kernel's first execution and, when the CLI is
  faster than the kernel, the rest of its start. Timestamps of a run show that round 1
  costs what a later round does whenever the root kernel is adopted before the first reply
  (adoption: kernel manager, readiness, control subshell and bootstrap, ~60-120 ms of the
  orchestrator's loop, beside the first request); it costs more only when the kernel is not
  ready by then.
* **Fixed memory (issue 21).** Per process, in a run whose cell waits on 2 children (PSS,
  MiB, quiet machine): the CLI/orchestrator ~46, a cold root kernel ~37, the zygote ~22
  (numpy, preloaded because it is installed here, ~6 of it), each forked kernel (the 2
  pooled ones, each child) ~18. A run that may spawn now forks its root kernel from a
  zygote the CLI starts first thing (`rlm.kernels.prestart`), with the kernelspec's flags so
  it initialises the zygote's prepared app like any forked kernel: the root is ~18 instead
  of ~37, ~143 → ~123 MiB for the five processes, and the first spawn of a run finds the
  zygote ready (~260 → ~90 ms). Measured interleaved, CLI start → first cell is unchanged
  (~445 ms); round 1 went from ~34 to ~41 ms (later rounds ~5.6): the zygote imports more
  than a cold kernel (numpy) before it can fork the root. Left: round 1 is the root's
  adoption (kernel manager, readiness, control subshell, bootstrap: ~50 ms of round trips
  after the fork) overlapping a first request that now leaves ~400 ms after start; forking
  the root before the zygote's extra preload (`rlm/zygote/server.py`) would win back the
  numpy part. Memory left to 100 MiB: a pool of 1 instead of 2 (~18, but later spawns then
  wait for refills: measured 24-88 ms instead of 20-57), no numpy preload (~6 in the zygote
  plus what each kernel touches), and the per-kernel USS (14 MiB, 3 idle kernels here).
* **Memory per idle child (issue 21).** What a forked child's pages cost is what it
  writes: Python 3.11 has no immortal objects, so every shared object a child touches
  (a reference count, a code object's warm-up counter) copies its 4 KiB page. Measured with
  `/proc/<pid>/smaps_rollup` on a child idle after its first cell (same session,
  interleaved): 17.9 MiB before; the command line parsed in the zygote 17.4; ipykernel
  preloaded without debugpy (no `Debugger`, 109 fewer modules to walk) 16.1; `ForkedKernel`
  not listing every module's file 14.9; the zygote's pool slots filled 14.5; a throwaway
  shell built in the zygote 14.0 (`bench --peers openrlm --quick` before that step: 14.6
  MiB beside openrlm's 8.7). Tried and
  dropped (no gain): no parent poller thread (0.0 MiB), no heartbeat (0.1 MiB, 3 threads
  fewer: threads are not where the memory is), the profile directory resolved in the zygote
  (0.2 MiB), warming the argument parser in the zygote (none: a child touches the same pages
  again). What is left (~14 MiB, 90 % of it pages the zygote also has) is an ipykernel
  running: after the fork ~1.3 MiB, the agent environment and sandbox ~1.2, the app's
  profile and config files ~2.5, sockets and their threads ~2.4, the kernel and IPython's
  shell ~2.9, startup code ~0.7, the bootstrap and first cell ~2.3. The largest piece left
  is the shell: the zygote's own shell reused by each kernel measured ~1.5 MiB less in a
  bare fork test, but a shell reads the process's environment, working directory, streams
  and the kernel's config files when it is built, so reusing the zygote's would change what
  a kernel sees; not done (the throwaway shell above gets a third of it).
  openrlm's children (plain `exec`, no kernel) are 8.6 MiB.
* **1,000 children (issue 21).** Four limits ended big trees before memory did: the soft
  open-files limit (now raised to the hard limit at start), ZeroMQ's 1,023 sockets per
  context (~200 kernel clients; now the fd limit's bound), the zygote's listen backlog of
  256 (a burst beyond it was reset and turned forking off for the run; now the system's
  maximum) and the kernel start timeout (60 s): 1,000 kernels started together on 2 cores
  share them, and the last were still initialising after 60 s ("kernel did not become
  ready"). The launcher now runs at most `max(8, 4 × cores)` local kernel starts at once and
  queues the rest, so each start's timeout counts its own start, not the queue
  (`test_a_burst_of_kernel_starts_is_queued_beyond_the_launchers_limit`). With that, 1,000
  simultaneous idle sub-agents run on this 2-core, 24 GiB machine: 132 s from the cell's
  start to all 1,000 answers, 14.2 GiB PSS for the whole tree (the section below).
* **Where each issue 21 target stands** (the peers section below, one run with openrlm and
  rlms):
  - met: CLI start → first cell's result 0.38× openrlm; CLI start → first model request
    0.45× a cold kernel start; 1,000 simultaneous sub-agents (above); 1,000 `rlm.llm` calls
    from one cell in 1.3 s (the results above); the leads (tool round 0.14×, pooled spawn
    0.19× openrlm). rlm is ahead of openrlm on every time figure but tool round 1.
  - tool round 1 ≤ 2× a later round: missed at zero model latency (~30×), met (1.8×) when
    the model's first reply takes 200 ms. Why: the orchestrator's kernel side (jupyter_client,
    zmq, traitlets, the launcher, then the root kernel's adoption: ~150 ms of CPU) shares one
    interpreter lock with the path to the first request. It is imported once the first
    request is on the wire, so it overlaps the model's latency; before the request, it would
    add its ~150 ms to CLI start → first request (then ~0.7× a cold kernel start, at the
    target's edge). A zero-latency model leaves nothing to overlap, so it shows in round 1;
    the first cell's result still comes at 0.38× openrlm's.
  - ≤ 10 MiB USS per idle forked child: missed, 14.0 MiB (openrlm 8.8); the profile is in
    "Memory per idle child" above: what is left is pages a running ipykernel writes, on an
    interpreter (3.11) without immortal objects.
  - ≤ 100 MiB fixed: missed, 115 MiB (openrlm 95; 115-128 over this session's runs): the orchestrator ~46 MiB (pydantic,
    jupyter_client, zmq, the HTTP library; openai is no longer imported), the zygote ~22,
    the root kernel and the 2 pooled kernels ~14-18 each; see "Fixed memory" above.
"""
