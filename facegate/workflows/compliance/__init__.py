"""The compliance report: the filing count, consent coverage, retention backlog, the PIA annex."""
