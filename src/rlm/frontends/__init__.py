"""Front ends that drive rlm sessions for another program (``rlm --acp`` for editors)."""
