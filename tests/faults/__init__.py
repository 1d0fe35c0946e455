"""Programs the reliability tests run in a child process (a mount namespace, a process to kill)."""
