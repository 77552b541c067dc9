"""Terminal faults: what a hostile endpoint, model or kernel can make rlm print.

stderr is the user's terminal: it must stay readable (no escape sequences, no floods), while
stdout keeps the answer byte-exact.
"""

from __future__ import annotations

from faultkit import check_logs, finish, rlm_process

from scripted_model import ipython, reply

JUNK = 20_000

FLOOD = f"""
import zmq
import rlm.inkernel as _k
_c = _k._client()
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
