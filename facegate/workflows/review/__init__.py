"""Decisions that go to a person (the operator console's use case): review cases and their
evidence (:mod:`.desk`), and the operators who decide them (:mod:`.operators`). Decisions go
through the certification ledger's manual path; this package adds no rule of its own about
what certifies."""
