"""Pension-eligibility certification: periods, attempts and their statuses, fraud signals."""
