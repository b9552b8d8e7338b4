"""Linux helpers: entering netns per thread, processes, the reaper, file locks, unix-socket IPC."""
