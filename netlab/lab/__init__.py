"""The lab lifecycle: up, down, gc, design teardown, run-time enrollment, the state record, process specs."""
