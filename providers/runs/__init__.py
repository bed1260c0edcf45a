"""The run machinery of providers/: a module's job run or deploy in a runner child of its own
(runner.py, started and followed by supervisor.py, speaking module_runs.py's result lines), the run
records in a job's volume (run_records.py), and what a job's run leads to (job_runs.py). Uses
providers/modal_access/ and providers/shared/, never a resource module."""
