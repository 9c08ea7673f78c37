"""`python -m bench`: Glow's overhead measured side by side with a bare litellm loop and Inspect AI.

Issue 5. Every workload runs in child processes so wall time, CPU time and peak RSS are the
child's own (os.wait4), with servers (model simulator, Prefect API) started outside the timing.
"""
