"""Event-driven sync: the Standard Webhooks receiver and the staging directory it shares with the
sensor (``defs/webhooks.py``). Plain Python: no Dagster."""
