"""Terminal faults: what a hostile endpoint, model or kernel can make rlm print.

stderr is the user's terminal: it must stay readable (no escape sequences, no floods), while
stdout keeps the answer byte-exact.
"""

from __future__ import annotations

import subprocess
import sys

from faultkit import check_logs, finish, rlm_process

from conftest import sessions
from scripted_model import call, fault, ipython, reply

JUNK = 20_000

FLOOD = f"""
import zmq
import rlm.inkernel as _k
_c = _k._ipc_client()  # the ipc socket stays open as the fallback path: flood it
_sock = zmq.Context.instance().socket(zmq.DEALER)
_sock.connect(_c.address)
for _ in range({JUNK}):
    _sock.send(b'junk')
# a signed request on the same connection: its reply means every junk frame was read
_msg = _c.session.msg('inputs_request', content={{'buffer_sha256': []}})
_sock.send_multipart(_c.session.serialize(_msg, ident=[_c.agent_id.encode()]))
print('replied' if _sock.recv_multipart() else 'no reply')
_sock.close(linger=0)
"""


def test_rejected_control_messages_are_summarised(model, rlm_env):
    """A kernel flooding the control socket with junk costs a line or two of stderr, also
    under ``-q``: the first rejection with its reason, then a count."""
    model.script(reply(None, ipython(FLOOD)), reply("flood survived"))
    out, err = finish(rlm_process("-q", "flood the control channel"))
    assert out == "flood survived\n"
    lines = [line for line in err.splitlines() if "control channel" in line]
    assert lines == [
        "control channel: rejected a message (not a signed rlm message)",
        f"control channel: rejected {JUNK - 1:,} more messages",
    ], err[-2000:]
    check_logs(rlm_env)


#: What a terminal acts on: clear screen, a window title, carriage return, bell, a bidi
#: override, a C1 CSI.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\rover\u202eevil\x9b31m"
DANGEROUS = ["\x1b", "\x07", "\r", "\u202e", "\x9b"]


def assert_clean(text: str, where: str) -> None:
    found = [c for c in DANGEROUS if c in text]
    assert not found, f"{where}: raw {found!r} in {text[-3000:]!r}"


def test_hostile_text_never_reaches_the_terminal_raw(model, rlm_env):
    """A model-chosen tool name (100,000 characters, with escapes), cell output and an answer
    full of escape sequences: progress and ``rlm sessions show --color never`` print them
    defused and cut, while the answer on stdout stays byte-exact."""
    name = HOSTILE + "n" * 100_000
    answer = f"answer {HOSTILE} end"
    model.script(
        reply(None, call(name, {})),
        reply(None, ipython(f"print({HOSTILE!r})")),
        reply(answer),
    )
    out, err = finish(rlm_process("hostile text"))
    assert out == (answer + "\n").replace("\r", "\n")  # text mode reads "\r" as a newline
    assert_clean(err, "progress")
    assert max(len(line) for line in err.splitlines()) < 400, "a tool name printed in full"
    assert "\\u202e" in err  # shown, escaped, not acted on
    (folder,) = sessions(rlm_env)
    shown = subprocess.run(
        [sys.executable, "-m", "rlm", "sessions", "show", folder.name, "--color", "never"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert_clean(shown.stdout, "sessions show")
    assert "evil" in shown.stdout
    titles = [line for line in shown.stdout.splitlines() if line.startswith(("▶", "◀"))]
    assert titles and max(len(line) for line in titles) < 400, "a tool name in full"
    assert max(len(line) for line in shown.stdout.splitlines()) < 2000, "a long line shown"
    check_logs(rlm_env)


def test_endpoint_error_text_is_defused(model, rlm_env):
    """An endpoint's error body with escape sequences: the error line on stderr shows it
    without them."""
    model.script(fault(400, f'{{"error": {{"message": "bad {HOSTILE} request"}}}}'))
    out, err = finish(rlm_process("-q", "fail"))
    assert out == ""
    assert "bad" in err and "request" in err
    assert_clean(err, "error line")
