"""Emulators of Coupa and Dynamics 365 F&O, served over real HTTP (starlette + uvicorn).

``coupa/`` and ``d365/`` are the two sandboxes, one module per seam; ``seed/`` generates their data;
``faults.py``/``control.py`` inject and script failures; ``server.py`` serves an app on a port;
``launch.py`` starts both for the CLI, the demo and the tests. Invariant: nothing here imports Dagster,
and nothing imports the connector code except ``launch.py`` (the shared clock and private-file writer);
``coupa_d365_pipeline_tests/sandbox/test_independence.py`` checks both.
"""
