"""``coupa-d365 soak``: the connector as real processes against faulty sandboxes until it converges.

Plain Python (no Dagster import): the Dagster side runs in ``dagster job execute`` /
``dagster-daemon`` subprocesses. :mod:`.model` (sizes, report), :mod:`.processes` (run processes,
SIGKILL), :mod:`.webhooks` (signed deliveries, some twice, shuffled), :mod:`.verify` (the simulated
AP user and the end-state comparison), :mod:`.runner` (the scenario), :mod:`.cli` (the subcommand).
"""
