"""The scheduler: claim loop, executor (walks plans, fails over), reconciliation, leader election."""
