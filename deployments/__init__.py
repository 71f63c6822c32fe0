"""Prefect deployments of the datastack refresh flows, one per scheduled dataset of a spec.

- :func:`deployments.build.build_deployments`: ``RunnerDeployment`` objects (no API call).
- ``python deployments/serve.py --spec FILE``: serve them from one long-running process.
- ``python -m deployments.generate --spec FILE --pool NAME > deployments/prefect.yaml``: the
  file ``prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml`` reads.

See ``docs/orchestration.md``.
"""
