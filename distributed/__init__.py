"""Where fitness evaluations run when one process is not enough: Ray actors (optional extra `ray`)."""
