"""What happens around one cell's run: its directory's layout and files (rundir), the worker
that runs it inside a job (worker), and the checks before anything is submitted (precheck:
the task's `check` hook; rehearse: a few real steps of each distinct config on CPU)."""
